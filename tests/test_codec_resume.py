"""A killed compress leaves a work folder; --resume finishes only what is missing and
writes the file an unbroken run writes; an unbroken run leaves nothing behind."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import MINILM, requires_minilm

from weightdna.cli import main
from weightdna.codec import compress
from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target
from weightdna.codec.resume import ResumableRunner, WorkFolder, _pack, _unpack, work_folder
from weightdna.codec.workers import Runner
from weightdna.errors import InvalidInputError
from weightdna.weights import load_weights, save_weights

TARGET = Target("bits_per_weight", 4.0)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real MiniLM tensors: layer 0's query, key and value with their biases, and its
    LayerNorms, about 0.45M weights."""
    full = load_weights(MINILM)
    keep = {i.name: full.tensor(i.name) for i in full.infos
            if i.layer == 0 and ("attention.self" in i.name or "LayerNorm" in i.name)}
    return save_weights(keep, tmp_path_factory.mktemp("minilm") / "layer0.safetensors")


@pytest.fixture(scope="module")
def reference(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.dna"
    compress_model(load_weights(model), out, TARGET)
    return out


def test_results_are_stored_and_read_back_exactly() -> None:
    value = ({"a": [1, 2.5, float("nan"), None, True]}, (b"\x00\xff", np.arange(3.0)),
             np.float64(0.1), Target("snr", 20.0, per_tensor=True))
    arrays: dict = {}
    back = _unpack(_pack(value, arrays), arrays)
    assert back[0]["a"][:2] == [1, 2.5] and np.isnan(back[0]["a"][2])
    assert back[0]["a"][3:] == [None, True]
    assert back[1][0] == b"\x00\xff" and np.array_equal(back[1][1], np.arange(3.0))
    assert back[2] == 0.1 and back[3] == Target("snr", 20.0, per_tensor=True)
    with pytest.raises(ValueError):
        _unpack({"type": "Popen", "fields": {}}, {})  # only the listed types are rebuilt


def _encode(weights, value: float) -> float:  # noqa: ANN001
    """A task kept in the work folder (by its name), counted."""
    calls.append(value)
    return 2.0 * value


calls: list[float] = []


class Backwards(Runner):
    """Runs its jobs last first: results in another order than given, as workers'."""

    def run(self, jobs):  # noqa: ANN001, ANN201
        jobs = list(jobs)
        for i in reversed(range(len(jobs))):
            yield i, jobs[i][0](self.weights, *jobs[i][1])


def test_results_as_they_complete_are_kept_and_read_back(tmp_path: Path) -> None:
    import torch

    weights = load_weights(save_weights({"w": torch.ones(2, 2)}, tmp_path / "m.safetensors"))
    out = tmp_path / "m.dna"
    runner = ResumableRunner(Backwards(weights), WorkFolder(out, weights, {}, resume=False))
    calls.clear()
    jobs = [(_encode, (float(v),)) for v in range(4)]
    assert sorted(runner.run(jobs[:2])) == [(0, 0.0), (1, 2.0)]
    assert calls == [1.0, 0.0]
    # Resumed: the two kept are read back, the two missing run; each at its position.
    calls.clear()
    runner = ResumableRunner(Backwards(weights), WorkFolder(out, weights, {}, resume=True))
    assert sorted(runner.run(jobs)) == [(i, 2.0 * i) for i in range(4)]
    assert calls == [3.0, 2.0]


def test_entries_are_not_synced_and_a_damaged_one_is_done_again(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The work folder's entries are moved into place without an fsync (the driver does not
    wait on the disk); an entry a crash of the machine cut, emptied or garbled is read as
    missing (done again), not as a result."""
    import torch

    from weightdna.atomic import write_text_atomic

    weights = load_weights(save_weights({"w": torch.ones(2, 2)}, tmp_path / "m.safetensors"))
    folder = WorkFolder(tmp_path / "m.dna", weights, {}, resume=False)
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    folder.store("k", (b"coded", np.arange(1000, dtype=np.int64)))
    assert synced == []
    write_text_atomic(tmp_path / "other.txt", "x")  # any other output is synced
    assert len(synced) == 1
    found, (coded, values) = folder.load("k")
    assert found and coded == b"coded" and np.array_equal(values, np.arange(1000))
    file = folder.path / "k.npz"
    whole = file.read_bytes()
    at = whole.index(np.arange(1000, dtype=np.int64).tobytes()[8:16])
    for damaged in (b"", whole[: len(whole) // 2], whole[:at] + b"\xff" + whole[at + 1 :],
                    bytes(len(whole))):
        file.write_bytes(damaged)
        assert folder.load("k") == (False, None)


@requires_minilm
def test_interrupted_run_resumes_doing_only_what_is_missing(model: Path, reference: Path,
                                                            tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "m.dna"

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "encoding" and done == 2:
            raise KeyboardInterrupt  # as a user's Ctrl-C, midway through the first encodes

    with pytest.raises(KeyboardInterrupt):
        compress_model(load_weights(model), out, TARGET, resumable=True, progress=interrupt)
    folder = work_folder(out)
    assert (folder / "manifest.json").is_file() and not out.exists()
    kept = len(list(folder.glob("*.npz")))
    assert kept > 0

    ran: dict[str, int] = {}
    for name in ("_first_pass", "_analyse", "_encode"):
        task = getattr(compress, name)

        @functools.wraps(task)
        def counted(*args, _task=task, _name=name):
            ran[_name] = ran.get(_name, 0) + 1
            return _task(*args)

        monkeypatch.setattr(compress, name, counted)
    compress_model(load_weights(model), out, TARGET, resume=True)
    assert digest(out) == digest(reference)
    assert ran.get("_first_pass", 0) == 0 and ran.get("_analyse", 0) == 0
    encoded = len([t for t in load_weights(model).infos if t.name.endswith("weight")
                   and "LayerNorm" not in t.name])
    assert 0 < ran["_encode"]  # the rest of round one, and any later round
    assert ran["_encode"] < encoded * 5  # not every encode again: two were stored
    assert not folder.exists()


@requires_minilm
def test_killed_process_resumes_to_the_same_file(model: Path, reference: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "k.dna"
    folder = work_folder(out)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "weightdna", "compress", str(model), "-o", str(out),
         "--bits-per-weight", "4", "--workers", "1", "--check", "none"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # Killed once some tensors are analysed (each one a stored result), before the end.
        while len(list(folder.glob("*.npz"))) < 8 and proc.poll() is None:
            assert time.monotonic() < deadline, "the compress stored no results"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker process
        proc.wait()
    assert not out.exists(), "the run finished before it was killed"
    assert (folder / "manifest.json").is_file()
    assert main(["compress", str(model), "-o", str(out), "--bits-per-weight", "4",
                 "--workers", "1", "--check", "none", "--resume", "--json"]) == 0
    assert digest(out) == digest(reference)
    assert not folder.exists()


@requires_minilm
def test_unbroken_run_leaves_nothing_and_resume_needs_a_folder(model: Path, tmp_path: Path,
                                                                capsys) -> None:
    out = tmp_path / "u.dna"
    assert main(["compress", str(model), "-o", str(out), "--lossless", "--workers", "1",
                 "--check", "none"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.dna"]
    with pytest.raises(InvalidInputError, match="nothing to resume"):
        compress_model(load_weights(model), tmp_path / "v.dna", TARGET, resume=True)
    capsys.readouterr()
    assert main(["compress", str(model), "-o", str(tmp_path / "w.dna"), "--lossless",
                 "--resume"]) != 0
    assert "nothing to resume" in capsys.readouterr().err


def test_a_resume_knows_which_calibration_it_was_given() -> None:
    """Other calibration texts give other Hessians, and so another digest in the manifest:
    a resume with them does not reuse the first run's work."""
    rng = np.random.default_rng(0)
    h = {"w": rng.normal(size=(4, 4))}
    digest = compress._calibration_digest(h)
    assert digest == compress._calibration_digest({"w": h["w"].copy()})
    assert digest != compress._calibration_digest({"w": h["w"] * 1.001})
    assert digest != compress._calibration_digest({"v": h["w"]})
    assert compress._calibration_digest({}) is None
