"""A compiled decoder for constriction's stack ANS streams (format version 5 and later).

constriction decodes a quantised Laplace or Gaussian by an inverse CDF per symbol, and
every model through one Python call per stream; a large tensor's streams are most of a
.dna file's decoding time. Here a stream's model is first read back from constriction
itself as its fixed-point table (`probe_table`: each symbol's cumulative and probability,
one symbol decoded from a chosen state per symbol of the support — exact by construction,
whatever the model's floating-point arithmetic), then the symbols are decoded by table
lookup in numba (`decode`), the same arithmetic as constriction's ``AnsCoder`` with 32-bit
words, a 64-bit state and 24-bit probabilities:

- the coder starts from the stream's last two words, the last the state's high half;
- a symbol: ``q`` = the state's low 24 bits, the symbol s with ``cdf[s] ≤ q < cdf[s+1]``,
  then state ← (state >> 24) · p(s) + q − cdf[s], and a word is taken from the end of the
  rest of the stream while the state is below 2^32 and words remain.

`weightdna.codec.entropy` uses it where probing the table costs less than it saves (a
stream of many symbols for its support); `tests/test_codec_ans.py` checks the symbols and
the end state against constriction's own decoder, on valid and on damaged streams. The
encoder's counterpart, `encode_reverse`, pushes such a stream from the same table (the
inverse arithmetic); the same test file checks its bytes against constriction's encoder.
"""

from __future__ import annotations

import math

import constriction
import numba
import numpy as np

PRECISION = 24
# Buckets of the quantile's top bits that give the symbol to start searching from.
LOOKUP_BITS = 12


def probe_table(coding_model: object, support: int, first: int) -> np.ndarray:
    """The cumulatives (int64, ``support`` + 1 of them, 0 first and 2^PRECISION last) that
    constriction's ``coding_model`` gives its symbols ``first`` … ``first + support − 1``,
    read back from constriction: one symbol s decoded from the state 2^48 + q leaves
    p(s)·2^24 + q − cdf[s], and the next probe starts at s's right end (a probe per symbol
    of the support, about a microsecond each)."""
    coder = constriction.stream.stack.AnsCoder()
    seek, decode, pos = coder.seek, coder.decode, coder.pos
    mask = (1 << PRECISION) - 1
    cdf = np.empty(support + 1, dtype=np.int64)
    q = 0
    for s in range(support):
        seek(0, (1 << 48) | q)
        if decode(coding_model) - first != s:
            raise ValueError("constriction's model did not read back as a table")
        state = pos()[1]
        cdf[s] = q - (state & mask)
        q = cdf[s] + (state >> PRECISION)
    cdf[support] = q
    if cdf[0] != 0 or q != 1 << PRECISION or np.any(np.diff(cdf) <= 0):
        raise ValueError("constriction's model did not read back as a table")
    return cdf


def verified(coding_model: object, cdf: np.ndarray, first: int) -> bool:
    """Whether ``cdf`` (as `probe_table` gives it) is exactly constriction's table for
    ``coding_model``, checked by one decode call: from the state cdf[1] (below 2^24) with
    the words cdf[K−1] … cdf[2] to refill from, each symbol s decoded at the quantile
    cdf[s] leaves the state (0 · p) + (cdf[s] − constriction's cdf[s]), so where every
    boundary is right the decoder yields 1, 2, … K−1 and refills each time from a state of 0,
    ending at 0 with no word left. A wrong boundary yields another symbol or leaves a
    state of 1 or more, which every later step keeps above 0 (the state stays ≥ 2^32, so
    the next one is ≥ 256)."""
    support = cdf.size - 1
    if support < 2 or cdf[0] != 0 or cdf[support] != 1 << PRECISION \
            or np.any(np.diff(cdf) <= 0):
        return False
    words = np.empty(support, dtype=np.uint32)
    words[: support - 2] = cdf[2:support][::-1]
    words[support - 2 :] = 1  # replaced by the seek below
    coder = constriction.stream.stack.AnsCoder(words)
    coder.seek(support - 2, int(cdf[1]))
    symbols = coder.decode(coding_model, support - 1)
    return bool(np.array_equal(symbols - first, np.arange(1, support))) and \
        tuple(coder.pos()) == (0, 0)


def computed_table(model: dict, counts: np.ndarray | None) -> np.ndarray | None:
    """constriction's table for a stream's model computed here as constriction computes it
    (float64; leaky quantisation: each symbol 1 plus its share of 2^24 − K), to be
    `verified` before use — exp and erf may differ from Rust's in the last place."""
    lo, hi = int(model["min"]), int(model["max"])
    support = hi - lo + 1
    if model["kind"] == "categorical":
        if counts is None or counts.size != support:
            return None
        weights = counts.astype(np.float64)
        kind = 0
    else:
        weights = np.zeros(0)
        kind = 1 if model["kind"] == "laplace" else 2
    table = np.empty(support + 1, dtype=np.int64)
    if not _computed(kind, lo, support, float(model["mean"]), float(model["scale"]), weights,
                     table):
        return None
    return table


@numba.njit(cache=True, nogil=True)
def _computed(kind: int, lo: int, support: int, mean: float, scale: float,
              weights: np.ndarray, table: np.ndarray) -> bool:
    """`computed_table`'s arithmetic: kind 0 categorical (``weights``: the counts), 1
    Laplace, 2 Gaussian. False where a figure is not finite."""
    free = float((1 << PRECISION) - support)
    table[0] = 0
    if kind == 0:
        total = 0.0
        for s in range(support):
            total += weights[s]
        factor = free / total
        cumulative = 0.0
        for s in range(1, support):
            cumulative += weights[s - 1]  # sequential, as Rust sums
            low = math.floor(cumulative * factor)
            if not math.isfinite(low):
                return False
            table[s] = int(low) + s
    else:
        for s in range(1, support):
            x = lo + s - 0.5 - mean
            if kind == 1:
                cdf = 0.5 * math.exp(x / scale) if x < 0 else 1.0 - 0.5 * math.exp(-x / scale)
            else:
                cdf = (1.0 + math.erf(x / (scale * math.sqrt(2.0)))) / 2.0
            low = math.floor(free * cdf)
            if not math.isfinite(low):
                return False
            table[s] = int(low) + s
    table[support] = 1 << PRECISION
    return True


def table(coding_model: object, model: dict, counts: np.ndarray | None,
          first: int) -> np.ndarray:
    """constriction's table for a stream's model: computed and verified in one decode call,
    or, where the computation missed, probed symbol by symbol."""
    guess = computed_table(model, counts)
    if guess is not None and verified(coding_model, guess, first):
        return guess
    return probe_table(coding_model, int(model["max"]) - int(model["min"]) + 1, first)


@numba.njit(cache=True, nogil=True)
def _lookup(cdf: np.ndarray) -> np.ndarray:
    """For each bucket of the quantile's top LOOKUP_BITS bits, the symbol whose interval
    holds the bucket's first quantile."""
    buckets = 1 << LOOKUP_BITS
    shift = PRECISION - LOOKUP_BITS
    out = np.empty(buckets, dtype=np.int32)
    s = 0
    for b in range(buckets):
        q = b << shift
        while cdf[s + 1] <= q:
            s += 1
        out[b] = s
    return out


@numba.njit(cache=True, nogil=True)
def decode(words: np.ndarray, cdf: np.ndarray, count: int, first: int,
           out: np.ndarray) -> bool:
    """Decode ``count`` symbols of the stream ``words`` (uint32, two or more, the last
    nonzero: the caller checks) under the table ``cdf`` into ``out`` (int32, shifted by
    ``first``); True when the coder then holds exactly the terminated stream's start, the
    state 2^32 and no word left."""
    lookup = _lookup(cdf)
    shift = PRECISION - LOOKUP_BITS
    mask = np.uint64((1 << PRECISION) - 1)
    low = np.uint64(1) << np.uint64(32)
    n = words.size
    state = (np.uint64(words[n - 1]) << np.uint64(32)) | np.uint64(words[n - 2])
    rest = n - 2
    for i in range(count):
        q = np.int64(state & mask)
        s = lookup[q >> shift]
        while cdf[s + 1] <= q:
            s += 1
        start = cdf[s]
        state = (state >> np.uint64(PRECISION)) * np.uint64(cdf[s + 1] - start) \
            + np.uint64(q - start)
        if state < low and rest > 0:
            rest -= 1
            state = (state << np.uint64(32)) | np.uint64(words[rest])
        out[i] = s + first
    return rest == 0 and state == low


# The integer dtypes `span`, `add_counts` and `encode_reverse` take as they are (no int32
# copy); numba mixes uint64 with int64 into float64, so uint64 is not among them.
KERNEL_DTYPES = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64,
                                                 np.uint8, np.uint16, np.uint32))


@numba.njit(cache=True, nogil=True)
def span(symbols: np.ndarray) -> tuple[int, int]:
    """The least and the largest of ``symbols`` (a non-empty integer array of
    KERNEL_DTYPES), as int64: ``symbols.min()`` and ``.max()`` in one pass."""
    lo = hi = np.int64(symbols[0])
    for i in range(1, symbols.size):
        s = np.int64(symbols[i])
        lo = min(lo, s)
        hi = max(hi, s)
    return lo, hi


@numba.njit(cache=True, nogil=True)
def add_counts(symbols: np.ndarray, lo: int, counts: np.ndarray) -> None:
    """``counts[s - lo] += 1`` for each of ``symbols`` (KERNEL_DTYPES; every s − lo within
    ``counts``: the caller took lo and the size from `span`): ``np.bincount`` of the
    shifted symbols added to ``counts``, without a widened and shifted copy."""
    for i in range(symbols.size):
        counts[np.int64(symbols[i]) - lo] += 1


@numba.njit(cache=True, nogil=True)
def encode_reverse(symbols: np.ndarray, cdf: np.ndarray, first: int, state: np.uint64,
                   words: np.ndarray) -> tuple[np.uint64, int]:
    """Push ``symbols`` (KERNEL_DTYPES; last first, as constriction's ``encode_reverse``)
    under the table ``cdf`` (symbol s + ``first`` at index s) onto a coder in ``state``:
    the inverse of `decode`, constriction's ``AnsCoder`` arithmetic — before a symbol of
    probability p, a word (the state's low half) moves out while the state is ≥ p ·
    2^(64 − 24); then state ← (state // p) · 2^24 + state % p + cdf[s]. The words that
    move out go to ``words`` (at least ``symbols.size`` of them), in order; returns (the
    new state, their count)."""
    shift = np.uint64(PRECISION)
    threshold_shift = np.uint64(64 - PRECISION)
    word_mask = np.uint64(0xFFFFFFFF)
    state = np.uint64(state)  # never int64 arithmetic (a caller's Python int)
    n = 0
    for i in range(symbols.size - 1, -1, -1):
        s = np.int64(symbols[i]) - first
        start = np.uint64(cdf[s])
        p = np.uint64(cdf[s + 1]) - start
        if state >= p << threshold_shift:
            words[n] = np.uint32(state & word_mask)
            n += 1
            state = state >> np.uint64(32)
        state = ((state // p) << shift) | (state % p + start)
    return state, n
