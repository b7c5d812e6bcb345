"""Lossless floats in lanes (format version 10, `weightdna.codec.lanes`): exact for every
bit pattern and size, written as version 10 only by the fast (``--lossless``) path, old
files still read, and every forged param, table or section refused."""

from __future__ import annotations

import functools
import struct

import numpy as np
import pytest
import torch
from support import minilm_tensor, same_bits, with_special_values

from weightdna.codec import decode_tensor, encode_tensor, read_dna_file, write_dna_file
from weightdna.codec.dtypes import tensor_bytes
from weightdna.codec.entries import LANES_VERSION, VERSION, file_version
from weightdna.codec.lanes import decode_lanes, encode_lanes
from weightdna.codec.lossless import FIELDS_MIN_ELEMENTS, decode_lossless, encode_lossless
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError, WeightDNAError

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NAME = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _special(dtype: torch.dtype, n: int = 3000) -> torch.Tensor:
    """Real weights with NaNs (payloads too), ±Inf, ±0, subnormals and the extremes."""
    return with_special_values(minilm_tensor().reshape(-1)[:n].to(dtype).clone())


def _roundtrip(t: torch.Tensor, **kwargs: object) -> tuple[dict, dict]:
    dtype = NAME[t.dtype]
    params, sections = encode_lanes(np.frombuffer(tensor_bytes(t), np.uint8), dtype, **kwargs)
    raw = decode_lanes(params, sections, dtype, t.numel(), "t")
    assert raw.tobytes() == tensor_bytes(t)
    return params, sections


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 63, 1023, 1024, 1025, 3000])
def test_every_bit_pattern_and_size_comes_back(dtype: torch.dtype, n: int) -> None:
    t = _special(dtype)[:n].clone()
    _roundtrip(t, block=1024)  # blocks of 1024: several, a short last one
    _roundtrip(t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mantissa_bits", [0, 1, 2, 3])
def test_every_head_width_comes_back(dtype: torch.dtype, mantissa_bits: int) -> None:
    params, _ = _roundtrip(_special(dtype), mantissa_bits=mantissa_bits, block=1024)
    assert params["mantissa_bits"] == mantissa_bits


def test_random_bit_patterns_take_fewer_head_bits() -> None:
    """Every 16-bit pattern: as bf16, 2^10 heads with 2 mantissa bits, more than the
    decoder's 256 ranks, so the encoder drops head bits until they fit (none: 2^8 exponents);
    as fp16, 2^8 heads with 3 fit. Exact either way."""
    t = torch.from_numpy(np.random.default_rng(0).permutation(1 << 16).astype(np.int16))
    assert _roundtrip(t.view(torch.bfloat16), block=1 << 12)[0]["mantissa_bits"] == 0
    assert _roundtrip(t.view(torch.float16), block=1 << 12)[0]["mantissa_bits"] == 3


def test_a_constant_tensor_has_one_head() -> None:
    t = torch.full((5000,), 0.375)
    params, sections = _roundtrip(t, block=1024)
    assert len(sections["words"]) == 5 * 4 * 2 * 2  # four states per block, no refills


@pytest.mark.parametrize("dtype", DTYPES)
def test_smaller_than_byte_plane_zstd_on_real_weights(dtype: torch.dtype) -> None:
    t = minilm_tensor().to(dtype)
    params, sections = encode_lossless(t, fast=True)
    assert params["compression"] == "lanes"
    zstd = len(compress_bytes(lanes_free_planes(t), 1))
    assert sum(map(len, sections.values())) < zstd
    back = decode_lossless(params, sections, NAME[dtype], tuple(t.shape), "t", LANES_VERSION)
    assert same_bits(back, t)


def lanes_free_planes(t: torch.Tensor) -> bytes:
    from weightdna.codec.lossless import to_planes

    return to_planes(tensor_bytes(t), t.element_size())


def test_fp32_low_bytes_zstd_coded_where_they_repeat() -> None:
    """fp32 values that are exact bf16 values: their low mantissa bytes are zero, and
    the low planes are zstd-coded."""
    t = minilm_tensor().to(torch.bfloat16).float()
    params, sections = _roundtrip(t)
    assert params["low_zstd"]
    assert len(sections["low"]) < t.numel()


@pytest.mark.parametrize("tensor", [torch.zeros(1 << 15), torch.arange(4096.0).repeat(160),
                                    torch.arange(1 << 15, dtype=torch.int32),
                                    torch.tensor([1.5] * 10)])
def test_zstd_is_kept_when_smaller(tensor: torch.Tensor) -> None:
    params, sections = encode_lossless(tensor, fast=True)
    assert params["compression"] == "zstd"
    # never larger than zstd -19 of the tensor's bytes by more than its frame's own bytes
    assert len(sections["data"]) <= len(compress_bytes(tensor_bytes(tensor), 19)) + 16
    back = decode_lossless(params, sections, str(tensor.dtype).split(".")[1],
                           tuple(tensor.shape), "t", LANES_VERSION)
    assert torch.equal(back, tensor)


def test_the_fast_path_codes_float_tensors_in_lanes() -> None:
    """Not by their fields: from 64 elements lanes or zstd, whichever is smaller."""
    flat = minilm_tensor().reshape(-1)
    assert encode_lossless(flat[:1000].clone(), fast=True)[0]["compression"] == "lanes"
    assert encode_lossless(flat[: FIELDS_MIN_ELEMENTS - 1].clone(), fast=True)[0][
        "compression"] == "zstd"
    assert encode_lossless(minilm_tensor(), fast=False)[0]["compression"] == "fields"


def test_a_small_tensor_keeps_its_smallest_head_width() -> None:
    t = minilm_tensor().reshape(-1)[:1000].to(torch.bfloat16)
    raw = np.frombuffer(tensor_bytes(t), np.uint8)
    sizes = [sum(map(len, encode_lanes(raw, "bfloat16", mantissa_bits=k)[1].values()))
             for k in range(3)]
    params, sections = _roundtrip(t)
    assert sum(map(len, sections.values())) == min(sizes)
    assert params["mantissa_bits"] == int(np.argmin(sizes))


# ---- versions ------------------------------------------------------------------------------

def test_version_10_only_with_a_lanes_coded_tensor(tmp_path) -> None:  # noqa: ANN001
    big, small = minilm_tensor(), minilm_tensor().reshape(-1)[:500].clone()
    fast = [encode_tensor(t, name=n, lossless=True, fast=True)
            for n, t in (("big", big), ("small", small), ("ids", torch.arange(7)))]
    slow = [encode_tensor(t, name=n, lossless=True) for n, t in (("big", big), ("small", small))]
    assert LANES_VERSION == 10 and VERSION == 20
    assert file_version([e for e, _ in fast]) == 10
    assert file_version([e for e, _ in slow]) == 8
    assert [e["params"]["compression"] for e, _ in fast] == ["lanes", "lanes", "zstd"]
    assert file_version([fast[2][0]]) == 8  # integers: zstd
    write_dna_file(tmp_path / "fast.dna", [e for e, _ in fast], [s for _, s in fast])
    write_dna_file(tmp_path / "slow.dna", [e for e, _ in slow], [s for _, s in slow])
    dna = read_dna_file(tmp_path / "fast.dna")
    assert dna.version == 10
    assert same_bits(dna.tensor("big"), big) and same_bits(dna.tensor("small"), small)
    assert torch.equal(dna.tensor("ids"), torch.arange(7))
    assert read_dna_file(tmp_path / "slow.dna").version == 8


def test_versions_before_10_cannot_hold_the_lanes_coding() -> None:
    entry, sections = encode_tensor(minilm_tensor(), name="w", lossless=True, fast=True)
    assert entry["params"]["compression"] == "lanes"
    with pytest.raises(CorruptFileError, match="version 10"):
        decode_tensor(entry, sections, version=9)
    assert same_bits(decode_tensor(entry, sections, version=10), minilm_tensor())


def test_a_version_8_file_still_reads() -> None:
    from pathlib import Path

    dna = read_dna_file(Path(__file__).parent / "data" / "fields_v8.dna")
    assert dna.version == 8
    for name in dna.names:
        assert dna.tensor(name).numel() > 0


def test_compress_lossless_writes_version_10_and_restores_every_bit(tmp_path) -> None:  # noqa: ANN001
    from safetensors.torch import save_file

    import weightdna

    tensors = {"w": minilm_tensor().to(torch.bfloat16), "b": torch.randn(300),
               "ids": torch.arange(40)}
    save_file(tensors, tmp_path / "m.safetensors")
    weightdna.compress(tmp_path / "m.safetensors", tmp_path / "m.dna", lossless=True)
    dna = read_dna_file(tmp_path / "m.dna")
    assert dna.version == 10
    assert dna.entries[dna.index("w")]["params"]["compression"] == "lanes"
    for name, t in tensors.items():
        assert same_bits(dna.tensor(name), t) if t.is_floating_point() else torch.equal(
            dna.tensor(name), t)


# ---- forged params, tables and sections: refused ---------------------------------------------

@functools.cache
def _encoded() -> tuple[dict, dict, int]:
    t = minilm_tensor()  # 147,456 elements: 9 blocks of 2^14
    params, sections = encode_lanes(np.frombuffer(tensor_bytes(t), np.uint8), "float32",
                                    1 << 14)
    return params, sections, t.numel()


def _valid() -> tuple[dict, dict, int]:
    params, sections, n = _encoded()
    return dict(params), dict(sections), n


def _decode(params: dict, sections: dict, n: int, dtype: str = "float32") -> None:
    decode_lossless(params, sections, dtype, (n,), "t", LANES_VERSION)


@pytest.mark.parametrize(("key", "value"), [
    ("mantissa_bits", 4), ("mantissa_bits", -1), ("mantissa_bits", 2.0),
    ("mantissa_bits", True), ("block", 512), ("block", 1 << 25), ("block", True),
    ("low_zstd", 1), ("low_zstd", None), ("compression", "lane"), ("extra", 1)])
def test_forged_params_are_refused(key: str, value: object) -> None:
    params, sections, n = _valid()
    with pytest.raises(CorruptFileError):
        _decode({**params, key: value}, sections, n)


@pytest.mark.parametrize(("key", "value"), [("mantissa_bits", 1), ("mantissa_bits", 3),
                                            ("block", 1 << 15), ("block", 1 << 13),
                                            ("low_zstd", "toggled")])
def test_params_that_disagree_with_the_streams_are_refused(key: str, value: object) -> None:
    params, sections, n = _valid()
    if value == "toggled":
        value = not params[key]
    with pytest.raises(CorruptFileError):
        _decode({**params, key: value}, sections, n)


def test_other_dtypes_and_counts_are_refused() -> None:
    params, sections, n = _valid()
    for dtype in ("int32", "float64", "bfloat16"):
        with pytest.raises(CorruptFileError):
            _decode(params, sections, n, dtype)
    for count in (n - 1, n + 1, n + (1 << 14), 0):
        with pytest.raises(CorruptFileError):
            _decode(params, sections, count)


@pytest.mark.parametrize("forge", ["missing", "extra", "odd words", "short words",
                                   "long words", "short low", "tables not zstd"])
def test_forged_sections_are_refused(forge: str) -> None:
    params, sections, n = _valid()
    if forge == "missing":
        del sections["low"]
    elif forge == "extra":
        sections["plane"] = b""
    elif forge == "odd words":
        sections["words"] += b"\x00"
    elif forge == "short words":
        sections["words"] = sections["words"][:-2]
    elif forge == "long words":
        sections["words"] += b"\x00\x00"
    elif forge == "short low":
        sections["low"] = sections["low"][:-1]
    else:
        sections["tables"] = decompress_bytes(sections["tables"], 2 * 1024 + 16 * 9, "t")
    with pytest.raises(CorruptFileError):
        _decode(params, sections, n)


def _tables(sections: dict) -> tuple[np.ndarray, np.ndarray]:
    raw = decompress_bytes(sections["tables"], 2 * 1024 + 16 * 9, "t")
    return (np.frombuffer(raw[:2048], "<u2").copy(), np.frombuffer(raw[2048:], "<u4").copy())


def test_a_starting_state_under_2_16_is_refused() -> None:
    params, sections, n = _valid()
    words = bytearray(sections["words"])
    words[0:4] = b"\x00\x00\x00\x00"  # block 0, state 0: high and low word zero
    with pytest.raises(CorruptFileError, match="code 3"):
        _decode(params, {**sections, "words": bytes(words)}, n)


@pytest.mark.parametrize("forge", ["sum", "too many heads", "zero", "counts moved",
                                   "counts swapped", "one state short", "all in one"])
def test_forged_tables_are_refused(forge: str) -> None:
    params, sections, n = _valid()
    freq, counts = _tables(sections)
    if forge == "sum":
        freq[np.flatnonzero(freq)[0]] += 1
    elif forge == "too many heads":
        freq[:] = 0
        freq[:512] = 8
    elif forge == "zero":
        freq[:] = 0
    elif forge == "counts moved":  # the same total, one word moved between streams
        counts[0] += 1
        counts[1] -= 1
    elif forge == "counts swapped":
        counts[[0, 4]] = counts[[4, 0]]
    elif forge == "one state short":
        counts[3] += counts[4] - 1
        counts[4] = 1
    else:
        counts[:] = 0
        counts[0] = len(sections["words"]) // 2
    sections["tables"] = compress_bytes(freq.astype("<u2").tobytes()
                                        + counts.astype("<u4").tobytes())
    with pytest.raises(CorruptFileError):
        _decode(params, sections, n)


def test_flipped_words_are_refused_or_decode_to_other_values() -> None:
    """Random damage to the words never crashes or hangs the decoder: it raises, or (a
    flip the end state cannot see) gives other values."""
    params, sections, n = _valid()
    rng = np.random.default_rng(1)
    refused = 0
    for _ in range(60):
        words = bytearray(sections["words"])
        for at in rng.integers(0, len(words), int(rng.integers(1, 4))):
            words[at] ^= 1 << int(rng.integers(0, 8))
        try:
            _decode(params, {**sections, "words": bytes(words)}, n)
        except CorruptFileError:
            refused += 1
    assert refused >= 55


def test_damaged_files_raise_weightdna_errors(tmp_path) -> None:  # noqa: ANN001
    """A lanes-coded file with bytes changed in its data area (its header's CRC still
    good) gives a WeightDNAError or other values, never a crash."""
    entry, sections = encode_tensor(minilm_tensor().reshape(-1)[:20000].clone(),
                                    name="w", lossless=True, fast=True)
    assert entry["params"]["compression"] == "lanes"
    path = tmp_path / "w.dna"
    write_dna_file(path, [entry], [sections])
    data = path.read_bytes()
    (prefix_end,) = struct.unpack("<I", data[12:16])
    start = 24 + prefix_end
    rng = np.random.default_rng(2)
    raised = 0
    for _ in range(40):
        mutant = bytearray(data)
        at = int(rng.integers(start, len(data)))
        mutant[at] ^= 1 << int(rng.integers(0, 8))
        (tmp_path / "m.dna").write_bytes(bytes(mutant))
        try:
            read_dna_file(tmp_path / "m.dna").tensor("w")
        except WeightDNAError:
            raised += 1
    assert raised > 0


# ---- issue 15, 2026-12-05: the faster coder, same bytes ----------------------------------


def test_the_encoders_quotient_is_exact_for_every_frequency() -> None:
    from weightdna.codec.lanes import PREC, _quotient

    for f in range(1, (1 << PREC) + 1):
        top = (f << (32 - PREC)) - 1  # a state is under f << 20 when it is divided
        r = 1.0 / f
        for q in sorted({0, 1, 2, 4095, (top // f) // 2, top // f - 1, top // f}):
            for x in (q * f, q * f + 1, q * f + f - 1):
                if 0 <= x <= top:
                    assert _quotient(x, r) == x // f, (x, f)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [1024, 1027, 1030])
def test_blocks_that_do_not_start_on_a_whole_plane_byte_come_back(dtype: torch.dtype,
                                                                   block: int) -> None:
    # chunks then start inside a byte of the 4-, 2- and 1-bit planes (the decoder's slow
    # path), and a block's groups of four cross its chunks' ends
    t = _special(dtype, 9001)
    for mantissa_bits in range(4 if dtype == torch.float16 else 3):
        _roundtrip(t, block=block, mantissa_bits=mantissa_bits)


DIGEST_V10 = "b5a6017e5c6ab078"


def test_the_lanes_bytes_are_those_of_format_version_10() -> None:
    # a fixed tensor's coded bytes, as the version-10 coder (da3680f) wrote them
    import hashlib

    t = _special(torch.bfloat16, 20000)
    params, sections = _roundtrip(t)
    digest = hashlib.sha256(b"".join(sections[k] for k in sorted(sections))).hexdigest()
    assert (params["mantissa_bits"], digest[:16]) == (2, DIGEST_V10)


def test_the_lossless_path_reads_the_tensor_in_place() -> None:
    from weightdna.codec.dtypes import tensor_le_array

    t = torch.randn(1000)
    array = tensor_le_array(t)
    assert array.tobytes() == tensor_bytes(t)
    if np.little_endian:
        assert array.ctypes.data == t.data_ptr()
    half = torch.randn(10, 10)[:, ::2]  # not contiguous: a copy, the same bytes
    assert tensor_le_array(half).tobytes() == tensor_bytes(half.contiguous())
