"""Lossless floats by their bit fields (format version 7, `weightdna.codec.floatfields`):
exact for every bit pattern, smaller than byte-plane zstd on real weights, the zstd form
kept when smaller, and every forged param or section refused."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from support import minilm_tensor, same_bits, with_special_values

from weightdna.codec import floatfields
from weightdna.codec.dtypes import tensor_bytes
from weightdna.codec.floatfields import decode_fields, encode_fields
from weightdna.codec.lossless import decode_lossless, encode_lossless, to_planes
from weightdna.codec.zstdframes import compress_bytes
from weightdna.errors import CorruptFileError

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NAME = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _special(dtype: torch.dtype) -> torch.Tensor:
    """Real weights with NaNs (payloads too), ±Inf, ±0, subnormals and the extremes."""
    return with_special_values(minilm_tensor()[:64].to(dtype).clone())


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_bit_pattern_comes_back(dtype: torch.dtype) -> None:
    t = _special(dtype)
    params, sections = encode_lossless(t)
    assert params["compression"] == "fields"
    assert same_bits(decode_lossless(params, sections, NAME[dtype], tuple(t.shape), "t"), t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_smaller_than_byte_plane_zstd_on_real_weights(dtype: torch.dtype) -> None:
    t = minilm_tensor().to(dtype)
    params, sections = encode_lossless(t)
    raw = tensor_bytes(t)
    planes = len(compress_bytes(to_planes(raw, t.element_size()), 19))
    ours = sum(map(len, sections.values()))
    assert params["compression"] == "fields" and params["top_contexts"] > 0, params
    assert ours < 0.99 * planes, (ours, planes)
    assert same_bits(decode_lossless(params, sections, NAME[dtype], tuple(t.shape), "t"), t)


def test_exact_fp16_values_in_fp32_cost_their_zero_bits() -> None:
    t = minilm_tensor()[:128].clone()
    t[:96] = t[:96].half().float()  # rows that were never updated since an fp16 start
    params, sections = encode_fields(np.frombuffer(tensor_bytes(t), np.uint8), "float32",
                                     floatfields.MIN_BLOCK)  # many blocks
    plain, _ = encode_fields(np.frombuffer(tensor_bytes(minilm_tensor()[:128]), np.uint8),
                             "float32")
    assert params["zero_bits"] == 13 and plain["zero_bits"] == 0
    assert sum(map(len, sections.values())) < 0.75 * t.numel() * 4
    assert decode_fields(params, sections, "float32", t.numel(), "t").tobytes() == tensor_bytes(t)


@pytest.mark.parametrize("tensor", [torch.zeros(5000), torch.arange(4096.0).repeat(4),
                                    torch.arange(4096.0).repeat(160),  # past the sample check
                                    torch.arange(100, dtype=torch.int32),
                                    torch.tensor([1.5] * 10)])
def test_zstd_is_kept_when_smaller(tensor: torch.Tensor) -> None:
    params, sections = encode_lossless(tensor)
    assert params["compression"] == "zstd"
    back = decode_lossless(params, sections, str(tensor.dtype).split(".")[1],
                           tuple(tensor.shape), "t")
    assert torch.equal(back, tensor)


def test_versions_before_7_cannot_hold_the_fields_coding() -> None:
    t = _special(torch.float32)
    params, sections = encode_lossless(t)
    with pytest.raises(CorruptFileError, match="version 7"):
        decode_lossless(params, sections, "float32", tuple(t.shape), "t", version=6)


# ---- forged params and sections: all refused ---------------------------------------------

@functools.cache
def _encoded() -> tuple[dict, dict, int]:
    t = minilm_tensor()  # 147,456 elements: 9 blocks, the top tables used
    params, sections = encode_fields(np.frombuffer(tensor_bytes(t), np.uint8), "float32",
                                     1 << 14)
    assert params["top_contexts"] > 0 and params["classes"] > 1
    return params, sections, t.numel()


def _valid(monkeypatch=None) -> tuple[dict, dict, int]:  # noqa: ANN001
    params, sections, n = _encoded()
    return dict(params), dict(sections), n


@pytest.mark.parametrize(("key", "value"), [
    ("mantissa_bits", 6), ("mantissa_bits", 9), ("mantissa_bits", 7.0), ("classes", 0),
    ("classes", 9), ("center", 256), ("center", -1), ("top_contexts", 257),
    ("zero_bits", 17), ("zero_bits", -1), ("block", 512), ("block", 1 << 25),
    ("block", True), ("compression", "zstd"), ("extra", 1)])
def test_forged_params_are_refused(monkeypatch, key: str, value: object) -> None:  # noqa: ANN001
    params, sections, n = _valid(monkeypatch)
    params = {**params, key: value}
    with pytest.raises(CorruptFileError):
        decode_lossless(params, sections, "float32", (n,), "t")


@pytest.mark.parametrize(("key", "delta"), [("classes", 1), ("classes", -1), ("center", 1),
                                            ("zero_bits", 3), ("block", 1024),
                                            ("top_contexts", 1)])
def test_params_that_disagree_with_the_streams_are_refused(monkeypatch, key: str,
                                                           delta: int) -> None:  # noqa: ANN001
    params, sections, n = _valid(monkeypatch)
    params = {**params, key: max(1, params[key] + delta)}
    with pytest.raises(CorruptFileError):
        decode_fields(params, sections, "float32", n, "t")


def test_forged_sections_are_refused(monkeypatch) -> None:  # noqa: ANN001
    params, sections, n = _valid(monkeypatch)
    words, plane = sections["words"], sections["plane"]
    cases = {
        "words cut": {**sections, "words": words[:-2]},
        "odd words": {**sections, "words": words + b"\x00"},
        "plane cut": {**sections, "plane": plane[:-2]},
        "plane longer": {**sections, "plane": plane + b"\x00\x00"},
        "no plane": {k: v for k, v in sections.items() if k != "plane"},
        "extra": {**sections, "more": b""},
        "tables cut": {**sections, "tables": sections["tables"][:-1]},
        "tables of another": {**sections, "tables": compress_bytes(b"\x00" * 100)},
    }
    for what, forged in cases.items():
        with pytest.raises(CorruptFileError):
            decode_fields(params, forged, "float32", n, what)
    for count in (n - 1, n + 1, 2 * n, n - params["block"]):  # the wrong element count
        with pytest.raises(CorruptFileError):
            decode_fields(params, sections, "float32", count, "count")


def _tables(params: dict, sections: dict, n: int) -> tuple[list[np.ndarray], list[int]]:
    hctx = params["classes"] * (2 if params["zero_bits"] else 1)
    nblocks = -(-n // params["block"])
    tops = 2 * params["top_contexts"] * (2 << params["mantissa_bits"])
    sizes = [512, 2 * hctx * 512, tops, 4 * nblocks, 4 * nblocks]
    raw = floatfields.decompress_bytes(sections["tables"], sum(sizes), "t")
    kinds = ["<i2", "<u2", "<u2", "<u4", "<u4"]
    parts, at = [], 0
    for size, kind in zip(sizes, kinds, strict=True):
        parts.append(np.frombuffer(raw[at : at + size], kind).copy())
        at += size
    return parts, sizes


def _with_tables(sections: dict, parts: list[np.ndarray]) -> dict:
    return {**sections, "tables": compress_bytes(b"".join(p.tobytes() for p in parts))}


@pytest.mark.parametrize("forge", ["emap", "head sum", "top sum", "block words",
                                   "block words moved", "block plane", "plane over block",
                                   "zero row"])
def test_forged_tables_are_refused(monkeypatch, forge: str) -> None:  # noqa: ANN001
    params, sections, n = _valid(monkeypatch)
    parts, _ = _tables(params, sections, n)
    emap, head, top, words, plane = parts
    if forge == "emap":
        emap[np.argmax(emap)] = params["top_contexts"]
    elif forge == "head sum":
        head[np.argmax(head)] += 1
    elif forge == "top sum":
        top[np.argmax(top)] -= 1
    elif forge == "block words":
        words[0] += 1
    elif forge == "block words moved":  # the total kept, the blocks' streams misaligned
        words[0] += 1
        words[1] -= 1
    elif forge == "block plane":
        plane[0] += 1
        plane[1] -= 1
    elif forge == "plane over block":
        plane[0] = params["block"] + 1
    else:  # the head table of the context the first element uses, emptied
        head[:] = 0
    with pytest.raises(CorruptFileError):
        decode_fields(params, _with_tables(sections, parts), "float32", n, forge)


def test_flipped_words_are_refused_or_decode_to_other_values(monkeypatch) -> None:  # noqa: ANN001
    params, sections, n = _valid(monkeypatch)
    original = decode_fields(params, sections, "float32", n, "t")
    words = bytearray(sections["words"])
    refused = 0
    rng = np.random.default_rng(0)
    for at in rng.integers(0, len(words), 40):
        forged = bytearray(words)
        forged[at] ^= 1 << int(rng.integers(8))
        try:
            back = decode_fields(params, {**sections, "words": bytes(forged)}, "float32", n, "t")
        except CorruptFileError:
            refused += 1
        else:
            assert not np.array_equal(back, original)
    assert refused >= 30  # a stream must end in its starting state, with every word used


# ---- the faster coder (issue 15): the same streams as the first one ----------------------

def _fixture_tensors() -> dict[str, torch.Tensor]:
    """What tests/data/fields_v8.dna holds: fp32 rows of spread scales, every 7th value an
    exact fp16 value, a codebook's values (top tables pay), specials; bf16 and fp16."""
    rng = np.random.default_rng(15)
    rows = np.exp(rng.normal(-3, 1.5, (68, 1))) * rng.standard_normal((68, 250))
    w = torch.from_numpy(rows.astype(np.float32))
    flat = w.reshape(-1)
    flat[::7] = flat[::7].half().float()
    book = torch.from_numpy((rng.standard_normal(24) * 0.05).astype(np.float32))
    flat[9000:] = book[torch.from_numpy(rng.integers(0, 24, flat.numel() - 9000))]
    flat[:8] = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-45, -3e-39, 1e-40])
    half = torch.from_numpy(rng.standard_normal(5000).astype(np.float32) * 0.02)
    half[2500:] = book[torch.from_numpy(rng.integers(0, 24, 2500))]
    half[:6] = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e-7, 6e-8])
    return {"f32": w, "bf16": half.to(torch.bfloat16).reshape(50, 100), "f16": half.half()}


def test_a_file_of_the_first_fields_coder_decodes_bit_for_bit() -> None:
    """tests/data/fields_v8.dna was written by the fields coder as it stood before the
    faster one (commit 001a0a8, format version 8, `encode_fields(..., block=1024)`: many
    blocks, a short last one, classes, zero bits, top tables); the new decoder gives back
    every bit, and the new encoder writes the same streams."""
    from pathlib import Path

    from weightdna.codec import read_dna_file

    dna = read_dna_file(Path(__file__).parent / "data" / "fields_v8.dna")
    assert dna.version == 8
    expected = _fixture_tensors()
    assert dna.names == list(expected)
    for name, t in expected.items():
        entry = dna.entries[dna.index(name)]
        assert entry["params"]["compression"] == "fields"
        assert same_bits(dna.tensor(name), t), name
        params, sections = encode_fields(np.frombuffer(tensor_bytes(t), np.uint8),
                                         entry["dtype"], 1024)
        assert params == entry["params"] and sections == dna.read_sections(name), name


def test_the_reciprocal_quotient_is_exact() -> None:
    """The encoder divides by a float64 reciprocal, put right by one step: exact for
    every frequency and states up to 2^32 (where a quotient is, or nearly is, whole)."""
    rng = np.random.default_rng(0)
    for f in [*range(1, 4097, 61), 4095, 4096, 3, 5, 6, 7, 2047, 2049]:
        x = np.concatenate([rng.integers(1 << 16, 1 << 32, 200),
                            (np.arange(1, 40) * ((1 << 32) // f // 40)) * f])
        x = np.concatenate([x, x - 1, x + 1, [(1 << 32) - 1]])
        x = x[(x >= 0) & (x < 1 << 32)]
        for v in x.tolist():
            assert floatfields._push(v, f, 1.0 / f, 5) == ((v // f) << 12) + v % f + 5, (v, f)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_options_counted_in_one_pass_match_a_count_per_option(dtype: str) -> None:
    t = _fixture_tensors()["f32"]
    if dtype == "bfloat16":
        t = t.to(torch.bfloat16)
    width, eb, mb = floatfields.LAYOUTS[dtype]
    v = floatfields._bits_view(np.frombuffer(tensor_bytes(t), np.uint8), width)
    joint = np.zeros((3, 8, 3, 1 << eb), dtype=np.int64)
    floatfields._joint_counts(v, 0, v.size, eb, mb, width == 32, 120, joint)
    for zero_bits in (0, 13, 16) if width == 32 else (0,):
        for classes in (1, 2, 4, 8):
            direct, _ = floatfields._counts(v, [0], v.size, eb, mb, 3, zero_bits, classes,
                                            120)
            assert np.array_equal(floatfields._option_counts(joint, eb, zero_bits, classes),
                                  direct), (zero_bits, classes)


def test_a_stream_cut_at_the_end_is_refused() -> None:
    """The last block's words cut (its count and the section alike): its stream runs to
    the end of the words, where the decoder reads no further, and is refused."""
    params, sections, n = _valid()
    parts, _ = _tables(params, sections, n)
    for cut in (1, 2, 7, int(parts[3][-1]) - 2):
        forged = [p.copy() for p in parts]
        forged[3][-1] -= cut
        with pytest.raises(CorruptFileError, match="damaged"):
            decode_fields(params, {**_with_tables(sections, forged),
                                   "words": sections["words"][: -2 * cut]}, "float32", n, "cut")


def _normalise_reference(counts: np.ndarray) -> tuple[np.ndarray, int]:
    """`_normalise` as numpy wrote it before its numba form (issue 15, 2026-12-05), and
    how many rows took the spreading path."""
    from weightdna.codec.floatfields import TOTAL

    counts = np.asarray(counts, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    scaled = np.rint(counts * (TOTAL / np.maximum(totals, 1)))
    out = np.where(counts > 0, np.maximum(1, scaled), 0).astype(np.int64)
    diff = np.where(totals[:, 0] > 0, TOTAL - out.sum(axis=1), 0)
    top = np.argmax(counts, axis=1)
    rows = np.arange(counts.shape[0])
    easy = (out[rows, top] + diff >= 1) | (diff == 0)
    out[rows[easy], top[easy]] += diff[easy]
    for r in rows[~easy]:
        order = np.argsort(-counts[r], kind="stable")
        d = int(diff[r])
        for k in order:
            take = min(-d, int(out[r, k]) - 1)
            out[r, k] -= take
            d += take
            if d == 0:
                break
    return out, int((~easy).sum())


def test_normalise_gives_the_frequencies_it_gave_in_numpy() -> None:
    from weightdna.codec.floatfields import _normalise

    rng = np.random.default_rng(15)
    rows = [np.zeros(64, np.int64), np.full(256, 7), np.arange(1024) % 3]
    for _ in range(400):  # skewed rows, ties, and many rare symbols (the spreading path)
        n = int(rng.integers(1, 1025))
        row = (rng.pareto(rng.uniform(0.3, 3.0), n) * rng.uniform(1, 1e6)).astype(np.int64)
        row[rng.random(n) < rng.uniform(0, 0.9)] = 0
        rows.append(row)
    rows.append(np.r_[10**9, np.ones(3000, np.int64)])  # 3,001 symbols: a deep spread
    hard = 0
    for row in rows:
        want, spread = _normalise_reference(row[None])
        assert np.array_equal(_normalise(row[None]), want)
        hard += spread
    block = np.stack([np.bincount(rng.integers(0, 50, 300), minlength=64) for _ in range(9)])
    assert np.array_equal(_normalise(block), _normalise_reference(block)[0])
    assert hard >= 3, hard  # the spreading path ran (4 rows with this seed)
