"""Reconstruction offsets (format version OFFSETS_VERSION): a trellis-coded tensor's
smallest levels restored at their conditional means (`weightdna.codec.trellis.fit_offsets`),
written only where they pay, the symbols unchanged; hostile offsets refused."""

from __future__ import annotations

import copy
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.codec import trellis
from weightdna.codec.container import read_dna_file, write_dna_file
from weightdna.codec.entries import GRID_VERSION, OFFSETS_VERSION, file_version
from weightdna.codec.tensor import decode_tensor, encode_tensor
from weightdna.errors import CorruptFileError


def _laplace(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.laplace(size=(rows, columns)).astype(np.float32))


def _snr(w: torch.Tensor, r: torch.Tensor) -> float:
    w64, r64 = w.double(), r.double()
    return 10 * math.log10(float((w64**2).sum() / ((w64 - r64) ** 2).sum()))


def _without(coded: tuple[dict, dict]) -> tuple[dict, dict]:
    """The same coding with its offsets dropped: the lattice points (version 11)."""
    entry = copy.deepcopy(coded[0])
    del entry["params"]["offsets"]
    return entry, coded[1]


@pytest.fixture(scope="module")
def coded() -> tuple[torch.Tensor, tuple[dict, dict]]:
    t = _laplace(128, 512)
    return t, encode_tensor(t, name="w", step=1.5, quantizer="trellis")


def test_offsets_restore_nearer_the_weights_at_the_same_symbols(coded) -> None:
    t, (entry, sections) = coded
    offsets = entry["params"]["offsets"]
    assert 1 <= len(offsets) <= trellis.MAX_OFFSETS and offsets[-1] != 0
    # Peaked weights: the points of |level| 2 and up move towards zero.
    assert all(o < 0 for o in offsets[1:])
    restored = decode_tensor(entry, sections)
    lattice = decode_tensor(*_without((entry, sections)))
    assert _snr(t, restored) > _snr(t, lattice) + 0.03
    # The entry's stats are those of the values the decoder restores.
    assert entry["stats"]["snr_db"] == pytest.approx(_snr(t, restored), abs=1e-9)
    # Each element at sign(level)·(m + o_m/64)·step, from the lattice level.
    step = entry["params"]["step"]
    level = np.rint(lattice.double().numpy() / step).astype(np.int64)
    table = trellis.levels_table(offsets)
    m = np.abs(level)
    point = np.where(m < table.size, table[np.minimum(m, table.size - 1)], m)
    want = (np.sign(level) * point * step).astype(np.float32)
    assert np.array_equal(restored.numpy(), want)


def test_offsets_leave_the_symbols_and_sections_as_they_were(coded, monkeypatch) -> None:
    t, (entry, sections) = coded
    learn = trellis.learn_model
    monkeypatch.setattr(trellis, "learn_model",
                        lambda *a, **k: learn(*a, **{**k, "offsets": False}))
    plain_entry, plain_sections = encode_tensor(t, name="w", step=1.5, quantizer="trellis")
    assert plain_sections == sections
    assert "offsets" not in plain_entry["params"]
    assert plain_entry["params"] == _without((entry, sections))[0]["params"]


def test_a_file_with_offsets_is_version_12_and_reads_back(coded, tmp_path: Path) -> None:
    t, (entry, sections) = coded
    small = encode_tensor(_laplace(4, 16, 1), name="small", step=1.0, quantizer="trellis")
    assert "offsets" not in small[0]["params"]  # 64 elements: they cannot pay
    assert file_version([small[0]]) < OFFSETS_VERSION
    assert file_version([small[0], entry]) == OFFSETS_VERSION
    residual = {"representation": "lowrank+residual",
                "params": {"lowrank": {}, "residual": entry["params"]}}
    assert file_version([residual]) == OFFSETS_VERSION
    path = tmp_path / "m.dna"
    write_dna_file(path, [entry, small[0]], [sections, small[1]])
    dna = read_dna_file(path)
    assert dna.version == OFFSETS_VERSION
    assert torch.equal(dna.tensor("w"), decode_tensor(entry, sections))
    assert torch.equal(dna.tensor("small"), decode_tensor(*small))


def test_without_offsets_a_file_is_as_version_11_wrote_it(tmp_path: Path) -> None:
    """Offsets that do not pay are not written: the entry, its sections and the file are
    those of the lattice: byte for byte what the writer before version 12 wrote (its CRC
    and size, measured with that writer, commit 928848b)."""
    small = encode_tensor(_laplace(8, 32, 2), name="small", step=1.0, quantizer="trellis")
    assert "offsets" not in small[0]["params"]
    path = tmp_path / "s.dna"
    write_dna_file(path, [small[0]], [small[1]])
    data = path.read_bytes()
    assert read_dna_file(path).version == 8
    assert (zlib.crc32(data), len(data)) == (2688561910, 214)


def test_offsets_are_fitted_to_the_conditional_means() -> None:
    x = np.array([0.9, 1.1, 1.0, 2.2, 1.8, 1.6, -1.7, 3.5])
    levels = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, -2.0, 3.0])
    saved = trellis.OFFSET_MIN_COUNT
    trellis.OFFSET_MIN_COUNT = 1
    try:
        offsets, gain = trellis.fit_offsets(x, levels)
    finally:
        trellis.OFFSET_MIN_COUNT = saved
    # |level| 1: mean 1.0 (no offset); 2: mean (2.2 + 1.8 + 1.6 + 1.7) / 4 = 1.825;
    # 3: 3.5, clamped to +31/64.
    assert offsets == [0, round(-0.175 * 64), trellis.OFFSET_LIMIT]
    d = np.array([0.0, -11 / 64, 31 / 64])
    m = np.abs(levels).astype(int)
    before = ((x - levels) ** 2).sum()
    after = ((x - np.sign(levels) * (m + d[m - 1])) ** 2).sum()
    assert gain == pytest.approx(before - after)
    assert trellis.fit_offsets(np.array([1.0, -2.0]), np.array([1.0, -2.0])) == ([], 0.0)


@pytest.mark.parametrize("offsets, message", [
    ([float("nan")], "integers"),
    ([1.5], "integers"),
    ([True], "integers"),
    ([trellis.OFFSET_LIMIT + 1], "within"),
    ([-40, 3], "within"),
    ([1] * (trellis.MAX_OFFSETS + 1), "1 to"),
    ([], "1 to"),
    ([-3, 0], "last not 0"),
    ("-3", "integers"),
])
def test_hostile_offsets_are_refused(coded, offsets: object, message: str) -> None:
    _, (entry, sections) = coded
    forged = copy.deepcopy(entry)
    forged["params"]["offsets"] = offsets
    with pytest.raises(CorruptFileError, match=message):
        decode_tensor(forged, sections)


def test_offsets_are_refused_before_version_12_and_without_the_trellis(coded) -> None:
    t, (entry, sections) = coded
    with pytest.raises(CorruptFileError, match="new in version 12; this file is version 11"):
        decode_tensor(entry, sections, version=GRID_VERSION)
    scalar = encode_tensor(t, name="s", step=1.5)
    forged = copy.deepcopy(scalar[0])
    forged["params"]["offsets"] = [-3]
    with pytest.raises(CorruptFileError, match="trellis"):
        decode_tensor(forged, scalar[1])


def test_the_points_stay_exact_and_in_order() -> None:
    limit = trellis.OFFSET_LIMIT
    worst = [limit if m % 2 else -limit for m in range(trellis.MAX_OFFSETS)]
    table = trellis.levels_table(worst)
    assert np.all(np.diff(table) > 0) and table[0] == 0.0
    assert np.array_equal(table * trellis.OFFSET_SCALE,
                          np.rint(table * trellis.OFFSET_SCALE))  # dyadic: exact
