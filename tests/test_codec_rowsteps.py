"""Per-row steps on a grid (format version GRID_VERSION, `weightdna.codec.rowsteps`): the
encoder quantises with the steps the decoder reads; files without per-row steps stay
version 8; float32 steps of older files still read; hostile grids are refused."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import dna_fuzzer as fuzzer
import numpy as np
import pytest
import torch

from weightdna.codec import decode_tensor, encode_tensor, read_dna_file, write_dna_file
from weightdna.codec.entries import COLUMNS_VERSION, GRID_VERSION, READABLE_VERSIONS
from weightdna.codec.ratecontrol import PER_ROW_MARGIN
from weightdna.codec.rowsteps import (
    MAX_PER_OCTAVE,
    PER_OCTAVE,
    _fractions,
    decode_grid,
    encode_k,
    grid_values,
    on_grid,
    stored_bits,
)
from weightdna.codec.zstdframes import compress_bytes
from weightdna.errors import CorruptFileError, InvalidInputError, WeightDNAError


def _rows(seed: int = 0, rows: int = 40, columns: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-3, 1, rows).reshape(rows, 1)
    return torch.randn(rows, columns, generator=g) * scale


def _version(path: Path) -> int:
    return struct.unpack("<I", path.read_bytes()[8:12])[0]


def test_the_grids_fractions_are_exact_and_machine_independent() -> None:
    for per_octave in (1, 3, PER_OCTAVE, MAX_PER_OCTAVE):
        fractions = _fractions(per_octave)
        for j, value in enumerate(fractions):
            x = int(value * 2**52)
            assert x == value * 2**52  # 53 bits: exact
            # x^G ≤ 2^(j + 52 G) < (x + 1)^G: the float64 at or just below 2^(j / G).
            assert x**per_octave <= 1 << (j + 52 * per_octave) < (x + 1) ** per_octave
    k = np.array([-130, -64, -1, 0, 1, 63, 64, 65, 640])
    assert np.array_equal(grid_values(0.5, 64, k)[[1, 3, 6]], [0.25, 0.5, 1.0])
    assert np.allclose(grid_values(0.5, 64, k), 0.5 * 2.0 ** (k / 64), rtol=1e-15)


def test_rounding_to_the_grid_is_near_and_stable() -> None:
    wanted = np.exp(np.random.default_rng(1).normal(size=501)) * 1e-3
    base, per_octave, k, steps = on_grid(wanted)
    assert per_octave == PER_OCTAVE and float(np.float32(base)) == base
    assert np.max(np.abs(np.log2(steps / wanted))) <= 0.5 / PER_OCTAVE + 1e-12
    assert np.array_equal(on_grid(steps)[2], k)  # rounding again changes nothing
    assert on_grid(steps)[0] == base
    up = on_grid(wanted, up=True)[3]
    assert np.all(up >= wanted) and np.all(up <= wanted * 2 ** (1 / PER_OCTAVE))
    assert np.array_equal(decode_grid({"base": base, "per_octave": per_octave},
                                      encode_k(k), k.size, "t"), steps)
    with pytest.raises(InvalidInputError, match="float32"):
        on_grid(np.array([1.0, 1e39]))


@pytest.mark.parametrize("quantizer", ["scalar", "trellis"])
def test_grid_steps_round_trip_within_half_a_step(quantizer: str) -> None:
    t = _rows(rows=64, columns=128)
    wanted = t.abs().amax(dim=1).double().numpy() / 5
    entry, sections = encode_tensor(t, step=wanted, quantizer=quantizer)
    params = entry["params"]
    assert params["step"] is None and params["rows"] == 64
    assert params["grid"]["per_octave"] == PER_OCTAVE
    steps = decode_grid(params["grid"], sections["steps"], 64, "t")
    assert np.array_equal(steps, on_grid(wanted)[3])
    restored = decode_tensor(entry, sections)
    error = (restored.double() - t.double()).abs().amax(dim=1).numpy()
    bound = 0.5 if quantizer == "scalar" else 1.5  # the trellis's levels may move
    assert np.all(error <= bound * steps * (1 + 1e-6))
    # Bit-exact: every restored value is float32(a whole number of its row's step).
    units = restored.double().numpy() / steps[:, None]
    assert np.allclose(units, np.round(units), atol=1e-4)


def test_a_bits_request_never_takes_a_finer_step() -> None:
    t = _rows(rows=16, columns=64)
    entry, sections = encode_tensor(t, bits=16)
    steps = decode_grid(entry["params"]["grid"], sections["steps"], 16, "t")
    assert np.all(steps >= t.abs().amax(dim=1).double().numpy() / 32767)
    assert entry["params"]["model"]["max"] <= 32767 and entry["params"]["model"]["min"] >= -32767


def test_the_version_written(tmp_path: Path) -> None:
    t = _rows()
    grid = encode_tensor(t, name="grid", bits=4)
    plain = encode_tensor(t, name="plain", step=0.01)
    path = tmp_path / "plain.dna"
    write_dna_file(path, [plain[0]], [plain[1]])
    assert _version(path) == 8  # no per-row steps: as before
    write_dna_file(path, [plain[0], grid[0]], [plain[1], grid[1]], overwrite=True)
    assert _version(path) == GRID_VERSION
    dna = read_dna_file(path)
    assert torch.equal(dna.tensor("grid"), decode_tensor(*grid))
    assert GRID_VERSION in READABLE_VERSIONS and GRID_VERSION > COLUMNS_VERSION


def test_float32_steps_of_older_files_still_read(tmp_path: Path) -> None:
    t = _rows(rows=24)
    entry, sections = encode_tensor(t, name="w", bits=6)
    steps = decode_grid(entry["params"]["grid"], sections["steps"], 24, "t")
    old, old_sections = fuzzer.float32_steps((entry, sections))
    new = decode_tensor(entry, sections).double().numpy()
    units = np.round(new / steps[:, None])
    expected = (units * steps.astype(np.float32).astype(np.float64)[:, None]).astype(np.float32)
    for version in (5, 8, COLUMNS_VERSION, GRID_VERSION):  # streams end so from 5
        assert np.array_equal(decode_tensor(old, old_sections, version=version).numpy(),
                              expected)
    # A whole file with float32 steps is written as version 8 and reads.
    path = tmp_path / "old.dna"
    write_dna_file(path, [old], [old_sections])
    assert _version(path) == 8
    assert np.array_equal(read_dna_file(path).tensor("w").numpy(), expected)


def test_a_grid_in_a_file_before_its_version_is_refused() -> None:
    entry, sections = encode_tensor(_rows(), bits=4)
    for version in (8, COLUMNS_VERSION):
        with pytest.raises(CorruptFileError, match=f"new in version {GRID_VERSION}"):
            decode_tensor(entry, sections, version=version)


def _hostile(change) -> tuple[dict, dict[str, bytes]]:
    entry, sections = encode_tensor(_rows(rows=40), bits=4)
    entry = json.loads(json.dumps(entry))
    change(entry["params"], sections)
    return entry, sections


def _set(key: str, value: object):
    def change(params: dict, sections: dict) -> None:
        params["grid"][key] = value
    return change


def _section(k: np.ndarray | bytes):
    def change(params: dict, sections: dict) -> None:
        sections["steps"] = k if isinstance(k, bytes) else compress_bytes(
            np.asarray(k).astype("<i2").tobytes())
    return change


def _both(**grid):
    def change(params: dict, sections: dict) -> None:
        params["grid"].update(grid)
        sections["steps"] = encode_k(np.full(40, 0))
    return change


HOSTILE = {
    "per_octave 0": _set("per_octave", 0),
    "per_octave too large": _set("per_octave", MAX_PER_OCTAVE + 1),
    "per_octave a float": _set("per_octave", 64.0),
    "per_octave a bool": _set("per_octave", True),
    "base 0": _set("base", 0.0),
    "base negative": _set("base", -0.5),
    "base not a float32": _set("base", 0.1),
    "base a string": _set("base", "1"),
    "base an integer": _set("base", 1),
    "base beyond float32": _both(base=1e39),
    "a key too many": _set("extra", 1),
    "a key missing": lambda p, s: p["grid"].pop("base"),
    "grid without rows": lambda p, s: p.update(rows=None, step=0.1),
    "grid not an object": lambda p, s: p.update(grid=[0.5, 64]),
    "a k too few": _section(np.zeros(39)),
    "a k too many": _section(np.zeros(41)),
    "not zstd": _section(np.zeros(40).astype("<i2").tobytes()),
    "float32 steps with a grid": _section(np.ones(40).astype("<f4").tobytes()),
    "k beyond the grid's range": _section(np.r_[32000, np.zeros(39)]),
    "k wraps past int16": _section(np.r_[32767, 32767, 32767, np.zeros(37)]),
    "step beyond float32": _section(np.r_[64 * 160, np.zeros(39)]),
    "step below float32's least": _section(np.r_[-64 * 160, np.zeros(39)]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_grids_are_refused(case: str) -> None:
    entry, sections = _hostile(HOSTILE[case])
    with pytest.raises(CorruptFileError):
        decode_tensor(entry, sections)


def test_hostile_grids_in_a_file_give_weightdna_errors(tmp_path: Path) -> None:
    for case in ("per_octave 0", "k beyond the grid's range", "step beyond float32"):
        entry, sections = _hostile(HOSTILE[case])
        path = tmp_path / "hostile.dna"
        write_dna_file(path, [entry], [sections], overwrite=True)  # valid CRCs
        with pytest.raises(WeightDNAError):
            read_dna_file(path).tensor(entry["name"])


def test_the_rate_control_prices_grid_steps_by_their_bytes() -> None:
    smooth = np.repeat([1.0, 2.0, 4.0], 10000)  # 30000 rows, three distinct steps
    assert stored_bits(smooth) < 0.1 * smooth.size  # well below float32's 32 bits a row
    spread = np.exp(np.random.default_rng(2).normal(size=384))
    assert 4 * spread.size < stored_bits(spread) < 16 * spread.size
    assert PER_ROW_MARGIN > 1
