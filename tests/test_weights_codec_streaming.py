"""Streaming: weights are read without a memory map or a second copy, safetensors files are
written one tensor at a time, decompress never holds the whole model, and the block-wise
figures of the codec equal the whole-tensor ones."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import weightdna.codec.ratecontrol as ratecontrol
import weightdna.codec.tensor as codec_tensor
from weightdna.cli import build_parser
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.container import DnaFile
from weightdna.codec.prediction import lowrank_prediction
from weightdna.codec.quantize import as_rows
from weightdna.codec.ratecontrol import Target
from weightdna.errors import ModelFileError, OutputExistsError
from weightdna.weights import load_weights, save_weights
from weightdna.weights.model import TensorSource
from weightdna.weights.safetensors_format import writer_order


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    nonfinite = torch.randn(40, 30, generator=g)
    nonfinite[2, 3], nonfinite[39, 29] = math.nan, -math.inf
    return {
        "a.weight": torch.randn(64, 48, generator=g),
        "b.weight": (torch.randn(32, 16, generator=g)).half(),
        "c.weight": nonfinite,
        "d.bias": torch.randn(64, generator=g),
        "ids": torch.arange(10),
    }


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- reading ----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_read_tensors_leave_no_mapped_file_behind(tmp_path: Path) -> None:
    # A memory-mapped file's pages stay resident once touched; plain reads leave nothing.
    path = save_weights({"big": torch.ones(16 * 2**20 // 4 * 4)}, tmp_path / "m.safetensors")
    weights = load_weights(path)
    before = rss_mib()
    for _ in range(3):
        t = weights.tensor("big")
        assert float(t[-1]) == 1.0
        del t
    gc.collect()
    assert rss_mib() - before < 24  # not 64 MiB of file pages, not three copies


def test_tensors_read_are_new_and_unshared(tmp_path: Path) -> None:
    path = save_weights(tensors(), tmp_path / "m.safetensors")
    weights = load_weights(path)
    assert weights.sources["a.weight"].owned
    first, second = weights.tensor("a.weight"), weights.tensor("a.weight")
    first.zero_()
    assert torch.equal(second, tensors()["a.weight"])
    array = weights.numpy("a.weight", np.float32)
    array[:] = 0
    assert torch.equal(weights.tensor("a.weight"), tensors()["a.weight"])


def test_file_changed_after_opening_is_refused(tmp_path: Path) -> None:
    path = save_weights(tensors(), tmp_path / "m.safetensors")
    weights = load_weights(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 8)
    with pytest.raises(ModelFileError, match="changed since it was opened"):
        weights.tensor("a.weight")


# --- writing ----------------------------------------------------------------------------


def test_save_from_sources_reads_each_once_in_turn(tmp_path: Path) -> None:
    reads: list[str] = []
    alive: list[weakref.ref] = []

    def reader(name: str, t: torch.Tensor):
        def read() -> torch.Tensor:
            gc.collect()
            assert all(r() is None for r in alive), "an earlier tensor is still held"
            reads.append(name)
            copy = t.clone()
            alive.append(weakref.ref(copy))
            return copy
        return read

    sources = {name: TensorSource(t.dtype, tuple(t.shape), reader(name, t))
               for name, t in tensors().items()}
    out = save_weights(sources, tmp_path / "m.safetensors")
    # In the order the reference writer stores them (dtype, then name), each once.
    assert reads == writer_order({n: (t.dtype, tuple(t.shape)) for n, t in tensors().items()})
    # The same bytes as writing the tensors themselves.
    assert out.read_bytes() == save_weights(tensors(), tmp_path / "n.safetensors").read_bytes()


def test_save_from_sources_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    good = {name: TensorSource.held(t) for name, t in tensors().items()}
    with pytest.raises(OutputExistsError):
        save_weights(good, out)
    bad = dict(good, **{"z.weight": TensorSource(torch.float32, (3,), lambda: torch.ones(4))})
    with pytest.raises(ModelFileError, match="declared"):
        save_weights(bad, out, overwrite=True)
    assert out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_model_weights_streams(tmp_path: Path) -> None:
    path = save_weights(tensors(), tmp_path / "m.safetensors")
    again = save_weights(load_weights(path), tmp_path / "again.safetensors")
    assert again.read_bytes() == path.read_bytes()


# --- decompress -------------------------------------------------------------------------


@pytest.fixture
def dna(tmp_path: Path) -> Path:
    model = save_weights(tensors(), tmp_path / "m.safetensors")
    out = tmp_path / "m.dna"
    compress_model(load_weights(model), out, Target("snr", 30.0))
    return out


def test_decompress_streams_and_matches_the_decoded_tensors(dna: Path, tmp_path: Path,
                                                            monkeypatch) -> None:
    alive: list[weakref.ref] = []
    original = DnaFile.tensor

    def tensor(self: DnaFile, name: str, *args, **kwargs) -> torch.Tensor:
        gc.collect()
        assert all(r() is None for r in alive), "decompress held an earlier tensor"
        t = original(self, name, *args, **kwargs)
        alive.append(weakref.ref(t))
        return t

    monkeypatch.setattr(DnaFile, "tensor", tensor)
    out = tmp_path / "restored.safetensors"
    count, size = decompress_model(dna, out)
    assert count == len(tensors()) and size == out.stat().st_size
    monkeypatch.setattr(DnaFile, "tensor", original)
    from weightdna.codec import read_dna_file

    decoded = read_dna_file(dna)
    expected = {name: decoded.tensor(name) for name in decoded.names}
    reference = save_weights(expected, tmp_path / "reference.safetensors",
                             metadata=load_weights(out).metadata)
    assert out.read_bytes() == reference.read_bytes()


def test_decompress_failure_leaves_the_output_untouched(dna: Path, tmp_path: Path,
                                                        monkeypatch) -> None:
    out = tmp_path / "restored.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        decompress_model(dna, out)
    calls = 0
    original = DnaFile.tensor

    def failing(self: DnaFile, name: str, *args, **kwargs) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ModelFileError("injected failure")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(DnaFile, "tensor", failing)
    with pytest.raises(ModelFileError, match="injected"):
        decompress_model(dna, out, overwrite=True)
    assert out.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --- block-wise figures equal whole-tensor ones -------------------------------------------


def test_blockwise_candidate_figures_equal_whole_tensor_ones(monkeypatch) -> None:
    monkeypatch.setattr(ratecontrol, "BLOCK_ELEMENTS", 100)  # many blocks, a ragged last one
    monkeypatch.setattr(ratecontrol, "SAMPLE_ELEMENTS", 700)  # a sampling stride above 1
    g = np.random.default_rng(0)
    values = g.standard_normal((97, 3)) @ g.standard_normal((3, 40)) + 0.01 * g.standard_normal(
        (97, 40))
    assert np.array_equal(ratecontrol._row_figures(values)[0], np.abs(values).max(axis=1))
    flat = values.reshape(-1)
    assert np.array_equal(ratecontrol._row_figures(flat)[0], np.array([np.abs(flat).max()]))
    prediction = lowrank_prediction(values, 3)
    candidate = ratecontrol._predicted_candidate("lowrank+residual", prediction, values)
    residual = values - prediction.values
    stride = math.ceil(values.size / 700)
    assert np.array_equal(candidate.sample, as_rows(residual)[::stride].astype(np.float32))
    assert np.array_equal(candidate.row_peak, np.abs(residual).max(axis=1))


def test_blockwise_nonfinite_indices(monkeypatch) -> None:
    monkeypatch.setattr(codec_tensor, "BLOCK_ELEMENTS", 7)
    t = torch.randn(13, 5)
    t[0, 0], t[6, 2], t[12, 4] = math.nan, math.inf, -math.inf
    expected = np.flatnonzero(~torch.isfinite(t).numpy())
    assert np.array_equal(codec_tensor._nonfinite_indices(t), expected)
    assert codec_tensor._nonfinite_indices(torch.zeros(0, 3)).size == 0


# --- the command line imports only the command it runs --------------------------------------


def test_each_command_parses_alone() -> None:
    every = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in every:
        alone = build_parser(command)._subparsers._group_actions[0].choices  # type: ignore
        assert command in alone


def test_compress_command_does_not_import_the_others() -> None:
    # Every command module is read for its name (they import only the standard library and
    # rich at the top); what the other commands run is not imported.
    code = ("import sys; from weightdna.cli import build_parser; build_parser('decompress'); "
            "print(sorted(m for m in sys.modules if m.startswith(('weightdna.', 'sklearn'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "weightdna.codec.options" in out  # its choices, from the light module
    assert "weightdna.analysis" not in out and "sklearn" not in out
