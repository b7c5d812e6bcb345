"""The ``adaptive`` symbol model (format version 15): each symbol binarised as DeepCABAC
does and every binary decision coded under a probability learnt along the stream, by
binary rANS.

The static models of `weightdna.codec.entropy` store their table (params in the header, a
histogram section); this one stores nothing but the symbol range: encoder and decoder
start from even odds and count as they go. A symbol k of a stream is the bins

- ``sig`` (k ≠ 0); then for k ≠ 0: ``sign`` (k < 0), then ``gt i`` (|k| > i) for
  i = 1 … GTX until one is 0; then for |k| > GTX the remainder r = |k| − GTX − 1 in
  Exp-Golomb(0): n = ⌊log2(r + 1)⌋ as n ``prefix j`` bins of 1 (j = 0 … n − 1) and a 0
  (none when n = MAX_PREFIX), then the n low bits of r + 1, most significant first, each
  at probability ½ (``bypass``).

Each context (sig, sign, gt 1 … GTX, prefix 0 … MAX_PREFIX − 1: CONTEXTS in all) keeps two
integer counts, ones and total, both 0 at the start; a bin's probability of a 1, in units
of 2^-PRECISION, is ``p = ((2·ones + 1) · RECIPROCAL[total]) >> (32 − PRECISION)`` with
``RECIPROCAL[t] = ⌊2^32 / (2t + 2)⌋`` (the Krichevsky–Trofimov estimate, in integers),
clamped to [P_MIN, 2^PRECISION − P_MIN]; after the bin, ones += bit, total += 1, and when
total reaches 2^HALVING both are halved, rounding up ((x + 1) >> 1). Integer arithmetic
only: every machine decodes the same bins.

The bins are coded by rANS with a 64-bit state and 32-bit words, the arithmetic of
`weightdna.codec.ans` with PRECISION bits: a 1 has the interval [0, p), a 0 [p, 2^PRECISION)
(a bypass bin p = 2^(PRECISION−1)). rANS is last-in first-out, so the encoder works out
every bin's probability walking forward, then pushes the bins last first onto a coder that
starts in the state 2^32 (`weightdna.codec.entropy.SENTINEL`); the stream is the words moved
out, in order, then the final state's low and high words. The decoder starts from the last
two words, decodes forward (taking a word from the end of the rest while the state is below
2^32) and must end in the state 2^32 with no word left (docs/FORMAT.md, "The adaptive
symbol model").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

PRECISION = 15
ONE = 1 << PRECISION
P_MIN = 32
HALVING = 12
GTX = 8
MAX_PREFIX = 20  # MAX_SYMBOL < 2^19: r + 1 ≤ 2^19, n ≤ 19
SIG, SIGN, GT = 0, 1, 2
PREFIX = GT + GTX
CONTEXTS = PREFIX + MAX_PREFIX
# Each symbol's sig bin has a probability of at most (2^PRECISION − P_MIN)/2^PRECISION, so
# it moves at least log2(2^15 / (2^15 − 32)) − 2^-16 bits (the rounding) of the decoder's
# state: a stream of W words holds at most 32·W / MIN_SYMBOL_BITS symbols.
MIN_SYMBOL_BITS = math.log2(ONE / (ONE - P_MIN)) - 2.0**-16
_LOW = np.uint64(1) << np.uint64(32)


def _reciprocals() -> np.ndarray:
    t = np.arange(1 << HALVING, dtype=np.int64)
    return ((1 << 32) // (2 * t + 2)).astype(np.int64)


RECIPROCAL = _reciprocals()


@numba.njit(inline="always")
def _probability(ones: int, total: int, reciprocal: np.ndarray) -> int:
    """The model: a context's probability of a 1 (of 2^PRECISION) after ``ones`` 1s in
    ``total`` bins, (2·ones + 1) / (2·total + 2), clamped to [P_MIN, ONE − P_MIN]."""
    p = ((2 * ones + 1) * reciprocal[total]) >> (32 - PRECISION)
    return min(max(p, P_MIN), ONE - P_MIN)


@numba.njit(inline="always")
def _counted(ones: int, total: int, bit: int) -> tuple[int, int]:
    """A context's counts after one more bin, both halved when the total reaches
    2^HALVING."""
    ones += bit
    total += 1
    if total >= 1 << HALVING:
        ones = (ones + 1) >> 1
        total = (total + 1) >> 1
    return ones, total


@numba.njit(inline="always")
def _p(counts: np.ndarray, ctx: int, reciprocal: np.ndarray) -> int:
    return _probability(counts[ctx, 0], counts[ctx, 1], reciprocal)


@numba.njit(inline="always")
def _update(counts: np.ndarray, ctx: int, bit: int) -> None:
    counts[ctx, 0], counts[ctx, 1] = _counted(counts[ctx, 0], counts[ctx, 1], bit)


@numba.njit(inline="always")
def _bin(counts: np.ndarray, ctx: int, bit: int, reciprocal: np.ndarray, probs: np.ndarray,
         bits: np.ndarray, at: int, log2: np.ndarray) -> tuple[int, float]:
    """One context-coded bin: its probability and bit stored at ``at`` (when ``probs`` is
    not empty), the context updated; returns (at + 1, its ideal bits)."""
    p = _p(counts, ctx, reciprocal)
    if probs.size > 0:
        probs[at] = p
        bits[at] = bit
    _update(counts, ctx, bit)
    return at + 1, log2[p] if bit else log2[ONE - p]


@numba.njit(inline="always")
def forward_symbol(k: int, counts: np.ndarray, sig: int, sign: int, gt: int, prefix: int,
                   reciprocal: np.ndarray, probs: np.ndarray, bits: np.ndarray, at: int,
                   log2: np.ndarray) -> tuple[int, float]:
    """One symbol's bins (see the module's docstring) under the contexts ``sig``, ``sign``,
    ``gt`` + i − 1 (gt i) and ``prefix`` + j (prefix j) of ``counts``: each bin's
    probability and bit into ``probs``/``bits`` from index ``at`` (both empty: not stored).
    Returns (the next index, the ideal bits). The one binarisation of the adaptive model:
    a stream's (`_forward`) and a trellis tensor's one coder's
    (`weightdna.codec.trellis`)."""
    store = probs.size > 0
    a = abs(k)
    at, cost = _bin(counts, sig, 1 if a != 0 else 0, reciprocal, probs, bits, at, log2)
    if a == 0:
        return at, cost
    at, c = _bin(counts, sign, 1 if k < 0 else 0, reciprocal, probs, bits, at, log2)
    cost += c
    for j in range(1, GTX + 1):
        g = 1 if a > j else 0
        at, c = _bin(counts, gt + j - 1, g, reciprocal, probs, bits, at, log2)
        cost += c
        if g == 0:
            break
    if a <= GTX:
        return at, cost
    value = a - GTX  # r + 1 ≥ 1
    n = 0
    while (value >> (n + 1)) > 0:
        n += 1
    for j in range(n):
        at, c = _bin(counts, prefix + j, 1, reciprocal, probs, bits, at, log2)
        cost += c
    if n < MAX_PREFIX:
        at, c = _bin(counts, prefix + n, 0, reciprocal, probs, bits, at, log2)
        cost += c
    for j in range(n - 1, -1, -1):
        if store:
            probs[at] = ONE >> 1
            bits[at] = (value >> j) & 1
        at += 1
        cost += 1.0
    return at, cost


@numba.njit(cache=True, nogil=True)
def _forward(symbols: np.ndarray, counts: np.ndarray, reciprocal: np.ndarray,
             probs: np.ndarray, bits: np.ndarray, at: int, log2: np.ndarray
             ) -> tuple[int, float]:
    """Walk ``symbols`` (one piece of a stream; ``counts`` carried from the piece before):
    each bin's probability of a 1 and its bit into ``probs``/``bits`` from index ``at``
    (both empty: not stored). Returns (the next index, the ideal bits: Σ −log2 of each bin's
    probability, by the table ``log2`` of −log2(p / 2^PRECISION))."""
    cost = 0.0
    for i in range(symbols.size):
        at, c = forward_symbol(np.int64(symbols[i]), counts, SIG, SIGN, GT, PREFIX,
                               reciprocal, probs, bits, at, log2)
        cost += c
    return at, cost


@numba.njit(cache=True, nogil=True)
def _push(probs: np.ndarray, bits: np.ndarray, count: int, words: np.ndarray,
          state: np.uint64) -> tuple[np.uint64, int]:
    """Push bins count − 1 … 0 onto a coder in ``state`` (2^32 at a stream's end): the
    words moved out go to ``words`` in order; returns (the final state, their count)."""
    state = np.uint64(state)  # never int64 arithmetic, whatever the caller passed
    n = 0
    mask = np.uint64(0xFFFFFFFF)
    for i in range(count - 1, -1, -1):
        p = np.uint64(probs[i])
        if bits[i]:
            start = np.uint64(0)
            freq = p
        else:
            start = p
            freq = np.uint64(ONE) - p
        if state >= freq << np.uint64(64 - PRECISION):
            words[n] = np.uint32(state & mask)
            n += 1
            state = state >> np.uint64(32)
        state = ((state // freq) << np.uint64(PRECISION)) | (state % freq + start)
    return state, n


@numba.njit(inline="always")
def _decode_at(p: np.uint64, state: np.uint64, words: np.ndarray, rest: int
               ) -> tuple[int, np.uint64, int]:
    """One bin of probability ``p`` (of a 1) decoded: (the bit, the state, the words left).
    Without a branch on the bit: a branch there is mispredicted on about every other
    bin (BENCHMARKS.md, "The trellis coder's decoder without a branch per bin")."""
    q = state & np.uint64(ONE - 1)
    one = np.uint64(q < p)
    mask = np.uint64(0) - one  # all ones for a 1, else 0
    freq = (p & mask) | ((np.uint64(ONE) - p) & ~mask)
    state = freq * (state >> np.uint64(PRECISION)) + q - (p & ~mask)
    if state < _LOW and rest > 0:
        rest -= 1
        state = (state << np.uint64(32)) | np.uint64(words[rest])
    return np.int64(one), state, rest


@numba.njit(inline="always")
def _decode_bin(counts: np.ndarray, ctx: int, reciprocal: np.ndarray, state: np.uint64,
                words: np.ndarray, rest: int) -> tuple[int, np.uint64, int]:
    """One bin decoded under the context ``ctx``, which it updates. The decoder's counts
    are packed, one int64 a context (ones · 2^32 + total, `decoder_counts`): one load and
    one store a bin; the same model (`_probability`, `_counted`) as the encoder's pairs."""
    packed = counts[ctx]
    ones, total = packed >> 32, packed & 0xFFFFFFFF
    p = _probability(ones, total, reciprocal)
    bit, state, rest = _decode_at(np.uint64(p), state, words, rest)
    ones, total = _counted(ones, total, bit)
    counts[ctx] = (ones << 32) | total
    return bit, state, rest


def decoder_counts(contexts: int) -> np.ndarray:
    """A decoder's counts of ``contexts`` contexts, all 0 (`_decode_bin`'s packing)."""
    return np.zeros(contexts, dtype=np.int64)


@numba.njit(inline="always")
def probability(counts: np.ndarray, ctx: int, reciprocal: np.ndarray) -> np.uint64:
    """The probability of a 1 of the context ``ctx`` of a decoder's packed counts
    (`decoder_counts`), `_probability`'s."""
    packed = counts[ctx]
    return np.uint64(_probability(packed >> 32, packed & 0xFFFFFFFF, reciprocal))


@numba.njit(inline="always")
def masked_bin(p: np.uint64, counts: np.ndarray, ctx: int, state: np.uint64,
                words: np.ndarray, rest: int, active: np.uint64
                ) -> tuple[np.uint64, np.uint64, int]:
    """`_decode_bin` of probability ``p`` (the context ``ctx``'s) where ``active`` (1),
    else nothing (0: the state, the words and the context's counts as they were, the bit
    0), without a branch on ``active``. The state's renormalisation needs no test of
    ``active``: an inactive bin leaves a state that is at least 2^32, or no word left."""
    q = state & np.uint64(ONE - 1)
    one = np.uint64(q < p) & active
    mask = np.uint64(0) - one  # all ones for a 1, else 0
    freq = (p & mask) | ((np.uint64(ONE) - p) & ~mask)
    moved = freq * (state >> np.uint64(PRECISION)) + q - (p & ~mask)
    keep = np.uint64(0) - active  # all ones where active
    state = (moved & keep) | (state & ~keep)
    if state < _LOW and rest > 0:
        rest -= 1
        state = (state << np.uint64(32)) | np.uint64(words[rest])
    packed = counts[ctx]
    ones, total = _counted(packed >> 32, packed & 0xFFFFFFFF, np.int64(one))
    counts[ctx] = np.int64(active) * ((ones << 32) | total) + (1 - np.int64(active)) * packed
    return one, state, rest


@numba.njit(inline="always")
def decode_symbol_at(p_sig: np.uint64, counts: np.ndarray, sig: int, sign: int, gt: int,
                     prefix: int, reciprocal: np.ndarray, state: np.uint64,
                     words: np.ndarray, rest: int) -> tuple[int, np.uint64, int]:
    """`decode_symbol` with the ``sig`` bin's probability given (``p_sig``, `probability`
    of that context now): a decoder that works it out before the symbol before it is
    known (`weightdna.codec.trellis._coder_merge_plain`) takes it off the wait of each
    symbol on the one before.

    The bins ``sig``, ``sign`` and ``gt 1`` are decoded without a branch on their bits
    (`masked_bin`: the last two do nothing after a 0): symbols of magnitude 0 or 1, most
    of them at low rates, take no branch on an unpredictable bit."""
    nonzero, state, rest = masked_bin(p_sig, counts, sig, state, words, rest, np.uint64(1))
    negative, state, rest = masked_bin(probability(counts, sign, reciprocal), counts, sign,
                                        state, words, rest, nonzero)
    more, state, rest = masked_bin(probability(counts, gt, reciprocal), counts, gt, state,
                                    words, rest, nonzero)
    a = np.int64(nonzero) + np.int64(more)
    if more:
        a, state, rest = decode_large(counts, gt, prefix, reciprocal, state, words, rest)
    return a - 2 * a * np.int64(negative), state, rest


@numba.njit(inline="always")
def decode_large(counts: np.ndarray, gt: int, prefix: int, reciprocal: np.ndarray,
                 state: np.uint64, words: np.ndarray, rest: int) -> tuple[int, np.uint64, int]:
    """The magnitude of a symbol whose ``gt 1`` bin was a 1 (it is 2 or more): its bins
    ``gt 2`` … and Exp-Golomb remainder decoded. Returns (the magnitude, the state, the
    words left)."""
    a = 2
    for j in range(2, GTX + 1):
        g, state, rest = _decode_bin(counts, gt + j - 1, reciprocal, state, words, rest)
        if g == 0:
            break
        a = j + 1
    if a > GTX:
        n_prefix = 0
        while n_prefix < MAX_PREFIX:
            one, state, rest = _decode_bin(counts, prefix + n_prefix, reciprocal, state,
                                           words, rest)
            if one == 0:
                break
            n_prefix += 1
        value = 1
        for _ in range(n_prefix):
            b, state, rest = _decode_at(np.uint64(ONE >> 1), state, words, rest)  # bypass
            value = (value << 1) | b
        a = GTX + value
    return a, state, rest


@numba.njit(inline="always")
def decode_symbol(counts: np.ndarray, sig: int, sign: int, gt: int, prefix: int,
                  reciprocal: np.ndarray, state: np.uint64, words: np.ndarray, rest: int
                  ) -> tuple[int, np.uint64, int]:
    """`forward_symbol`'s inverse: one symbol decoded under those contexts of ``counts``
    (`decoder_counts`). Returns (the symbol, the coder's state, the words left)."""
    return decode_symbol_at(probability(counts, sig, reciprocal), counts, sig, sign, gt,
                            prefix, reciprocal, state, words, rest)


@numba.njit(inline="always")
def start_state(words: np.ndarray) -> tuple[np.uint64, int]:
    """The decoder's first state (the last two words) and the words left before them."""
    n = words.size
    return (np.uint64(words[n - 1]) << np.uint64(32)) | np.uint64(words[n - 2]), n - 2


@numba.njit(inline="always")
def at_end(state: np.uint64, rest: int) -> bool:
    """Whether a decoder that has taken its symbols ends the stream: the state 2^32, no
    word left."""
    return rest == 0 and state == _LOW


@numba.njit(cache=True, nogil=True)
def _decode(words: np.ndarray, count: int, lo: int, hi: int, reciprocal: np.ndarray,
            out: np.ndarray) -> int:
    """Decode ``count`` symbols of the stream ``words`` (two or more, the caller checks)
    into ``out``. Returns 0; 1 when a symbol falls outside lo..hi; 2 when the stream does
    not end in the state 2^32 with no word left."""
    counts = np.zeros(CONTEXTS, dtype=np.int64)  # `decoder_counts`
    state, rest = start_state(words)
    for i in range(count):
        k, state, rest = decode_symbol(counts, SIG, SIGN, GT, PREFIX, reciprocal, state,
                                       words, rest)
        if k < lo or k > hi:
            return 1
        out[i] = k
    if not at_end(state, rest):
        return 2
    return 0


def _log2_table() -> np.ndarray:
    p = np.arange(ONE + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -np.log2(p / ONE)


LOG2 = _log2_table()
NO_PROBS = np.zeros(0, dtype=np.uint16)
NO_BITS = np.zeros(0, dtype=np.uint8)


def ideal_bits(pieces: Sequence[np.ndarray]) -> tuple[float, int]:
    """(the ideal bits of a stream, the pieces' symbols back to back, under this model;
    its number of bins). The rANS stream is within a few words of it."""
    counts = np.zeros((CONTEXTS, 2), dtype=np.int64)
    at, total = 0, 0.0
    for piece in pieces:
        at, cost = _forward(np.ascontiguousarray(piece).reshape(-1), counts, RECIPROCAL,
                            NO_PROBS, NO_BITS, at, LOG2)
        total += cost
    return total, at


def encode(pieces: Sequence[np.ndarray], bins: int | None = None) -> bytes:
    """The coded stream of the pieces' symbols back to back (``bins``: `ideal_bits`'s count,
    when the caller has it)."""
    if bins is None:
        bins = ideal_bits(pieces)[1]
    probs = np.empty(bins, dtype=np.uint16)
    bits = np.empty(bins, dtype=np.uint8)
    counts = np.zeros((CONTEXTS, 2), dtype=np.int64)
    at = 0
    for piece in pieces:
        at, _ = _forward(np.ascontiguousarray(piece).reshape(-1), counts, RECIPROCAL, probs,
                         bits, at, LOG2)
    return stream_bytes(probs, bits, bins)


def stream_bytes(probs: np.ndarray, bits: np.ndarray, bins: int) -> bytes:
    """The coded stream of the first ``bins`` bins (their probabilities of a 1 and bits,
    in order): pushed last first, the words moved out, then the final state's two."""
    pusher = Pusher()
    return pusher.push(probs, bits, bins) + pusher.finish()


class Pusher:
    """A coder that takes bins a piece at a time, the last piece first (each piece's bins
    in order): `push` gives the words each piece moves out, `finish` the final state's
    two; the stream is all of them in the order given. So a long stream is coded a piece
    at a time, never holding every bin's probability at once."""

    def __init__(self) -> None:
        self.state = _LOW

    def push(self, probs: np.ndarray, bits: np.ndarray, bins: int) -> bytes:
        """The words moved out by the first ``bins`` bins of a piece, pushed last first."""
        # A bin grows the state by at most 10 bits (p ≥ P_MIN = 2^-10 of 2^PRECISION), so
        # at most one word moves out per 3 bins (numba does not check the index: keep it so).
        words = np.empty(bins // 3 + 16, dtype=np.uint32)
        # numba gives a uint64 back as a Python int: passed on as np.uint64 again (an int
        # would compile the int64 version).
        state, n = _push(probs, bits, bins, words, np.uint64(self.state))
        self.state = np.uint64(state)
        return words[:n].astype("<u4", copy=False).tobytes()

    def finish(self) -> bytes:
        state = int(self.state)
        return np.array([state & 0xFFFFFFFF, state >> 32], dtype="<u4").tobytes()


def max_symbols(nbytes: int) -> int:
    """The most symbols a stream of ``nbytes`` can hold (each moves at least
    MIN_SYMBOL_BITS of the decoder's state, which starts below 2^64 and ends at 2^32)."""
    words = nbytes // 4
    if words < 2:
        return 0
    return int(32.0 * (words - 1) / MIN_SYMBOL_BITS) + 1


def decode(data: bytes, count: int, lo: int, hi: int, out: np.ndarray) -> int:
    """Decode ``count`` symbols of a stream (``data``: whole words, two or more, the last
    nonzero, and ``count`` ≤ `max_symbols`: the caller checks) into ``out`` (int32). Returns
    `_decode`'s code: 0 done, 1 a symbol outside lo..hi, 2 a stream not ending there."""
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    return int(_decode(words, count, lo, hi, RECIPROCAL, out))
