"""The compiled table decoder (weightdna.codec.ans) against constriction's own: the same
symbols and the same verdict on the stream's end, on valid and on damaged streams, for
every model kind; and the decoder's float32 restore against NumPy's formula."""

from __future__ import annotations

import numpy as np
import pytest

from weightdna.codec import ans, entropy, trellis
from weightdna.codec.entropy import decode_symbols, encode_symbols
from weightdna.errors import CorruptFileError


def _constriction(model: dict, sections: dict[str, bytes], count: int) -> np.ndarray:
    """The symbols by constriction's decoder alone (the table path switched off)."""
    ratio = entropy.TABLE_DECODE_RATIO
    try:
        entropy.TABLE_DECODE_RATIO = 1 << 62
        return decode_symbols(model, sections, count)
    finally:
        entropy.TABLE_DECODE_RATIO = ratio


def _symbols(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "laplace":
        return np.rint(rng.laplace(rng.uniform(-3, 3), rng.uniform(0.3, 6), n)).astype(np.int32)
    if kind == "gaussian":
        return np.rint(rng.normal(rng.uniform(-3, 3), rng.uniform(0.3, 6), n)).astype(np.int32)
    # a skewed histogram with gaps: zero-count symbols inside the support
    values = rng.choice([-7, -2, 0, 1, 3, 11], n, p=[0.01, 0.1, 0.6, 0.2, 0.08, 0.01])
    return values.astype(np.int32)


@pytest.mark.parametrize("kind", entropy.MODEL_KINDS)
def test_table_decoder_matches_constriction(kind: str) -> None:
    rng = np.random.default_rng(3)
    for n in (40, 3000, 200_000):
        symbols = _symbols(rng, kind, n)
        model, sections = encode_symbols(symbols, kind)
        if n == 200_000:  # takes the table path
            assert n >= entropy.TABLE_DECODE_RATIO * (model["max"] - model["min"] + 1)
        assert np.array_equal(decode_symbols(model, sections, n), symbols)
        assert np.array_equal(_constriction(model, sections, n), symbols)


@pytest.mark.parametrize("kind", entropy.MODEL_KINDS)
def test_table_encoder_writes_constriction_s_bytes(kind: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream of many symbols for its support is pushed by `ans.encode_reverse`; its bytes
    must be constriction's own encoder's, pieces and chunks (the state carried) included."""
    monkeypatch.setattr(entropy, "ENCODE_CHUNK", 1000)  # several chunks per piece
    monkeypatch.setattr(entropy, "TABLE_ENCODE_CHUNK", 300)  # several calls per chunk
    rng = np.random.default_rng(7)
    for n in (5000, 60_000):
        symbols = _symbols(rng, kind, n)
        pieces = [symbols[:1234].astype(np.int8), symbols[1234:]]
        model, table_sections = encode_symbols(pieces, kind)
        assert n >= entropy.TABLE_DECODE_RATIO * (model["max"] - model["min"] + 1)
        monkeypatch.setattr(entropy, "TABLE_DECODE_RATIO", 1 << 62)  # constriction's
        assert encode_symbols(pieces, kind) == (model, table_sections)
        monkeypatch.undo()
        monkeypatch.setattr(entropy, "ENCODE_CHUNK", 1000)
        monkeypatch.setattr(entropy, "TABLE_ENCODE_CHUNK", 300)
        assert np.array_equal(decode_symbols(model, table_sections, n), symbols)


def test_probed_table_is_constriction_s_fixed_point_model() -> None:
    """Each symbol's interval, probed, is where constriction's decoder puts it: decoding
    from the state 2^48 + q lands on the symbol whose [cdf, cdf + p) holds q."""
    model = {"kind": "gaussian", "min": -9, "max": 12, "mean": 1.5, "scale": 2.5}
    coding = entropy._parametric(model)
    cdf = ans.probe_table(coding, 22, -9)
    assert cdf[0] == 0 and cdf[-1] == 1 << 24 and np.all(np.diff(cdf) > 0)
    rng = np.random.default_rng(0)
    for q in rng.integers(0, 1 << 24, 200):
        coder = entropy.constriction.stream.stack.AnsCoder(np.array([q, 1 << 16], np.uint32))
        symbol = int(coder.decode(coding, 1)[0])
        assert cdf[symbol + 9] <= q < cdf[symbol + 10]


@pytest.mark.parametrize("kind", entropy.MODEL_KINDS)
def test_damaged_streams_get_constriction_s_verdict(kind: str) -> None:
    """A flipped word or a wrong count: both decoders refuse the stream, or both give the
    same symbols (a damage that happens to decode cleanly)."""
    rng = np.random.default_rng(11)
    symbols = _symbols(rng, kind, 50_000)
    model, sections = encode_symbols(symbols, kind)
    words = np.frombuffer(sections["symbols"], "<u4").copy()
    for trial in range(30):
        damaged = words.copy()
        count = symbols.size
        if trial % 3 == 2:
            count += int(rng.integers(-3, 4)) or 1
        else:
            at = int(rng.integers(0, damaged.size))
            damaged[at] ^= np.uint32(1 << int(rng.integers(0, 32)))
        parts = dict(sections, symbols=damaged.tobytes())
        outcomes = []
        for decode in (decode_symbols, _constriction):
            try:
                outcomes.append(decode(model, parts, count))
            except CorruptFileError:
                outcomes.append(None)
        assert (outcomes[0] is None) == (outcomes[1] is None), trial
        if outcomes[0] is not None:
            assert np.array_equal(outcomes[0], outcomes[1])


def test_float32_restore_is_numpy_s_formula() -> None:
    """float32(float64(level) × step + base), one pass, against the reader's levels and
    NumPy's arithmetic, bit for bit (overflow to ±Inf included)."""
    rng = np.random.default_rng(5)
    rows, columns, classes, groups = 24, 50, 2, 8
    x = rng.laplace(0, 3, (rows, columns))
    row_class = (np.arange(rows) % classes).astype(np.uint8)
    bits = trellis.learn_rates(x, row_class, classes, groups)
    symbols = trellis.quantize(x, row_class, classes, groups, bits)
    levels, contexts = trellis.reconstruct(symbols, row_class, classes, groups)
    streams = trellis.split_streams(symbols, contexts, groups * classes)
    joined, lengths = np.concatenate(streams), [s.size for s in streams]
    steps = rng.uniform(1e-3, 1.0, rows)
    steps[3] = 3e37  # overflows float32
    base = rng.normal(0, 1, (rows, columns))
    for with_base in (None, base):
        out = np.empty((rows, columns), np.float32)
        reader = trellis.StreamReader(joined, lengths, row_class, classes, groups)
        assert reader.restore_float32(0, rows, steps, with_base, out) and reader.exhausted()
        with np.errstate(over="ignore"):
            expected = levels * steps[:, None]
            if with_base is not None:
                expected += with_base
            expected = expected.astype(np.float32)
        assert np.array_equal(out.view(np.int32), expected.view(np.int32))
    short = trellis.StreamReader(joined[:-1], [*lengths[:-1], lengths[-1] - 1], row_class,
                                 classes, groups)
    assert not short.restore_float32(0, rows, steps, None, np.empty((rows, columns), np.float32))


def test_a_computed_table_is_used_only_once_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ans.verified` accepts constriction's own table (probed) and refuses it with any one
    boundary moved by one either way; `ans.table` then falls back to probing."""
    rng = np.random.default_rng(2)
    for kind in entropy.MODEL_KINDS:
        symbols = _symbols(rng, kind, 20_000)
        model, _ = encode_symbols(symbols, kind)
        lo, hi = model["min"], model["max"]
        counts = np.bincount(symbols - lo, minlength=hi - lo + 1).astype("<u8")
        coding = (entropy.constriction.stream.model.Categorical(counts.astype(float),
                                                                 perfect=False)
                  if kind == "categorical" else entropy._parametric(model))
        first = 0 if kind == "categorical" else lo
        probed = ans.probe_table(coding, hi - lo + 1, first)
        assert ans.verified(coding, probed, first)
        assert np.array_equal(ans.computed_table(model, counts), probed)  # computed right here
        for at in range(1, hi - lo + 1):
            for delta in (-1, 1):
                moved = probed.copy()
                moved[at] += delta
                assert not ans.verified(coding, moved, first), (kind, at, delta)
        wrong = probed.copy()
        wrong[1] += 1
        monkeypatch.setattr(ans, "computed_table", lambda *_, wrong=wrong: wrong)
        assert np.array_equal(ans.table(coding, model, counts, first), probed)
        monkeypatch.undo()


def _encode_symbols_unshared(symbols: np.ndarray) -> tuple[dict, dict[str, bytes]]:
    """`encode_symbols` ("auto") as it was: each kind's fit, estimate and histogram computed
    on its own (the helpers' defaults)."""
    lo, hi = int(symbols.min()), int(symbols.max())
    counts = np.bincount(symbols - lo, minlength=hi - lo + 1).astype(np.int64)
    fitted = {kind: entropy._fit(kind, counts, lo, hi) for kind in entropy.MODEL_KINDS}
    cost = {kind: entropy._estimated_bits(fitted[kind], counts) for kind in entropy.MODEL_KINDS}
    cost["categorical"] *= 0.99
    best = min(entropy.MODEL_KINDS, key=cost.__getitem__)
    return fitted[best], entropy._encode_with(fitted[best], [symbols], counts)


@pytest.mark.parametrize("draw", ["laplace", "wide", "normal", "skewed", "short"])
def test_shared_fits_and_histogram_give_the_same_stream(draw: str) -> None:
    """encode_symbols fits every kind from one float64 copy of the counts and compresses the
    histogram once: the same model, estimates and bytes as each computed on its own (the
    draws pick categorical, Laplace and Gaussian models)."""
    rng = np.random.default_rng(7)
    symbols = {
        "laplace": lambda: np.rint(rng.laplace(0.3, 4.0, 50_000)),
        "wide": lambda: np.rint(rng.laplace(0.3, 20.0, 3_000)),  # a Laplace model wins
        "normal": lambda: np.rint(rng.normal(-1.0, 9.0, 50_000)),
        "skewed": lambda: rng.choice([-3, 0, 1, 2, 7], 30_000, p=[.05, .6, .2, .1, .05]),
        "short": lambda: np.rint(rng.normal(0.0, 2.0, 40)),
    }[draw]().astype(np.int32)
    model, sections = encode_symbols(symbols)
    assert (model, sections) == _encode_symbols_unshared(symbols)
    lo, hi = int(symbols.min()), int(symbols.max())
    counts = np.bincount(symbols - lo).astype(np.int64)
    shared = entropy._shared(counts, lo)
    for kind in entropy.MODEL_KINDS:
        fit = entropy._fit(kind, counts, lo, hi, shared)
        assert fit == entropy._fit(kind, counts, lo, hi)
        assert entropy._estimated_bits(fit, counts, shared[0], entropy._histogram(counts)) \
            == entropy._estimated_bits(fit, counts)
    decoded = decode_symbols(model, sections, symbols.size, "test")
    assert np.array_equal(decoded, symbols)


@pytest.mark.parametrize("dtype", sorted(ans.KERNEL_DTYPES, key=str))
def test_span_and_counts_kernels_are_numpy_s_min_max_and_bincount(dtype: np.dtype) -> None:
    """`ans.span` and `ans.add_counts` (encode_symbols's histogram without a widened copy)
    against NumPy on awkward arrays: the dtype's extremes, one element, all equal, strided
    and reversed views, counts added to counts already there."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(11)
    cases = [
        np.array([info.min], dtype=dtype),
        np.array([info.max, info.max, info.max], dtype=dtype),
        np.array([info.max, info.min, 0, info.min, info.max], dtype=dtype),
        np.array([1, 1, 0], dtype=dtype),  # the least last
        np.array([0, 0, 1], dtype=dtype),  # the largest last
        rng.integers(max(info.min, -300), min(info.max, 300), 5001, dtype=dtype,
                     endpoint=True),
        rng.integers(info.min, info.max, 999, dtype=dtype, endpoint=True)[::-3],
        rng.integers(0, 4, (40, 9), dtype=dtype)[:, 2],  # a strided column
    ]
    for symbols in cases:
        lo, hi = ans.span(symbols)
        assert (lo, hi) == (int(symbols.min()), int(symbols.max()))
        if hi - lo > 1 << 20:
            continue  # a histogram this wide is refused before counting (MAX_ALPHABET)
        before = rng.integers(0, 5, hi - lo + 1)
        counts = before.copy()
        ans.add_counts(symbols, lo, counts)
        expected = before + np.bincount(symbols.astype(np.int64) - lo, minlength=hi - lo + 1)
        assert np.array_equal(counts, expected)


@pytest.mark.parametrize("kind", ["auto", *entropy.MODEL_KINDS])
def test_compiled_histogram_and_narrow_pieces_give_the_same_stream(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """encode_symbols on narrow pieces through the kernels (`ans.span`, `ans.add_counts`,
    `ans.encode_reverse` on int8/int16/uint8 pieces as they are) against the NumPy path
    (no dtype taken by the kernels: min/max, widened chunks and bincount): the same model
    and bytes, on pieces of mixed dtypes and sizes, the table path and constriction's,
    one symbol, all equal, the extremes of int8."""
    rng = np.random.default_rng(5)
    draws = [
        [np.array([3], dtype=np.int8)],
        [np.full(700, -128, dtype=np.int8), np.full(5, -128, dtype=np.int16)],
        [np.array([127, -128] * 200, dtype=np.int8)],
        [np.rint(rng.normal(0, 3, 4000)).astype(np.int8),
         np.rint(rng.normal(0, 3, 1)).astype(np.int16),
         np.rint(rng.normal(1, 40, 3000)).astype(np.int16),
         rng.integers(0, 9, 2500).astype(np.uint8),
         np.rint(rng.laplace(0, 2, 6000)).astype(np.int32)[::2]],
        [np.rint(rng.laplace(-2, 1.5, 70_000)).astype(np.int8)],
    ]
    for pieces in draws:
        monkeypatch.setattr(entropy, "ENCODE_CHUNK", 1000)
        monkeypatch.setattr(entropy, "TABLE_ENCODE_CHUNK", 300)
        compiled = encode_symbols(pieces, kind)
        monkeypatch.setattr(ans, "KERNEL_DTYPES", frozenset())  # the NumPy path
        assert encode_symbols(pieces, kind) == compiled
        monkeypatch.undo()
        joined = np.concatenate([p.astype(np.int32) for p in pieces])
        assert encode_symbols(joined, kind) == compiled  # the pieces are one stream
        model, sections = compiled
        assert np.array_equal(decode_symbols(model, sections, joined.size), joined)
