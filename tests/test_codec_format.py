"""The .dna codec: round trips (bit-exact and within error targets), sizes on disk, the
atomic writer, and the reader's refusals. The format is docs/FORMAT.md."""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import dna_fuzzer as fuzzer
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightdna.cli import main
from weightdna.codec import decode_tensor, encode_tensor, entropy, read_dna_file, write_dna_file
from weightdna.codec.container import (
    HEADER_DICTIONARY_ADLER32,
    PREFIX,
    VERSION,
    header_block,
    header_dictionary,
)
from weightdna.codec.dtypes import BITS_DTYPES
from weightdna.codec.entropy import MODEL_KINDS, decode_symbols, encode_symbols
from weightdna.codec.rowsteps import decode_grid
from weightdna.errors import (
    CorruptFileError,
    InvalidInputError,
    MissingDependencyError,
    ModelFileError,
    OutputExistsError,
)

SHAPES = [(), (0,), (3, 0), (7,), (5, 6), (2, 3, 4)]
ALL_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]
FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def bits_of(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern, so NaN payloads and signed zeros compare exactly."""
    return t.reshape(-1).view(BITS_DTYPES[t.element_size()])


def assert_bit_exact(restored: torch.Tensor, original: torch.Tensor) -> None:
    assert restored.dtype == original.dtype
    assert restored.shape == original.shape
    assert torch.equal(bits_of(restored), bits_of(original))


def sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 0.05).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)


def special_floats(dtype: torch.dtype) -> torch.Tensor:
    """NaN (two payloads), ±Inf, ±0, the largest and a subnormal value of ``dtype``."""
    info = torch.finfo(dtype)
    values = torch.tensor(
        [math.nan, math.inf, -math.inf, 0.0, -0.0, info.max, info.tiny / 4, -1.5],
        dtype=dtype,
    )
    bits = bits_of(values).clone()
    bits[0] |= 1  # a NaN with a non-default payload
    return bits.view(dtype)


# ---- lossless ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_lossless_round_trip_is_bit_exact(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    t = sample(dtype, shape)
    entry, sections = encode_tensor(t, lossless=True)
    assert entry["representation"] == "raw"
    assert_bit_exact(decode_tensor(entry, sections), t)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_lossless_keeps_nan_inf_signed_zero_and_subnormals(dtype: torch.dtype) -> None:
    t = special_floats(dtype)
    assert_bit_exact(decode_tensor(*encode_tensor(t, lossless=True)), t)


def test_numpy_input_round_trips_including_big_endian() -> None:
    a = np.arange(12, dtype=">f4").reshape(3, 4) / 7
    restored = decode_tensor(*encode_tensor(a, lossless=True))
    assert restored.dtype == torch.float32
    np.testing.assert_array_equal(restored.numpy(), a.astype("<f4"))


def test_integer_tensors_are_stored_exactly_even_when_lossy_is_asked() -> None:
    t = torch.arange(-50, 50, dtype=torch.int64).reshape(10, 10)
    entry, sections = encode_tensor(t, max_abs_error=3.0)
    assert entry["representation"] == "raw"
    assert_bit_exact(decode_tensor(entry, sections), t)


# ---- lossy ---------------------------------------------------------------------------


def _max_error(restored: torch.Tensor, original: torch.Tensor) -> float:
    diff = restored.to(torch.float64) - original.to(torch.float64)
    return float(diff.abs().max()) if diff.numel() else 0.0


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("target", [1e-4, 3e-3, 0.02, 0.5])
def test_max_abs_error_is_met_on_every_element(dtype: torch.dtype, target: float) -> None:
    t = sample(dtype, (40, 50), seed=1)
    entry, sections = encode_tensor(t, max_abs_error=target)
    restored = decode_tensor(entry, sections)
    assert restored.dtype == dtype and restored.shape == t.shape
    assert _max_error(restored, t) <= target
    assert entry["stats"]["max_abs_error"] <= target


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_max_abs_error_holds_on_rounding_ties(dtype: torch.dtype) -> None:
    # Odd multiples of E sit exactly between two steps of 2E: the worst case of rounding.
    target = 0.125
    t = (torch.arange(-41, 42, 2, dtype=torch.float64) * target).to(dtype)
    restored = decode_tensor(*encode_tensor(t, max_abs_error=target))
    assert _max_error(restored, t) <= target


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32), max_size=40
    ),
    target=st.floats(1e-6, 1e3, allow_nan=False),
    dtype=st.sampled_from(FLOATS),
)
def test_max_abs_error_property(values: list[float], target: float, dtype: torch.dtype) -> None:
    t = torch.tensor(values, dtype=torch.float64).to(dtype)
    if not bool(torch.isfinite(t).all()):  # float16 overflows beyond 65504
        t = torch.nan_to_num(t, posinf=0.0, neginf=0.0)
    restored = decode_tensor(*encode_tensor(t, max_abs_error=target))
    assert _max_error(restored, t) <= target


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_nonfinite_values_in_a_lossy_tensor_are_kept_exactly(dtype: torch.dtype) -> None:
    t = sample(dtype, (6, 8), seed=2)
    specials = special_floats(dtype)[:3]
    flat = t.reshape(-1)
    flat[[0, 17, 47]] = specials
    entry, sections = encode_tensor(t, max_abs_error=0.01)
    assert entry["representation"] == "quantized" and entry["params"]["nonfinite"] == 3
    restored = decode_tensor(entry, sections)
    assert_bit_exact(restored.reshape(-1)[[0, 17, 47]], specials)
    finite = torch.isfinite(t)
    assert _max_error(restored[finite], t[finite]) <= 0.01


def test_per_row_bits_bound_each_row_by_half_its_step() -> None:
    t = sample(torch.float32, (16, 64), seed=3) * torch.logspace(-2, 1, 16).reshape(16, 1)
    entry, sections = encode_tensor(t, bits=4)
    steps = decode_grid(entry["params"]["grid"], sections["steps"], 16, "t")
    restored = decode_tensor(entry, sections)
    row_error = (restored.double() - t.double()).abs().amax(dim=1).numpy()
    assert np.all(row_error <= steps / 2 * (1 + 1e-6))
    # Symmetric 4-bit: every symbol lies in −7..7.
    assert entry["params"]["model"]["min"] >= -7 and entry["params"]["model"]["max"] <= 7


def test_explicit_per_row_steps() -> None:
    t = sample(torch.float32, (4, 10), seed=4)
    steps = np.array([0.01, 0.02, 0.05, 0.1])
    entry, sections = encode_tensor(t, step=steps)
    assert entry["params"]["rows"] == 4
    stored = decode_grid(entry["params"]["grid"], sections["steps"], 4, "t")
    assert np.all(np.abs(np.log2(stored / steps)) <= 1 / 128 + 1e-12)  # the nearest point
    restored = decode_tensor(entry, sections)
    row_error = (restored.double() - t.double()).abs().amax(dim=1).numpy()
    assert np.all(row_error <= stored / 2 * (1 + 1e-6))


def test_deadzone_saves_bits_within_its_wider_bound() -> None:
    t = sample(torch.float32, (64, 64), seed=13)
    step, theta = 0.05, 0.2
    plain = encode_tensor(t, step=step)
    dead = encode_tensor(t, step=step, deadzone=theta)
    assert sum(map(len, dead[1].values())) < sum(map(len, plain[1].values()))
    assert _max_error(decode_tensor(*dead), t) <= step * (0.5 + theta) * (1 + 1e-9)
    with pytest.raises(InvalidInputError, match="deadzone"):
        encode_tensor(t, max_abs_error=0.01, deadzone=theta)
    with pytest.raises(InvalidInputError, match="deadzone"):
        encode_tensor(t, step=step, deadzone=0.5)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_lossy_handles_scalar_and_empty_tensors(shape: tuple[int, ...]) -> None:
    t = sample(torch.float32, shape, seed=5)
    for request in ({"max_abs_error": 0.01}, {"bits": 3}, {"step": 0.1}):
        restored = decode_tensor(*encode_tensor(t, **request))
        assert restored.shape == t.shape and restored.dtype == t.dtype


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_symbol_model_round_trips(kind: str) -> None:
    rng = np.random.default_rng(6)
    symbols = np.rint(rng.laplace(0, 4, size=5000)).astype(np.int32)
    params, sections = encode_symbols(symbols, kind)
    assert params["kind"] == kind
    np.testing.assert_array_equal(decode_symbols(params, sections, symbols.size), symbols)


# CRC-32 of the coded symbols of a fixed sequence. The format pins constriction's
# fixed-point models: if a constriction upgrade changes these, files written before it no
# longer decode, and the format needs a new version. (Version 3 rounds the fitted mean and
# scale to four significant digits, which changed the gaussian figure.)
# Versions 3 and 4 coded each stream from an empty coder; version 5 from the state
# `entropy.SENTINEL` (same probabilities, other bytes).
GOLDEN_SYMBOL_CRCS = {"laplace": 3346081314, "gaussian": 762696295, "categorical": 46598766}
GOLDEN_V5_SYMBOL_CRCS = {"laplace": 2346272831, "gaussian": 4057825581,
                         "categorical": 507784674}


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_coded_bytes_are_stable_across_versions(kind: str, monkeypatch) -> None:
    symbols = (np.arange(1000) * 7919 % 23 - 11).astype(np.int32)
    model, sections = encode_symbols(symbols, kind)
    assert zlib.crc32(sections["symbols"]) == GOLDEN_V5_SYMBOL_CRCS[kind]
    monkeypatch.setattr(entropy, "SENTINEL", ())  # as versions 3 and 4 wrote them
    model, legacy = encode_symbols(symbols, kind)
    assert zlib.crc32(legacy["symbols"]) == GOLDEN_SYMBOL_CRCS[kind]
    assert np.array_equal(decode_symbols(model, legacy, symbols.size, version=4), symbols)


def test_auto_model_keeps_about_the_smallest() -> None:
    symbols = np.rint(np.random.default_rng(7).laplace(0, 3, size=20000)).astype(np.int32)
    sizes = {kind: sum(map(len, encode_symbols(symbols, kind)[1].values())) for kind in MODEL_KINDS}
    _, sections = encode_symbols(symbols, "auto")
    # The choice is made on estimates, with a 1% preference for the fast categorical model.
    assert sum(map(len, sections.values())) <= 1.02 * min(sizes.values())


def test_constant_tensor_costs_almost_nothing() -> None:
    entry, sections = encode_tensor(torch.full((100, 100), 0.25), max_abs_error=0.01)
    assert sum(map(len, sections.values())) < 100
    assert _max_error(decode_tensor(entry, sections), torch.full((100, 100), 0.25)) <= 0.01


# ---- requests that cannot be served ----------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [{}, {"step": 0.1, "bits": 4}, {"lossless": True, "max_abs_error": 0.1}],
)
def test_exactly_one_request(request_: dict) -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        encode_tensor(torch.zeros(3), **request_)


@pytest.mark.parametrize(
    "request_", [{"bits": 1}, {"bits": 40}, {"step": 0.0}, {"step": -1.0}, {"step": math.nan}]
)
def test_bad_requests_are_refused(request_: dict) -> None:
    with pytest.raises(InvalidInputError):
        encode_tensor(torch.ones(4, 4), **request_)


def test_a_step_too_fine_for_the_alphabet_is_refused_but_an_error_target_falls_back() -> None:
    t = torch.tensor([1e6, -1e6, 3.0])
    with pytest.raises(InvalidInputError, match="step is too small"):
        encode_tensor(t, step=1e-3)
    entry, sections = encode_tensor(t, max_abs_error=1e-6)
    assert entry["representation"] == "raw"
    assert_bit_exact(decode_tensor(entry, sections), t)


def test_unsupported_dtype_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="dtype"):
        encode_tensor(torch.zeros(3, dtype=torch.complex64), lossless=True)


# ---- the file ------------------------------------------------------------------------


def _mixed_tensors() -> dict[str, tuple[torch.Tensor, dict]]:
    nan_tensor = sample(torch.bfloat16, (8, 8), seed=8)
    nan_tensor[2, 3] = math.nan
    return {
        "q.weight": (sample(torch.float32, (32, 48), seed=9), {"bits": 4}),
        "k.weight": (sample(torch.float16, (32, 48), seed=10), {"max_abs_error": 0.002}),
        "nan.weight": (nan_tensor, {"max_abs_error": 0.01}),
        "bias": (sample(torch.float32, (48,), seed=11), {"lossless": True}),
        "ids": (torch.arange(512, dtype=torch.int64), {"lossless": True}),
        "scalar": (torch.tensor(2.5, dtype=torch.float64), {"max_abs_error": 1e-3}),
        "empty": (torch.zeros(0, 5), {"step": 0.1}),
    }


def _write_mixed(path: Path, float32_steps: bool = False,
                 **kwargs: object) -> dict[str, tuple[torch.Tensor, dict]]:
    """``float32_steps``: per-row steps as versions 3 to 9 store them."""
    tensors = _mixed_tensors()
    encoded = [encode_tensor(t, name=name, **req) for name, (t, req) in tensors.items()]
    if float32_steps:
        encoded = [fuzzer.float32_steps(c) for c in encoded]
    write_dna_file(path, [e for e, _ in encoded], [s for _, s in encoded], **kwargs)
    return tensors


def test_file_round_trip_and_sizes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "m.dna"
    tensors = _mixed_tensors()
    encoded = {name: encode_tensor(t, name=name, **req) for name, (t, req) in tensors.items()}
    size = write_dna_file(
        path,
        [e for e, _ in encoded.values()],
        [s for _, s in encoded.values()],
        metadata={"source": "test"},
    )
    dna = read_dna_file(path)
    assert size == path.stat().st_size == dna.file_bytes
    assert dna.names == list(tensors) and dna.metadata == {"source": "test"}
    # Every byte is a header byte or a section byte: the bits reported are the bits stored.
    assert dna.file_bytes == dna.header_bytes + sum(dna.section_bytes(n) for n in dna.names)
    for name, (original, request) in tensors.items():
        entry, sections = encoded[name]
        stored = dna.read_sections(name)
        assert stored == sections
        assert dna.section_bytes(name) == sum(map(len, sections.values()))
        ranges = dna.entries[dna.index(name)]["sections"]
        assert {role: r[1] for role, r in ranges.items()} == {
            role: len(b) for role, b in sections.items()
        }
        restored = dna.tensor(name)
        if "lossless" in request:
            assert_bit_exact(restored, original)
        else:
            assert restored.dtype == original.dtype and restored.shape == original.shape
            assert_bit_exact(restored, decode_tensor(entry, sections))
        if "max_abs_error" in request:
            finite = torch.isfinite(original)
            assert _max_error(restored[finite], original[finite]) <= request["max_abs_error"]


def test_coded_section_is_what_the_file_holds(tmp_path: Path) -> None:
    t = sample(torch.float32, (64, 64), seed=12)
    entry, sections = encode_tensor(t, name="w", bits=4)
    write_dna_file(tmp_path / "w.dna", [entry], [sections])
    dna = read_dna_file(tmp_path / "w.dna")
    offset, length, crc = dna.entries[0]["sections"]["symbols"]
    raw = (tmp_path / "w.dna").read_bytes()[dna.header_bytes + offset :][:length]
    assert raw == sections["symbols"] and zlib.crc32(raw) == crc
    assert 8 * length == 8 * len(sections["symbols"])


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "m.dna"
    _write_mixed(path)
    before = path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dna"]  # no temporary left
    with pytest.raises(OutputExistsError):
        _write_mixed(path)
    assert path.read_bytes() == before
    entry, sections = encode_tensor(torch.ones(3), name="one", lossless=True)
    write_dna_file(path, [entry], [sections], overwrite=True)
    assert read_dna_file(path).names == ["one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dna"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.dna"
    path.write_bytes(b"previous output")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        _write_mixed(path, overwrite=True)
    assert path.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dna"]


def test_reading_never_touches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.dna"
    _write_mixed(path)
    before, stat = path.read_bytes(), path.stat()
    dna = read_dna_file(path)
    for name in dna.names:
        dna.tensor(name)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    entry, sections = encode_tensor(torch.ones(2), name="a", lossless=True)
    with pytest.raises(InvalidInputError, match="two tensors"):
        write_dna_file(tmp_path / "d.dna", [entry, entry], [sections, sections])
    assert not (tmp_path / "d.dna").exists()


def test_reader_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        read_dna_file(tmp_path / "missing.dna")
    with pytest.raises(ModelFileError, match="folder"):
        read_dna_file(tmp_path)
    (tmp_path / "text.dna").write_text("hello, I am not a model")
    with pytest.raises(ModelFileError, match="not a .dna file"):
        read_dna_file(tmp_path / "text.dna")
    header = b'{"metadata":{},"tensors":[]}'
    newer = header_block(header, VERSION + 1)
    (tmp_path / "newer.dna").write_bytes(newer)
    with pytest.raises(ModelFileError, match="newer weightdna"):
        read_dna_file(tmp_path / "newer.dna")
    fifo = tmp_path / "pipe.dna"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="not a regular file"):
        read_dna_file(fifo)
    good = header_block(header)
    (tmp_path / "empty.dna").write_bytes(good)
    assert read_dna_file(tmp_path / "empty.dna").names == []
    (tmp_path / "bad_crc.dna").write_bytes(good[:20] + struct.pack("<I", 0) + good[24:])
    with pytest.raises(CorruptFileError, match="header checksum"):
        read_dna_file(tmp_path / "bad_crc.dna")


def test_the_header_dictionary_is_the_released_one() -> None:
    # Every version-4 file's header names this dictionary by its Adler-32: a changed
    # dictionary file would make all of them unreadable.
    assert zlib.adler32(header_dictionary()) == HEADER_DICTIONARY_ADLER32
    assert len(header_dictionary()) <= 32768  # zlib's window: more would never be used


def test_a_changed_dictionary_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from weightdna.codec import container

    path = tmp_path / "m.dna"
    _write_mixed(path)
    # As if the installed dictionary file had been edited: other bytes, the same name.
    monkeypatch.setattr(container, "HEADER_DICTIONARY_FILE", "__init__.py")
    container.header_dictionary.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match="Reinstall weightdna"):
            read_dna_file(path)
        assert main(["info", str(path)]) != 0  # the CLI says so, without a traceback
        err = capsys.readouterr().err
        assert "Reinstall weightdna" in err and "Traceback" not in err
    finally:
        container.header_dictionary.cache_clear()


@pytest.mark.parametrize("version", [3, 4])
def test_version_3_and_4_files_still_read(tmp_path: Path, monkeypatch, version: int) -> None:
    path = tmp_path / "m.dna"
    tensors = _write_mixed(path, float32_steps=True)
    with monkeypatch.context() as m:
        m.setattr(entropy, "SENTINEL", ())  # streams as versions 3 and 4 coded them
        _write_mixed(tmp_path / "legacy.dna", float32_steps=True)
    data = (tmp_path / "legacy.dna").read_bytes()
    _, _, length, inflated, _ = PREFIX.unpack_from(data)
    text = zlib.decompressobj(zdict=header_dictionary()).decompress(
        data[PREFIX.size : PREFIX.size + length])
    assert len(text) == inflated
    old_path = tmp_path / f"v{version}.dna"
    old_path.write_bytes(header_block(text, version) + data[PREFIX.size + length :])
    old = read_dna_file(old_path)
    assert old.version == version and old.names == list(tensors)
    for name in tensors:
        assert_bit_exact(old.tensor(name), read_dna_file(path).tensor(name))
    # The same streams under a version-5 prefix do not end in the sentinel state.
    (tmp_path / "v5.dna").write_bytes(header_block(text, 5) + data[PREFIX.size + length :])
    with pytest.raises(CorruptFileError, match="do not end|too short"):
        read_dna_file(tmp_path / "v5.dna").tensor("q.weight")


def test_a_version_4_header_must_name_the_dictionary(tmp_path: Path) -> None:
    header = b'{"metadata":{},"tensors":[]}'
    plain = zlib.compress(header)  # a valid zlib stream, but without the preset dictionary
    data = PREFIX.pack(b"\x89DNA\r\n\x1a\n", 4, len(plain), len(header), zlib.crc32(plain)) + plain
    (tmp_path / "plain.dna").write_bytes(data)
    with pytest.raises(CorruptFileError, match="preset dictionary"):
        read_dna_file(tmp_path / "plain.dna")


def test_the_dictionary_halves_a_small_models_header(tmp_path: Path) -> None:
    # The engine's digits MLP (untrained: 17k weights), coded at 2 bits per weight.
    from weightdna.codec.compress import Target, compress_model
    from weightdna.train import build_digits_mlp
    from weightdna.weights import load_weights

    source = build_digits_mlp(seed=3).save(tmp_path / "mlp.safetensors")
    compress_model(load_weights(source), tmp_path / "m.dna", Target("bits_per_weight", 2.0))
    data = (tmp_path / "m.dna").read_bytes()
    _, _, length, _, _ = PREFIX.unpack_from(data)
    text = zlib.decompressobj(zdict=header_dictionary()).decompress(
        data[PREFIX.size : PREFIX.size + length])
    without = len(header_block(text, 3)) - PREFIX.size
    assert length <= 0.6 * without, (length, without)


def test_sections_are_checked_when_read_lazily(tmp_path: Path) -> None:
    path = tmp_path / "m.dna"
    _write_mixed(path)
    dna = read_dna_file(path, verify=False)
    damaged = bytearray(path.read_bytes())
    offset, length, _ = dna.entries[dna.index("q.weight")]["sections"]["symbols"]
    damaged[dna.header_bytes + offset + length // 2] ^= 0x10
    path.write_bytes(bytes(damaged))
    assert dna.tensor("bias").shape == (48,)  # untouched sections still read
    with pytest.raises(CorruptFileError, match="checksum"):
        dna.tensor("q.weight")
    with pytest.raises(CorruptFileError, match="checksum"):
        read_dna_file(path)
    path.write_bytes(bytes(damaged) + b"more")
    with pytest.raises(CorruptFileError, match="changed"):
        dna.tensor("bias")


def test_memory_limit_is_enforced_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "m.dna"
    entry, sections = encode_tensor(torch.zeros(1000, 1000), name="zeros", step=0.1)
    write_dna_file(path, [entry], [sections])
    assert path.stat().st_size < 1000  # a "zip bomb" by nature: tiny file, 4 MB tensor
    with pytest.raises(CorruptFileError, match="memory limit"):
        read_dna_file(path, max_memory=1 << 20)
    assert read_dna_file(path).tensor("zeros").shape == (1000, 1000)


# ---- the command ---------------------------------------------------------------------


def test_info_command_prints_the_tensor_table(tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.dna"
    _write_mixed(path)
    assert main(["info", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    for name in _mixed_tensors():
        assert name in out
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "7 tensors" in out
    # What compress checked on the outputs is not in the file: info says how to check it.
    assert "weightdna" in out and "evaluate ORIGINAL" in out.replace("\n", " ")
    (tmp_path / "junk.dna").write_bytes(b"junk")
    assert main(["info", str(tmp_path / "junk.dna")]) == 1
