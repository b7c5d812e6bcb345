"""Entropy coding of integer symbols with constriction's ANS coder.

A symbol array is coded under one of three models, each fitted to the symbols and stored
in the header (``params``) or, for the histogram, in its own section:

- ``laplace``: a quantised Laplace with fitted location and scale;
- ``gaussian``: a quantised Gaussian with fitted mean and standard deviation;
- ``categorical``: the empirical histogram itself (zstd-compressed uint64 counts);
- ``adaptive`` (format version 15): nothing stored but the range; the symbols binarised
  and their probabilities learnt along the stream (`weightdna.codec.adaptive`).

The coded bytes are what goes on disk, so the sizes reported are real, not estimates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import constriction
import numpy as np
from scipy import special

from weightdna.codec import adaptive, ans
from weightdna.codec.entries import ADAPTIVE_VERSION
from weightdna.codec.fields import is_finite_number, is_int
from weightdna.codec.quantize import MAX_SYMBOL
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError, InvalidInputError

MODEL_KINDS = ("laplace", "gaussian", "categorical")
# The kinds a file may hold: the fitted ones and, from ADAPTIVE_VERSION, the adaptive one
# (no fitted params: its mean and scale are 0).
ADAPTIVE = "adaptive"
STORED_KINDS = (*MODEL_KINDS, ADAPTIVE)
# Whether "auto" weighs the adaptive model too (chosen where its stream is smaller). Off
# by default for now: a file holding an adaptive stream is version 15, which readers before
# it refuse, and it saves 0.05–0.5% of a whole MiniLM file (BENCHMARKS.md, "Adaptive
# context models"); set it in the process that codes (workers are spawned with the
# default).
AUTO_ADAPTIVE = False
MAX_ALPHABET = 1 << 20
# constriction panics (rather than raising) on a non-positive scale; a floor this small
# still codes a constant array in almost no bits.
MIN_SCALE = 1e-3
ENCODE_CHUNK = 1 << 20  # symbols shifted (to start at 0) at a time
MAX_SCALE = 1e9
# Bits of constriction's fixed-point probabilities for these models (its default, pinned
# by the format): a symbol's probability is an integer p in [1, 2^PRECISION) over
# 2^PRECISION.
PRECISION = 24
# From format version 5 every non-empty stream is pushed onto a coder that starts in this
# state, the words [0, 1] (state 2^32), instead of an empty one, and decoding must end in it
# exactly. From an empty coder (versions 3 and 4) the model's first symbol costs nothing
# while the state is below its probability, so a stream decoded past its end keeps
# yielding that symbol and a count too large could not be told from a trailing run of it.
# From 2^32 every symbol strictly grows the state (docs/FORMAT.md, "Stream termination").
SENTINEL = (0, 1)
TERMINATED_VERSION = 5
# A pre-version-5 stream is decoded this many symbols at a time, so that one that empties
# early is noticed (its remaining symbols are the free first symbol: filled, not decoded).
LEGACY_DECODE_CHUNK = 1 << 16
# A terminated stream is decoded by `weightdna.codec.ans` (its model's table read back from
# constriction, then a compiled table decoder) when it holds at least this many symbols per
# symbol of its model's support: reading the table costs about a microsecond a symbol of
# the support, constriction's own decoder 0.05–0.2 µs a coded symbol. The symbols are the
# same either way.
TABLE_DECODE_RATIO = 32
# Symbols pushed by one call of `ans.encode_reverse` (its scratch words: 4 bytes a symbol).
TABLE_ENCODE_CHUNK = 1 << 16


def _parametric(model: dict) -> object:
    """The concrete quantised Laplace or Gaussian a model's params describe."""
    family = (
        constriction.stream.model.QuantizedLaplace
        if model["kind"] == "laplace"
        else constriction.stream.model.QuantizedGaussian
    )
    return family(model["min"], model["max"], float(model["mean"]), float(model["scale"]))


def _fit(kind: str, counts: np.ndarray, lo: int, hi: int,
         shared: tuple[np.ndarray, np.ndarray, float] | None = None) -> dict:
    """Model params of ``kind`` fitted (maximum likelihood, clamped) to the symbols whose
    histogram over ``lo..`` is ``counts``; computed from the histogram, so that a large
    tensor needs no temporary as large as itself. Integer sums in float64 are exact, so
    the figures equal those taken over the symbols themselves. ``shared``: `_shared`'s
    (symbols, counts as float64, total), computed once for all kinds (the same values)."""
    if kind == "categorical":
        return {"kind": kind, "min": lo, "max": hi, "mean": 0.0, "scale": 0.0}
    k, c, total = _shared(counts, lo) if shared is None else shared
    if kind == "laplace":
        # np.median: the middle value, or the mean of the two middle values.
        cumulative = np.cumsum(counts)
        middle = np.searchsorted(cumulative, [(counts.sum() - 1) // 2, counts.sum() // 2],
                                 side="right")
        mean = float((k[middle[0]] + k[middle[1]]) / 2)
        scale = float(np.dot(c, np.abs(k - mean)) / total)
    else:
        mean = float(np.dot(c, k) / total)
        scale = float(np.sqrt(np.dot(c, (k - mean) ** 2) / total))
    # Four significant digits: a shorter header, and no measurable cost in coded bits.
    mean = min(max(float(f"{mean:.4g}"), float(lo)), float(hi))
    scale = min(max(float(f"{scale:.4g}"), MIN_SCALE), MAX_SCALE)
    return {"kind": kind, "min": lo, "max": hi, "mean": mean, "scale": scale}


def _shared(counts: np.ndarray, lo: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The symbols lo … lo + counts.size − 1 and the counts, as float64, and their total."""
    c = counts.astype(np.float64)
    return np.arange(lo, lo + counts.size, dtype=np.float64), c, float(c.sum())


def _pieces(symbols: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """The symbols as flat integer arrays: one array, or its pieces back to back."""
    if isinstance(symbols, np.ndarray):
        return [symbols.reshape(-1)]
    return [np.asarray(piece).reshape(-1) for piece in symbols]


def _chunks(pieces: list[np.ndarray], reverse: bool = False) -> Iterator[np.ndarray]:
    """The pieces' symbols as int32 arrays of at most ENCODE_CHUNK, in order or last first:
    narrow pieces are widened a chunk at a time, never whole."""
    for piece in reversed(pieces) if reverse else pieces:
        starts = range(0, piece.size, ENCODE_CHUNK)
        for start in reversed(starts) if reverse else starts:
            yield piece[start : start + ENCODE_CHUNK].astype(np.int32, copy=False)


def _histogram(counts: np.ndarray) -> bytes:
    """A categorical stream's ``histogram`` section: its counts, zstd-compressed."""
    return compress_bytes(counts.astype("<u8").tobytes())


def _encode_with(model: dict, pieces: list[np.ndarray], counts: np.ndarray,
                 histogram: bytes | None = None) -> dict[str, bytes]:
    """``histogram``: `_histogram` (counts), when the caller has it."""
    lo = model["min"]
    sections: dict[str, bytes] = {}
    if model["kind"] == "categorical":
        coding_model = constriction.stream.model.Categorical(
            counts.astype(np.float64), perfect=False
        )
        sections["histogram"] = _histogram(counts) if histogram is None else histogram
        counts = counts.astype("<u8")
        first = 0  # Categorical's symbols are 0-based: shifted by lo
    else:
        coding_model = _parametric(model)
        first = lo
    total = sum(piece.size for piece in pieces)
    # A stack coder: chunks pushed last-first give the bytes of one reversed push, and only
    # one chunk at a time is widened to int32 (and shifted). A stream of many symbols for
    # its support is pushed by `ans.encode_reverse` from the model's table read back from
    # constriction (as it is decoded): constriction's arithmetic, the same bytes, without
    # its per-symbol CDF.
    if len(SENTINEL) == 2 and total >= TABLE_DECODE_RATIO * (model["max"] - lo + 1):
        cdf = ans.table(coding_model, model, counts, first)
        state, words = SENTINEL[1] << 32 | SENTINEL[0], []
        scratch = np.empty(min(total, TABLE_ENCODE_CHUNK), dtype=np.uint32)
        # The kernel takes the narrow pieces as they are; any other dtype widened.
        chunks = (reversed(pieces) if all(p.dtype in ans.KERNEL_DTYPES for p in pieces)
                  else _chunks(pieces, reverse=True))
        for chunk in chunks:
            for stop in range(chunk.size, 0, -TABLE_ENCODE_CHUNK):
                state, n = ans.encode_reverse(chunk[max(0, stop - TABLE_ENCODE_CHUNK) : stop],
                                              cdf, lo, np.uint64(state), scratch)
                words.append(scratch[:n].copy())
        words.append(np.array([int(state) & 0xFFFFFFFF, int(state) >> 32], dtype=np.uint32))
        sections["symbols"] = np.concatenate(words).astype("<u4", copy=False).tobytes()
        return sections
    coder = constriction.stream.stack.AnsCoder(np.array(SENTINEL, dtype=np.uint32))
    for chunk in _chunks(pieces, reverse=True):
        coder.encode_reverse(chunk - np.int32(lo - first), coding_model)
    sections["symbols"] = coder.get_compressed().astype("<u4", copy=False).tobytes()
    return sections


def encode_symbols(symbols: np.ndarray | Sequence[np.ndarray],
                   model: str = "auto") -> tuple[dict, dict[str, bytes]]:
    """Code integer ``symbols`` (flattened; or a sequence of integer arrays of any width,
    coded as one array of them back to back); returns the model params and the sections.

    ``model`` is one of STORED_KINDS or ``"auto"``: the one whose estimated size (symbols
    at their ideal cost under the model, plus its table) is smallest (the adaptive one
    weighed too while AUTO_ADAPTIVE).
    """
    if model != "auto" and model not in STORED_KINDS:
        raise InvalidInputError(f"unknown entropy model {model!r}; use auto or {STORED_KINDS}.")
    pieces = [piece for piece in _pieces(symbols) if piece.size]
    if not pieces:
        return {"kind": "laplace", "min": 0, "max": 1, "mean": 0.0, "scale": 1.0}, {"symbols": b""}
    # Compiled (`ans.span`, `ans.add_counts`: no widened copy) for the usual dtypes.
    compiled = all(p.dtype in ans.KERNEL_DTYPES for p in pieces)
    spans = ([tuple(map(int, ans.span(p))) for p in pieces] if compiled
             else [(int(p.min()), int(p.max())) for p in pieces])
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    if lo == hi:  # the quantised models need a support of two or more symbols
        lo, hi = (lo, hi + 1) if hi < MAX_SYMBOL else (lo - 1, hi)
    if hi - lo + 1 > MAX_ALPHABET or max(-lo, hi) > MAX_SYMBOL:
        raise InvalidInputError(
            f"symbols span {lo}..{hi}, beyond the coder's alphabet of {MAX_ALPHABET}; "
            "use a larger step or lossless storage."
        )
    if model == ADAPTIVE:
        return _adaptive(pieces, lo, hi)
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    if compiled:
        for piece in pieces:
            ans.add_counts(piece, lo, counts)
    else:
        for chunk in _chunks(pieces):  # no shifted copy of a large tensor
            counts += np.bincount(chunk - np.int32(lo), minlength=hi - lo + 1)
    if model != "auto":
        params = _fit(model, counts, lo, hi)
        return params, _encode_with(params, pieces, counts)
    shared, histogram = _shared(counts, lo), _histogram(counts)
    fitted = {kind: _fit(kind, counts, lo, hi, shared) for kind in MODEL_KINDS}
    cost = {kind: _estimated_bits(fitted[kind], counts, shared[0], histogram)
            for kind in MODEL_KINDS}
    # Decoding a categorical model is several times faster than a quantised Laplace or
    # Gaussian (no inverse CDF per symbol), so a parametric model must win by over 1%.
    cost["categorical"] *= 0.99
    best = min(MODEL_KINDS, key=cost.__getitem__)
    if AUTO_ADAPTIVE:
        bits, bins = adaptive.ideal_bits(pieces)
        if bits + 64 < cost[best]:  # + its final state's two words
            return _adaptive(pieces, lo, hi, bins)
    return fitted[best], _encode_with(fitted[best], pieces, counts, histogram)


def _adaptive(pieces: list[np.ndarray], lo: int, hi: int,
              bins: int | None = None) -> tuple[dict, dict[str, bytes]]:
    """The adaptive model's params and sections (``bins``: `adaptive.ideal_bits`'s)."""
    return ({"kind": ADAPTIVE, "min": lo, "max": hi, "mean": 0.0, "scale": 0.0},
            {"symbols": adaptive.encode(pieces, bins)})


def _estimated_bits(model: dict, counts: np.ndarray, symbols: np.ndarray | None = None,
                    histogram: bytes | None = None) -> float:
    """Bits the symbols with these counts cost under ``model`` (ideal coder), plus its table.
    ``symbols``: min … max as float64 (`_shared`); ``histogram``: `_histogram` (counts);
    each computed here when not given."""
    if model["kind"] == "categorical":
        total = counts.sum()
        nonzero = counts[counts > 0]
        table = 8 * len(_histogram(counts) if histogram is None else histogram)
        return float(-(nonzero * np.log2(nonzero / total)).sum()) + table
    if symbols is None:
        symbols = np.arange(model["min"], model["max"] + 1, dtype=np.float64)
    k = symbols - model["mean"]
    if model["kind"] == "laplace":
        cdf = _laplace_cdf(np.append(k - 0.5, k[-1] + 0.5), model["scale"])
    else:
        cdf = special.ndtr(np.append(k - 0.5, k[-1] + 0.5) / model["scale"])
    p = np.diff(cdf)
    p = np.maximum(p / max(p.sum(), 1e-300), 2.0**-24)  # the coder's smallest probability
    return float(-(counts * np.log2(p)).sum())


def _laplace_cdf(x: np.ndarray, scale: float) -> np.ndarray:
    return np.where(
        x < 0, 0.5 * np.exp(np.minimum(x, 0) / scale), 1 - 0.5 * np.exp(-np.maximum(x, 0) / scale)
    )


def max_probability(model: dict, counts: np.ndarray | None = None) -> int:
    """An upper bound on the largest fixed-point probability (units of 2^-PRECISION) that
    constriction gives a symbol under ``model`` (``counts``: a categorical model's histogram).

    constriction quantises "leakily": each of the K symbols of the support gets 1 plus
    floor-rounded shares of 2^PRECISION − K in proportion to its mass (a parametric model's
    tails folded into the edge symbols), so p ≤ (2^PRECISION − K)·mass + 2 and, since the
    others get at least 1 each, p ≤ 2^PRECISION − (K − 1). `tests/test_codec_fuzz.py`
    checks the bound against the probabilities read back from constriction itself.
    """
    lo, hi = model["min"], model["max"]
    support = hi - lo + 1
    free = (1 << PRECISION) - support
    if model["kind"] == "categorical":
        assert counts is not None
        largest = float(counts.max(initial=0)) / max(float(counts.sum(dtype=np.float64)), 1.0)
    else:
        k = np.arange(lo, hi + 1, dtype=np.float64) - float(model["mean"])
        edges = np.append(k - 0.5, k[-1] + 0.5)
        if model["kind"] == "laplace":
            cdf = _laplace_cdf(edges, float(model["scale"]))
        else:
            cdf = special.ndtr(edges / float(model["scale"]))
        cdf[0], cdf[-1] = 0.0, 1.0  # the tails belong to the edge symbols
        largest = float(np.diff(cdf).max())
    # + 3: the rounding (2) and one for the float error of our CDF against constriction's.
    return int(min((1 << PRECISION) - (support - 1), math.ceil(free * largest) + 3))


def max_symbols(nbytes: int, largest: int) -> int:
    """The most symbols a terminated (version 5) stream of ``nbytes`` can hold when no
    symbol's probability exceeds ``largest`` / 2^PRECISION.

    With p ≤ largest, constriction's encoder (renormalising so that the state stays ≥ 2^32
    and p·2^8 ≤ state before each symbol) multiplies the state by at least
    g = 1 + (2^PRECISION/largest − 1)·256/257 per symbol, and each word it moves out costs
    at most log2(256/255) bits of state. A stream of W words starting at state 2^32 ends
    below 2^(32·W), so n·log2(g) < 32·W − 32 + W·log2(256/255).
    """
    words = nbytes // 4
    if words < len(SENTINEL):
        return 0
    ratio = (1 << PRECISION) / largest - 1.0
    gain = math.log2(1.0 + ratio * 256 / 257) if ratio > 0 else 0.0
    room = 32.0 * words - 32.0 + words * math.log2(256 / 255)
    return math.inf if gain <= 0 else int(room / gain) + 1


def check_model_params(model: object, where: str) -> dict:
    """Validate a symbol model from a file (types, bounds); returns it."""
    keys = {"kind", "min", "max", "mean", "scale"}
    if not isinstance(model, dict) or set(model) != keys:
        raise CorruptFileError(f"{where}: the symbol model must have the keys {sorted(keys)}.")
    kind, lo, hi, mean, scale = (model[k] for k in ("kind", "min", "max", "mean", "scale"))
    if kind not in STORED_KINDS:
        raise CorruptFileError(f"{where}: unknown symbol model {kind!r}.")
    if not all(is_int(v) for v in (lo, hi)):
        raise CorruptFileError(f"{where}: the symbol range must be two integers.")
    if not (-MAX_SYMBOL <= lo < hi <= MAX_SYMBOL and hi - lo + 1 <= MAX_ALPHABET):
        raise CorruptFileError(f"{where}: symbol range {lo}..{hi} is out of bounds.")
    if not (is_finite_number(mean) and is_finite_number(scale)):
        raise CorruptFileError(f"{where}: the model's mean and scale must be finite numbers.")
    if kind == ADAPTIVE:
        if mean != 0 or scale != 0:
            raise CorruptFileError(f"{where}: an adaptive model's mean and scale are 0.")
    elif kind != "categorical" and not (lo <= mean <= hi and MIN_SCALE <= scale <= MAX_SCALE):
        raise CorruptFileError(
            f"{where}: model mean {mean} must lie in {lo}..{hi} and scale {scale} in "
            f"[{MIN_SCALE}, {MAX_SCALE}]."
        )
    return model


def decode_symbols(
    model: dict, sections: dict[str, bytes], count: int, where: str = "symbols",
    version: int = TERMINATED_VERSION, out: np.ndarray | None = None, checked: bool = False,
) -> np.ndarray:
    """Decode ``count`` symbols (int32, flat) coded by `encode_symbols`; ``version``: the
    file's format version (before 5, streams start from an empty coder: `SENTINEL`);
    ``out``: an int32 array of ``count`` to decode into (returned); ``checked``: the model
    has passed `check_model_params` already (`decode_streams`)."""
    model = model if checked else check_model_params(model, where)
    kind, lo, hi = model["kind"], model["min"], model["max"]
    expected = {"symbols", "histogram"} if kind == "categorical" else {"symbols"}
    if not expected <= set(sections):
        raise CorruptFileError(f"{where}: missing section(s) {sorted(expected - set(sections))}.")
    data = sections["symbols"]
    if len(data) % 4:
        raise CorruptFileError(f"{where}: coded symbols are {len(data)} bytes, not whole words.")
    if count == 0:
        if data:
            raise CorruptFileError(f"{where}: an empty tensor has coded symbols.")
        return np.zeros(0, dtype=np.int32)
    if kind == ADAPTIVE:
        return _decode_adaptive(model, data, count, where, version, out)
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    terminated = version >= TERMINATED_VERSION
    if terminated and (words.size < len(SENTINEL) or words[-1] == 0):
        raise CorruptFileError(f"{where}: the coded symbols are too short to hold a stream.")
    try:
        counts = None
        if kind == "categorical":
            raw = decompress_bytes(sections["histogram"], (hi - lo + 1) * 8, where)
            counts = np.frombuffer(raw, dtype="<u8")
            if int(counts.sum(dtype=np.float64)) != count or counts.sum() != count:
                raise CorruptFileError(f"{where}: the histogram does not sum to {count}.")
            coding_model = constriction.stream.model.Categorical(
                counts.astype(np.float64), perfect=False
            )
            first = 0  # Categorical's symbols are 0-based; shifted by lo below
        else:
            coding_model = _parametric(model)
            first = lo
        if terminated:
            table = None
            if count >= TABLE_DECODE_RATIO * (hi - lo + 1):
                table = ans.table(coding_model, model, counts, first)
                largest = int(np.diff(table).max())  # exact: below max_probability's bound
            else:
                largest = max_probability(model, counts)
            # Work bounded by the bytes: a count the stream cannot hold is refused unread.
            limit = max_symbols(len(data), largest)
            if count > limit:
                raise CorruptFileError(
                    f"{where}: {len(data)} bytes of coded symbols cannot hold {count} symbols "
                    f"under this model (at most {limit}).")
            if table is not None:
                symbols = np.empty(count, dtype=np.int32) if out is None else out
                return _finished(symbols, ans.decode(words, table, count, lo, symbols), count,
                                 where)
            coder = constriction.stream.stack.AnsCoder(words)
            symbols = coder.decode(coding_model, count).astype(np.int32, copy=False)
        else:
            coder = constriction.stream.stack.AnsCoder(words)
            symbols = _decode_legacy(coder, coding_model, count, first)
        finished = _at_end(coder, terminated)
        if kind == "categorical":
            symbols += np.int32(lo)  # in place: not a second array of the tensor's size
    except (CorruptFileError, KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # constriction reports bad data as a Rust panic, too
        raise CorruptFileError(f"{where}: the coded symbols cannot be decoded ({exc}).") from exc
    if out is not None:
        out[:] = symbols
        symbols = out
    return _finished(symbols, finished, count, where)


def _decode_adaptive(model: dict, data: bytes, count: int, where: str, version: int,
                     out: np.ndarray | None) -> np.ndarray:
    """`decode_symbols` of an adaptive stream (`weightdna.codec.adaptive`)."""
    if version < ADAPTIVE_VERSION:
        raise CorruptFileError(f"{where}: the adaptive symbol model is new in version "
                               f"{ADAPTIVE_VERSION}; this file is version {version}.")
    if len(data) < 8 or data[-4:] == bytes(4):
        raise CorruptFileError(f"{where}: the coded symbols are too short to hold a stream.")
    limit = adaptive.max_symbols(len(data))
    if count > limit:  # work bounded by the bytes: refused unread
        raise CorruptFileError(f"{where}: {len(data)} bytes of coded symbols cannot hold "
                               f"{count} symbols under the adaptive model (at most {limit}).")
    symbols = np.empty(count, dtype=np.int32) if out is None else out
    code = adaptive.decode(data, count, model["min"], model["max"], symbols)
    if code == 1:
        raise CorruptFileError(f"{where}: a coded symbol lies outside the model's range "
                               f"{model['min']}..{model['max']}.")
    return _finished(symbols, code == 0, count, where)


def _finished(symbols: np.ndarray, finished: bool, count: int, where: str) -> np.ndarray:
    """The decoded symbols, once the stream is known to have ended after exactly them."""
    if not finished:
        raise CorruptFileError(f"{where}: the coded symbols do not end after exactly {count} "
                               "symbols.")
    return symbols


def _at_end(coder: object, terminated: bool) -> bool:
    """Whether a coder that has decoded its stream's count is exactly at the stream's end:
    in the state `SENTINEL` with no words left (version 5), or empty (before)."""
    if not terminated:
        return bool(coder.is_empty())
    rest = coder.get_compressed()
    return rest.size == len(SENTINEL) and tuple(int(w) for w in rest) == SENTINEL


def _decode_legacy(coder: object, coding_model: object, count: int, first: int) -> np.ndarray:
    """``count`` symbols of a stream coded from an empty coder (versions 3 and 4). Once
    such a coder is empty, decoding yields the model's first symbol for ever at no cost (the
    encoder's trailing run of it took no bits), so the rest is filled with it, not decoded:
    the work is bounded by the stream's bytes. Such a file cannot show whether that run is
    the tensor's or a count too large (docs/FORMAT.md)."""
    symbols = np.empty(count, dtype=np.int32)
    done = 0
    while done < count:
        n = min(LEGACY_DECODE_CHUNK, count - done)
        symbols[done : done + n] = coder.decode(coding_model, n)
        done += n
        if done < count and coder.is_empty():
            symbols[done:] = first
            break
    return symbols


def encode_streams(streams: Iterable[np.ndarray | Sequence[np.ndarray]]
                   ) -> tuple[list[dict], dict[str, bytes]]:
    """Code several symbol streams (the contexts of `weightdna.codec.trellis`; each an array
    or its pieces, as `encode_symbols` takes them), each under its own model; returns one
    descriptor per stream (its model, symbol count and byte lengths) and the sections
    ``symbols`` and ``histogram`` holding them back to back."""
    descriptors, symbols, histograms = [], [], []
    for stream in streams:
        model, sections = encode_symbols(stream)
        histogram = sections.get("histogram", b"")
        count = sum(piece.size for piece in _pieces(stream))
        descriptors.append({"model": model, "count": int(count),
                            "bytes": len(sections["symbols"]), "histogram": len(histogram)})
        symbols.append(sections["symbols"])
        histograms.append(histogram)
    out = {"symbols": b"".join(symbols)}
    if any(histograms):
        out["histogram"] = b"".join(histograms)
    return descriptors, out


def check_stream_descriptors(descriptors: object, count: int, where: str) -> list[dict]:
    """Validate the stream descriptors of a file: ``count`` of them, each well formed."""
    keys = {"model", "count", "bytes", "histogram"}
    if not isinstance(descriptors, list) or len(descriptors) != count:
        raise CorruptFileError(f"{where}: expected {count} stream descriptors.")
    for d in descriptors:
        if not isinstance(d, dict) or set(d) != keys:
            raise CorruptFileError(f"{where}: a stream descriptor must have the keys "
                                   f"{sorted(keys)}.")
        if not all(is_int(d[k]) and d[k] >= 0
                   for k in ("count", "bytes", "histogram")):
            raise CorruptFileError(f"{where}: stream counts and lengths must be integers ≥ 0.")
        check_model_params(d["model"], where)
        if (d["model"]["kind"] == "categorical") != (d["histogram"] > 0) and d["count"]:
            raise CorruptFileError(f"{where}: only a categorical stream has a histogram.")
    return descriptors


def decode_streams(descriptors: list[dict], sections: dict[str, bytes],
                   where: str, version: int = TERMINATED_VERSION) -> np.ndarray:
    """Decode the streams `encode_streams` coded (descriptors already validated), back to
    back in one int32 array (stream i holds ``descriptors[i]["count"]`` symbols)."""
    data, histograms = sections.get("symbols", b""), sections.get("histogram", b"")
    if sum(d["bytes"] for d in descriptors) != len(data) or \
            sum(d["histogram"] for d in descriptors) != len(histograms):
        raise CorruptFileError(f"{where}: the stream lengths do not add up to the sections.")
    joined = np.empty(sum(d["count"] for d in descriptors), dtype=np.int32)
    at = hat = filled = 0
    for i, d in enumerate(descriptors):
        parts = {"symbols": data[at : at + d["bytes"]]}
        if d["model"]["kind"] == "categorical":
            parts["histogram"] = histograms[hat : hat + d["histogram"]]
        at, hat = at + d["bytes"], hat + d["histogram"]
        decode_symbols(d["model"], parts, d["count"], f"{where}, stream {i}", version,
                       out=joined[filled : filled + d["count"]], checked=True)
        filled += d["count"]
    return joined
