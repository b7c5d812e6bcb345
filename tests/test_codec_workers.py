"""Compress across processes and on Ray: the same file for any number of workers."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path

import pytest
from support import MINILM, requires_minilm

from weightdna.cli import main
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.codec.workers import PoolRunner, Runner, make_runner
from weightdna.weights import load_weights, save_weights


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the real MiniLM: layer 0's query and key (weights and biases), its
    LayerNorms and 256 rows of the word embeddings, about 0.4M weights."""
    full = load_weights(MINILM)
    keep = {i.name: full.tensor(i.name) for i in full.infos
            if i.layer == 0 and ("self.query" in i.name or "self.key" in i.name
                                 or "LayerNorm" in i.name)}
    keep["embeddings.word_embeddings.weight"] = full.tensor(
        "embeddings.word_embeddings.weight")[:256].clone()
    return save_weights(keep, tmp_path_factory.mktemp("minilm") / "slice.safetensors")


@pytest.fixture(scope="module")
def reference(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file coded in this process, at 4 bits per weight."""
    out = tmp_path_factory.mktemp("ref") / "ref.dna"
    compress_model(load_weights(model), out, Target("bits_per_weight", 4.0))
    return out


@requires_minilm
def test_one_and_two_workers_write_the_file_one_process_writes(model: Path, reference: Path,
                                                                tmp_path: Path,
                                                                capsys) -> None:
    one = tmp_path / "w1.dna"
    report = compress_model(load_weights(model), one, Target("bits_per_weight", 4.0),
                            workers=1)
    assert digest(one) == digest(reference)
    # The figures measured on the coded tensors (zeroed shares by the workers) are there.
    assert any(t.zeroed for t in report.tensors)
    two = tmp_path / "w2.dna"
    assert main(["compress", str(model), "-o", str(two), "--bits-per-weight", "4",
                 "--workers", "2", "--check", "none", "--json"]) == 0
    assert digest(two) == digest(reference)
    capsys.readouterr()
    assert main(["compress", str(model), "-o", str(two), "--bits-per-weight", "4",
                 "--workers", "0", "--force"]) != 0
    assert "--workers must be 1 or more" in capsys.readouterr().err


@requires_minilm
def test_decompress_in_workers_writes_the_same_file(reference: Path, tmp_path: Path,
                                                    capsys) -> None:
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert decompress_model(reference, one) == decompress_model(reference, two, workers=2)
    assert digest(one) == digest(two)
    cli = tmp_path / "cli.safetensors"
    assert main(["decompress", str(reference), "-o", str(cli), "--workers", "2"]) == 0
    assert digest(cli) == digest(one)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def same_in_two_workers(weights, target: Target, tmp_path: Path) -> None:
    """one.dna in this process and two.dna in 2 workers, quantized only: the same bytes."""
    compress_model(weights, tmp_path / "one.dna", target, representations=["quantized"])
    compress_model(weights, tmp_path / "two.dna", target, representations=["quantized"],
                   workers=2)
    assert digest(tmp_path / "one.dna") == digest(tmp_path / "two.dna")


@requires_minilm
def test_max_abs_error_target_in_workers_matches_one_process(model: Path,
                                                             tmp_path: Path) -> None:
    same_in_two_workers(load_weights(model), Target("max_abs_error", 0.01), tmp_path)


def test_runner_choice(tmp_path: Path) -> None:
    import torch

    path = save_weights({"w": torch.ones(4, 4)}, tmp_path / "m.safetensors")
    weights = load_weights(path)
    assert type(make_runner(weights, None)) is Runner
    with make_runner(weights, 1) as runner:
        assert isinstance(runner, PoolRunner)
    torch.save({"w": torch.ones(4, 4)}, tmp_path / "m.pt")
    # A checkpoint other processes could only load whole runs in this process.
    assert type(make_runner(load_weights(tmp_path / "m.pt"), 2)) is Runner


def pid_after(weights, seconds: float) -> int:  # noqa: ANN001
    """A task: the process that ran it, after ``seconds``."""
    time.sleep(seconds)
    return os.getpid()


def test_run_hands_back_results_as_they_complete(tmp_path: Path) -> None:
    import torch

    weights = load_weights(save_weights({"w": torch.ones(4, 4)}, tmp_path / "m.safetensors"))
    jobs = [(pid_after, (0.0,))] * 5
    assert [i for i, _ in Runner(weights).run(jobs)] == list(range(5))  # here: in order
    with PoolRunner(weights, 2) as runner:
        # The workers start (an interpreter, torch and the codec imported) while this
        # process runs the first tasks itself.
        first = dict(runner.run(jobs))
        assert sorted(first) == list(range(5)) and first[0] == os.getpid()
        while not runner._ready():
            time.sleep(0.05)
        # A long task holds up no other: the short ones given after it come back first,
        # each once, with its position (an ordered map would wait for it with a full
        # window, and so would the other worker).
        positions = [i for i, _ in runner.map_unordered(pid_after, [(1.5,)] + [(0.0,)] * 8)]
        assert sorted(positions) == list(range(9)) and positions[-1] == 0
        assert list(runner.map(pid_after, [(0.0,)] * 3)) != []  # the ordered map still works


def whoami(weights) -> tuple[int, int, int, bool]:  # noqa: ANN001
    """A task: its process, that process's parent and threads, and whether the codec's
    compress module (the fork server's import) is there."""
    import sys

    return (os.getpid(), os.getppid(), len(os.listdir("/proc/self/task")),
            "weightdna.codec.compress" in sys.modules)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_pool_workers_are_forked_from_a_one_thread_server(tmp_path: Path) -> None:
    """Each worker is forked from multiprocessing's fork server, which imported torch and
    the codec once on one thread (its BLAS pools not started), not spawned to import
    them itself; this process's environment is as it was."""
    import multiprocessing
    from multiprocessing import forkserver

    import torch

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    weights = load_weights(save_weights({"w": torch.ones(4, 4)}, tmp_path / "m.safetensors"))
    environment = dict(os.environ)
    with PoolRunner(weights, 2, warm="weightdna.codec.compress") as runner:
        while not runner._ready():
            time.sleep(0.05)
        server = forkserver._forkserver._forkserver_pid
        assert len(os.listdir(f"/proc/{server}/task")) == 1
        workers = set(runner.pool._processes)
        seen = list(runner.map(whoami, [()] * 4))
    assert {pid for pid, *_ in seen} <= workers
    assert all(parent == server and threads == 1 and imported
               for _, parent, threads, imported in seen)
    assert dict(os.environ) == environment


def test_spawned_pool_where_there_is_no_fork_server(tmp_path: Path, monkeypatch) -> None:
    """Without a fork server the workers are spawned (each imports what it needs) and give
    the same results; they exit when the pool closes."""
    import multiprocessing

    import torch

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    weights = load_weights(save_weights({"w": torch.ones(4, 4)}, tmp_path / "m.safetensors"))
    with PoolRunner(weights, 2) as runner:
        while not runner._ready():
            time.sleep(0.05)
        processes = list(runner.pool._processes.values())
        seen = list(runner.map(whoami, [()] * 4))
    assert all(parent == os.getpid() for _, parent, _, _ in seen)
    assert [p.exitcode for p in processes] == [0, 0]


@requires_minilm
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_local_ray_cluster_writes_the_same_file(model: Path, reference: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "ray.dna"
    compress_model(load_weights(model), out, Target("bits_per_weight", 4.0), workers=2,
                   ray=True)
    assert digest(out) == digest(reference)
    back = tmp_path / "back.safetensors"
    decompress_model(out, back)
    assert load_weights(back).names == load_weights(model).names


@requires_minilm
def test_sharded_bfloat16_folder_in_workers(model: Path, tmp_path: Path) -> None:
    """A checkpoint as large models ship: bfloat16, two shards and their index."""
    import json

    import torch

    weights = load_weights(model)
    names = list(weights.names)
    folder = tmp_path / "sharded"
    folder.mkdir()
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in shards.items():
        save_weights({n: weights.tensor(n).to(torch.bfloat16) for n in part}, folder / file)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}))
    sharded = load_weights(folder)
    same_in_two_workers(sharded, Target("snr", 20.0), tmp_path)
    decompress_model(tmp_path / "two.dna", tmp_path / "back.safetensors", workers=2)
    back = load_weights(tmp_path / "back.safetensors")
    assert back.names == sharded.names
    assert {back.info(n).dtype for n in back.names} == {"bfloat16"}


@requires_minilm
def test_row_blocks_coded_in_their_tasks_same_file_in_workers(model: Path, tmp_path: Path,
                                                              monkeypatch) -> None:
    """The embeddings' 256 rows as row blocks of 64 rows, each block's symbols coded in
    its task (format version 16): the same file in this process and in 2 workers."""
    from weightdna.codec import rowblocks
    from weightdna.codec.container import read_dna_file
    from weightdna.codec.entries import STATES_VERSION

    monkeypatch.setattr(rowblocks, "ROW_BLOCK_WEIGHTS", 1 << 16)
    monkeypatch.setattr(rowblocks, "TASK_WEIGHTS", 64 * 384)
    monkeypatch.setattr(rowblocks, "BLOCK_ELEMENTS", 64 * 384)  # the driver's ranges
    target, options = Target("bits_per_weight", 4.0), {"representations": ["quantized"]}
    one = tmp_path / "one.dna"
    compress_model(load_weights(model), one, target, **options)
    two = tmp_path / "two.dna"
    compress_model(load_weights(model), two, target, workers=2, **options)
    assert digest(two) == digest(one)
    dna = read_dna_file(one)
    assert dna.version == STATES_VERSION  # the blocks model, a trellis of more states
    [entry] = [e for e in dna.entries if e["name"] == "embeddings.word_embeddings.weight"]
    assert [b["rows"] for b in entry["params"]["model"]["blocks"]] == [64] * 4
    restored = dna.tensor(entry["name"])
    assert restored.shape == (256, 384) and bool(restored.isfinite().all())
