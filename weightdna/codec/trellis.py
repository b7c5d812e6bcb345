"""Dependent (trellis-coded) quantisation: two interleaved quantisers and an 8-state machine.

Scalar quantisation rounds every weight on its own to one grid. Dependent quantisation
(the scheme of VVC and of MPEG NNR / NNCodec) has two quantisers on a grid of step Δ: Q0
reconstructs the even multiples ``2k·Δ``, Q1 the odd ones and zero, ``(2k − sgn k)·Δ``.
Which one applies to a weight is set by a state machine driven by the parity of the
previous symbol (``NEXT_STATE``, the 8-state table NNCodec uses; odd states use Q1), so the
decoder follows it with no side information. The encoder picks the whole sequence of
symbols at once by a Viterbi search over the trellis, minimising ``Σ (x − level)² + λ·bits``
(x = w/Δ) with the bits taken from context models of the symbols themselves. At the same
rate this packs the reconstruction points more densely than one scalar grid: the
trellis-coded quantisation gain (at most 1.53 dB at high rate).

The trellis runs along each row of the tensor (its first axis against the rest, as the
per-row steps of `weightdna.codec.quantize`), from state 0 at the start of every row.

Symbols are entropy-coded per context: the state (or, for a small tensor, only its
quantiser: ``STATE_GROUPS``) times the class of the element's row
(rows of a weight matrix differ in scale, and the class — a quantile of the row's mean
|w|/Δ, stored per row — tells the coder which scale to expect). Each context's symbols,
in element order, form one stream, coded by `weightdna.codec.entropy`; the decoder walks
the segments and takes every symbol from the stream of its context.

The search and the decoder's walk are sequential per segment, so they are compiled with
numba (``cache=True``: compiled once per machine, then loaded).
"""

from __future__ import annotations

import numba
import numpy as np

# NEXT_STATE[state, parity of the symbol]: NNCodec's Trellis8States; odd states use Q1.
NEXT_STATE = np.array([[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]],
                      dtype=np.int64)
STATES = 8
MAX_CLASSES = 8
# The states' share of the contexts: each state its own (8), or only its quantiser (2: the
# even states and the odd ones) — four times fewer models to store for a small tensor.
STATE_GROUPS = (2, 8)
# The Lagrange multiplier of the search, in bits per unit of (error / Δ)².
DEFAULT_LAMBDA = 0.14
# The context models are learnt on a sample of segments (about this many elements) in
# two passes from a Laplace guess, the first on every few rows of the sample (about
# FIRST_PASS_ELEMENTS: its table is only the second pass's start); then the search runs
# over everything once.
SAMPLE_ELEMENTS = 1 << 18
FIRST_PASS_ELEMENTS = 1 << 16
LEARNING_PASSES = 2


@numba.njit(cache=True, nogil=True)
def _level(k: int, state: int) -> float:
    q = state & 1
    return 2.0 * k - (q * (1 if k > 0 else (-1 if k < 0 else 0)))


@numba.njit(inline="always")
def _rate(lam: float, bits: np.ndarray, lam_bits: np.ndarray, ctx: int, k: int, width: int,
          top: int) -> float:
    """λ·rate of symbol k in context ctx: the table's product in range, beyond it the edge
    symbol's bits + 1 + the distance past the edge."""
    index = k + width
    if index < 0:
        return lam * (bits[ctx, 0] + 1.0 + (-index))
    if index > top:
        return lam * (bits[ctx, top] + 1.0 + (index - top))
    return lam_bits[ctx, index]


@numba.njit(cache=True, nogil=True)
def _search(x: np.ndarray, row_class: np.ndarray, classes: int, group: np.ndarray,
            bits: np.ndarray, lam: float, next_state: np.ndarray, out: np.ndarray) -> None:
    """Viterbi search over each row of ``x`` (values in units of Δ) from state 0; the
    chosen symbols go to the same row of ``out``. The context of row b's symbols in state
    s: group[s] × classes + row_class[b].

    At each element every state s weighs up to four symbols of its quantiser (q = s & 1):
    0 and the magnitudes base − 1, base, base + 1 around |x| (those > 0), at the cost
    ``cost[s] + (|x| − level)² + λ·rate(context of s, symbol)``; the cheapest arrival at
    each next state wins, the first one on a tie (states in order, then the four symbols).
    The candidates' magnitudes and squared errors depend only on q, so they are worked
    out once per element for each quantiser (held in scalars, not arrays), and λ·rate is
    read from a table of λ × ``bits`` made once per call (the same products: the same
    costs, bit for bit, as evaluating each state's candidates on their own). The states
    are visited Q0's first (0, 2, 4, 6), then Q1's: the two states that can reach any one
    next state, s and s + 4 in NNCodec's table, share a quantiser, so each next state
    still sees its arrivals in the order of their states (`tests/test_trellis.py` checks
    the symbols, ties included, against the plain search)."""
    n, length = x.shape
    width = (bits.shape[1] - 1) // 2
    top = 2 * width
    lam_bits = lam * bits  # λ·rate of every in-range symbol, each the same product
    chosen = np.empty((length, STATES), dtype=np.int32)
    came = np.empty((length, STATES), dtype=np.int8)
    cost = np.empty(STATES)
    new_cost = np.empty(STATES)
    following = np.empty(2 * STATES, dtype=np.int64)  # [2·state + parity]
    for s in range(STATES):
        following[2 * s] = next_state[s, 0]
        following[2 * s + 1] = next_state[s, 1]
    context = np.empty(STATES, dtype=np.int64)
    for b in range(n):
        klass = row_class[b]
        for s in range(STATES):
            context[s] = group[s] * classes + klass
            cost[s] = np.inf
        cost[0] = 0.0
        for t in range(length):
            v = x[b, t]
            a = abs(v)
            sign = -1 if v < 0 else 1
            e0 = a * a  # level 0: (a − 0.0)²
            for s in range(STATES):
                new_cost[s] = np.inf
            for q in range(2):
                base = int(np.floor(a / 2.0)) if q == 0 else int(np.floor((a + 1.0) / 2.0))
                m1 = base - 1
                m2 = base
                m3 = base + 1
                level1 = 2.0 * m1 - q
                level2 = 2.0 * m2 - q
                level3 = 2.0 * m3 - q
                e1 = (a - level1) * (a - level1)
                e2 = (a - level2) * (a - level2)
                e3 = (a - level3) * (a - level3)
                k1 = sign * m1
                k2 = sign * m2
                k3 = sign * m3
                for s in range(q, STATES, 2):
                    here = cost[s]
                    if here == np.inf:
                        continue
                    ctx = context[s]
                    even = following[2 * s]
                    odd = following[2 * s + 1]
                    c = here + e0 + lam_bits[ctx, width]
                    if c < new_cost[even]:
                        new_cost[even] = c
                        came[t, even] = s
                        chosen[t, even] = 0
                    if m1 > 0:
                        c = here + e1 + _rate(lam, bits, lam_bits, ctx, k1, width, top)
                        ns = odd if m1 & 1 else even
                        if c < new_cost[ns]:
                            new_cost[ns] = c
                            came[t, ns] = s
                            chosen[t, ns] = k1
                    if m2 > 0:
                        c = here + e2 + _rate(lam, bits, lam_bits, ctx, k2, width, top)
                        ns = odd if m2 & 1 else even
                        if c < new_cost[ns]:
                            new_cost[ns] = c
                            came[t, ns] = s
                            chosen[t, ns] = k2
                    if m3 > 0:
                        c = here + e3 + _rate(lam, bits, lam_bits, ctx, k3, width, top)
                        ns = odd if m3 & 1 else even
                        if c < new_cost[ns]:
                            new_cost[ns] = c
                            came[t, ns] = s
                            chosen[t, ns] = k3
            cost, new_cost = new_cost, cost
        state = 0
        for s in range(1, STATES):
            if cost[s] < cost[state]:
                state = s
        for t in range(length - 1, -1, -1):
            out[b, t] = chosen[t, state]
            state = came[t, state]


@numba.njit(cache=True, nogil=True)
def _walk(symbols: np.ndarray, row_class: np.ndarray, classes: int, group: np.ndarray,
          next_state: np.ndarray, levels: np.ndarray, contexts: np.ndarray) -> None:
    """Follow the state machine along each row of ``symbols``: the level (units of
    Δ) and the context of every symbol."""
    n, length = symbols.shape
    for b in range(n):
        state = 0
        for t in range(length):
            k = symbols[b, t]
            contexts[b, t] = group[state] * classes + row_class[b]
            levels[b, t] = _level(k, state)
            state = next_state[state, k & 1]


@numba.njit(cache=True, nogil=True)
def _merge(streams: np.ndarray, pointer: np.ndarray, ends: np.ndarray, row_class: np.ndarray,
           classes: int, group: np.ndarray, next_state: np.ndarray, symbols: np.ndarray,
           levels: np.ndarray) -> int:
    """The decoder: walk each row of ``symbols``, taking each symbol from its
    context's stream (context c's next symbol is ``streams[pointer[c]]``, its stream ends
    at ``ends[c]``; ``pointer`` advances). Returns 0, or 1 when a stream runs short."""
    n, length = symbols.shape
    for b in range(n):
        state = 0
        for t in range(length):
            ctx = group[state] * classes + row_class[b]
            i = pointer[ctx]
            if i >= ends[ctx]:
                return 1
            pointer[ctx] = i + 1
            k = streams[i]
            symbols[b, t] = k
            levels[b, t] = _level(k, state)
            state = next_state[state, k & 1]
    return 0


@numba.njit(cache=True, nogil=True)
def _merge_float32(streams: np.ndarray, pointer: np.ndarray, ends: np.ndarray,
                   row_class: np.ndarray, classes: int, group: np.ndarray,
                   next_state: np.ndarray, steps: np.ndarray, base: np.ndarray,
                   out: np.ndarray) -> int:
    """`_merge` and the restoring formula in one pass, for a float32 tensor: each element
    is float32(float64(level) × steps[row] [+ base]) — the float64 product (and sum),
    rounded to nearest even, overflow to ±Inf, as `weightdna.codec.tensor` computes it with
    NumPy. ``base``: the prediction's rows, or an empty array for none. Returns 0, or 1
    when a stream runs short."""
    n, length = out.shape
    has_base = base.size > 0
    at = pointer.copy()  # the streams' read positions, written back at the end
    following = np.empty(2 * STATES, dtype=np.int64)  # [2·state + parity]
    for s in range(STATES):
        following[2 * s] = next_state[s, 0]
        following[2 * s + 1] = next_state[s, 1]
    context = np.empty(STATES, dtype=np.int64)  # of each state in this row
    for b in range(n):
        for s in range(STATES):
            context[s] = group[s] * classes + row_class[b]
        step = steps[b]
        state = 0
        for t in range(length):
            ctx = context[state]
            i = at[ctx]
            if i >= ends[ctx]:
                return 1
            at[ctx] = i + 1
            k = streams[i]
            value = _level(k, state) * step
            if has_base:
                value += base[b, t]
            out[b, t] = np.float32(value)
            state = following[2 * state + (k & 1)]
    pointer[:] = at
    return 0


def class_of(means: np.ndarray, classes: int) -> np.ndarray:
    """Each row's class (uint8) from its mean |x|: its quantile bin among the rows."""
    if classes <= 1 or means.size == 0:
        return np.zeros(means.size, dtype=np.uint8)
    edges = np.quantile(means, np.arange(1, classes) / classes)
    return np.searchsorted(edges, means, side="right").astype(np.uint8)


def _rate_table(symbols: np.ndarray, contexts: np.ndarray, count: int) -> np.ndarray:
    """Bits of each symbol in each context (rows), from counts with add-½ smoothing."""
    width = int(np.abs(symbols).max(initial=0)) + 1
    span = 2 * width + 1
    # One bincount over (context, symbol) pairs: the counts np.add.at gives, 20× faster.
    pairs = contexts.reshape(-1).astype(np.int64) * span + symbols.reshape(-1) + width
    counts = np.bincount(pairs, minlength=count * span).reshape(count, span).astype(np.float64)
    counts += 0.5
    return -np.log2(counts / counts.sum(axis=1, keepdims=True))


def _laplace_table(scale: float, count: int, width: int = 64) -> np.ndarray:
    k = np.abs(np.arange(-width, width + 1))
    log_p = -k / max(scale, 0.05)  # natural log, unnormalised
    log_p -= np.logaddexp.reduce(log_p)
    return np.tile(-log_p / np.log(2.0), (count, 1))


def state_groups(groups: int) -> np.ndarray:
    """Each state's group of contexts: itself (8 groups) or its quantiser (2)."""
    return np.arange(STATES, dtype=np.int64) % groups


def learn_rates(x: np.ndarray, classes: np.ndarray, n_classes: int, groups: int,
                lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """The search's rate table (bits per symbol per context), learnt on evenly spaced rows
    of (rows × columns) ``x`` (values / Δ) holding about SAMPLE_ELEMENTS elements."""
    count = groups * n_classes
    rows = x.shape[0]
    stride = max(1, x.size // SAMPLE_ELEMENTS)
    picked = np.arange(0, rows, stride)
    sample = np.ascontiguousarray(x[picked], dtype=np.float64)
    sample_classes = np.ascontiguousarray(classes[picked])
    bits = _laplace_table(float(np.mean(np.abs(sample))) / 2.0 if sample.size else 1.0, count)
    first = max(1, sample.size // FIRST_PASS_ELEMENTS)
    for learning_pass in range(LEARNING_PASSES):
        step = first if learning_pass == 0 else 1
        part = np.ascontiguousarray(sample[::step])
        part_classes = np.ascontiguousarray(sample_classes[::step])
        symbols = np.empty(part.shape, dtype=np.int32)
        _search(part, part_classes, n_classes, state_groups(groups), bits, lam, NEXT_STATE,
                symbols)
        _, contexts = reconstruct(symbols, part_classes, n_classes, groups)
        bits = _rate_table(symbols, contexts, count)
    return bits


def quantize(x: np.ndarray, classes: np.ndarray, n_classes: int, groups: int,
             bits: np.ndarray, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """Symbols (int32) of (rows × columns) ``x`` (values / Δ) chosen by the trellis search
    under the rate table ``bits`` (`learn_rates`); ``classes``: each row's class."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.int32)
    _search(x, np.ascontiguousarray(classes), n_classes, state_groups(groups), bits, lam,
            NEXT_STATE, out)
    return out


def reconstruct(symbols: np.ndarray, classes: np.ndarray, n_classes: int,
                groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(levels in units of Δ as float64, context of every symbol) of (rows × columns)
    ``symbols``."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    levels = np.empty(symbols.shape)
    contexts = np.empty(symbols.shape, dtype=np.int16)
    _walk(symbols, np.ascontiguousarray(classes), n_classes, state_groups(groups), NEXT_STATE,
          levels, contexts)
    return levels, contexts


def split_streams(symbols: np.ndarray, contexts: np.ndarray, count: int) -> list[np.ndarray]:
    """Each of the ``count`` contexts' symbols in element order (views into one array of
    ``symbols``' dtype), ``contexts`` those `reconstruct` gave: the streams the entropy coder
    codes. The encoder splits a block of rows at a time, with the contexts of the walk it
    has just made, and codes each stream's pieces back to back."""
    flat = contexts.reshape(-1)
    gathered = symbols.reshape(-1)[np.argsort(flat, kind="stable")]
    lengths = np.bincount(flat, minlength=count)
    ends = np.cumsum(lengths)
    return [gathered[end - size : end] for end, size in zip(ends, lengths, strict=True)]


class StreamReader:
    """The decoder's side of the streams: rows are restored block by block, in order, each
    symbol taken from its context's stream; ``joined`` holds the streams back to back
    (int32), ``lengths`` their sizes."""

    def __init__(self, joined: np.ndarray, lengths: np.ndarray, classes: np.ndarray,
                 n_classes: int, groups: int) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        self.ends = np.cumsum(lengths).astype(np.int64)
        self.pointer = self.ends - lengths
        self.joined = np.ascontiguousarray(joined, dtype=np.int32)
        self.classes = np.ascontiguousarray(classes)
        self.n_classes = n_classes
        self.group = state_groups(groups)

    def rows(self, start: int, stop: int, columns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(symbols int32, levels in units of Δ) of rows [start, stop); None when a stream
        runs short (a corrupt file)."""
        symbols = np.empty((stop - start, columns), dtype=np.int32)
        levels = np.empty((stop - start, columns))
        if _merge(self.joined, self.pointer, self.ends, self.classes[start:stop],
                  self.n_classes, self.group, NEXT_STATE, symbols, levels):
            return None
        return symbols, levels

    def restore_float32(self, start: int, stop: int, steps: np.ndarray,
                        base: np.ndarray | None, out: np.ndarray) -> bool:
        """Rows [start, stop) restored straight into ``out`` (float32, rows × columns):
        float32(level × steps[row] [+ base]), ``steps`` float64 per row of the block;
        False when a stream runs short (a corrupt file)."""
        empty = np.zeros((0, 0))
        return not _merge_float32(self.joined, self.pointer, self.ends,
                                  self.classes[start:stop], self.n_classes, self.group,
                                  NEXT_STATE, steps, empty if base is None else base, out)

    def exhausted(self) -> bool:
        """Every stream read to its end."""
        return bool(np.all(self.pointer == self.ends))
