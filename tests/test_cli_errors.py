"""Ordinary faults are one line, not a traceback: an output that cannot be written (checked
before any work), a full disk while writing, an empty model file; and a writer killed
outright leaves no temporary file behind for good."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import weightdna.atomic as atomic
import weightdna.weights
from weightdna.atomic import atomic_output, check_writable
from weightdna.cli import main
from weightdna.errors import OutputError
from weightdna.weights import save_weights


def _model(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    return save_weights({"layers.0.weight": torch.randn(16, 8, generator=generator)},
                        tmp_path / "m.safetensors")


def _unwritable(tmp_path: Path, kind: str) -> Path:
    """An output path nobody can create: under a regular file, or under /sys (sysfs refuses
    new files even to root, so the test means the same run as root or not)."""
    if kind == "file-as-folder":
        (tmp_path / "plain").write_text("x")
        return tmp_path / "plain" / "out"
    if not sys.platform.startswith("linux") or not Path("/sys").is_dir():
        pytest.skip("needs Linux's /sys")
    return Path("/sys/weightdna-test-output")


@pytest.mark.parametrize("kind", ["file-as-folder", "sysfs"])
@pytest.mark.parametrize("command", [
    ["compress", "{model}", "--snr", "20", "-o", "{out}.dna"],
    ["decompress", "{dna}", "-o", "{out}.safetensors"],
    ["analyze", "{model}", "--json", "{out}.json"],
    ["analyze", "{model}", "--report", "{out}.html"],
    ["train", "spiral", "-o", "{out}.safetensors"],
    ["fit", "{model}", "-o", "{out}.dna.pt"],
    ["plot", "activations", "-o", "{out}.png"],
])
def test_unwritable_output_fails_before_the_work(tmp_path, monkeypatch, capsys, kind,
                                                 command) -> None:
    model = _model(tmp_path)
    dna = tmp_path / "m.dna"
    dna.write_bytes(b"never read")
    out = _unwritable(tmp_path, kind)

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(weightdna.weights, "load_weights", no_work)
    monkeypatch.setattr("weightdna.codec.compress.decompress_model", no_work)
    monkeypatch.setattr("weightdna.train.train_recipe", no_work)
    monkeypatch.setattr("weightdna.plots.plot_activations", no_work)
    argv = [a.format(model=model, dna=dna, out=out) for a in command]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "cannot write" in err and "Traceback" not in err


def test_full_disk_while_writing_is_an_output_error(tmp_path, monkeypatch, capsys) -> None:
    # Every temporary file the package writes lands on /dev/full: writes fail with ENOSPC.
    real = atomic.tempfile.mkstemp

    def on_full_disk(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, name

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    assert main(["compress", str(_model(tmp_path)), "--lossless", "-o",
                 str(tmp_path / "m.dna")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(atomic.tempfile, "mkstemp", on_full_disk)
    out = tmp_path / "restored.safetensors"
    assert main(["decompress", str(tmp_path / "m.dna"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free some space" in err
    assert "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_output_turns_disk_errors_into_output_errors(tmp_path) -> None:
    path = tmp_path / "x.bin"
    with pytest.raises(OutputError, match="No space left"):
        with atomic_output(path) as handle:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    # An OSError of something else the body does (it names a file) stays what it was.
    with pytest.raises(FileNotFoundError):
        with atomic_output(path) as handle:
            handle.write(b"x")
            open(tmp_path / "missing")  # noqa: SIM115
    assert not path.exists() and list(tmp_path.iterdir()) == []
    check_writable(tmp_path / "new" / "folder" / "y.bin")
    assert list(tmp_path.iterdir()) == []  # the probe is gone, nothing was created
    path.write_bytes(b"a file, not a folder")
    with pytest.raises(OutputError, match="cannot write .*Not a directory"):
        check_writable(path / "inside")


@pytest.mark.parametrize("command", [
    ["weights", "{model}"],
    ["compress", "{model}", "--snr", "20", "-o", "{tmp}/out.dna"],
    ["analyze", "{model}"],
    ["fit", "{model}", "-o", "{tmp}/out.dna.pt"],
    ["bench", "rd", "{model}", "-o", "{tmp}/rd"],
    ["evaluate", "minilm", "{model}"],
])
def test_zero_byte_model_is_one_line(tmp_path, capsys, command) -> None:
    model = tmp_path / "empty.safetensors"
    model.write_bytes(b"")
    assert main([a.format(model=model, tmp=tmp_path) for a in command]) == 1
    err = capsys.readouterr().err
    assert "is empty (0 bytes)" in err and "Traceback" not in err


def test_evaluate_of_bare_weights_says_what_it_runs_and_where_errors_are(tmp_path, capsys) -> None:
    """A state dict alone is no model to run: one line that names what evaluate runs and
    points to `weightdna info` for the weights' own errors."""
    model = _model(tmp_path)
    assert main(["compress", str(model), "--snr", "20", "-o", str(tmp_path / "m.dna")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), str(tmp_path / "m.dna")]) == 1
    err = capsys.readouterr().err
    assert "cannot tell how to run" in err and "weightdna info" in err
    assert "Traceback" not in err


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = int(finished.stdout)  # a process that has exited: its PID names no writer now
    hours_ago = time.time() - 2 * atomic.STALE_SECONDS

    def temp(name: str, age: float | None = hours_ago) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x" * 100)
        if age is not None:
            os.utime(path, (age, age))
        return path

    stale = temp(f".restored.safetensors.wdna{dead}.k2j4_x9q.tmp")
    recent = temp(f".restored.safetensors.wdna{dead}.aaaaaaaa.tmp", age=None)
    alive = temp(f".other.dna.wdna{os.getpid()}.bbbbbbbb.tmp")
    not_ours = temp(".restored.safetensors.cccccccc.tmp")
    with atomic_output(tmp_path / "out.bin") as handle:
        handle.write(b"y")
    assert not stale.exists()
    assert recent.exists() and alive.exists() and not_ours.exists()
    assert (tmp_path / "out.bin").read_bytes() == b"y"
