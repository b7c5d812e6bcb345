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

From format version 19 the machine may have 16, 32 or 64 states (``TABLES``, `dq_table`:
Ungerboeck's rate-1/2 codes, NNCodec's table among them; a state's quantiser is its low
bit): more states pack the points more densely (BENCHMARKS.md, "More trellis states").
Their contexts are those of the state mod 8, so the models' layout stays that of 8 states;
the search over any table is `_search_any`, NNCodec's keeps its own kernel (`_search`).

Symbols are entropy-coded per context: the state (or, for a small tensor, only its
quantiser: ``STATE_GROUPS``) times the class of the element's row
(rows of a weight matrix differ in scale, and the class — a quantile of the row's mean
|w|/Δ, stored per row — tells the coder which scale to expect). Each context's symbols,
in element order, form one stream, coded by `weightdna.codec.entropy`; the decoder walks
the segments and takes every symbol from the stream of its context. From format version
17 a tensor's symbols may instead be coded in element order by one adaptive coder
(`coder_encode`, `CoderReader`: `weightdna.codec.adaptive`'s bins under contexts of the
state, the row class and the neighbours), chosen per tensor where it is smaller
(`weightdna.codec.tensor`).

The search and the decoder's walk are sequential per segment, so they are compiled with
numba (``cache=True``: compiled once per machine, then loaded).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from weightdna.codec import adaptive

# NEXT_STATE[state, parity of the symbol]: NNCodec's Trellis8States; odd states use Q1.
NEXT_STATE = np.array([[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]],
                      dtype=np.int64)
# The states of NNCodec's table, and the states the contexts tell apart with any table (a
# state s of a larger one has the contexts of s mod 8: the same quantiser).
STATES = 8


def dq_table(nu: int, h1: int, h0: int, swap: bool = False) -> np.ndarray:
    """NEXT_STATE[2^ν, 2] of Ungerboeck's rate-1/2 code with parity-check polynomials
    (h1, h0) in the observer form of its systematic feedback encoder: a state is ν bits
    s_1 … s_ν (s_1 its bit 0), its quantiser is s_1 (z0), the parity of the symbol is z1
    (``swap``: z1 = 1 − parity in Q1's states), and the next state is
    s'_j = s_{j+1} ⊕ h0_j·z0 ⊕ h1_j·z1 (s_{ν+1} = 0), h_j the coefficient of D^j.
    ``dq_table(3, 0o4, 0o13, True)`` is NNCodec's table, NEXT_STATE."""
    table = np.empty((1 << nu, 2), dtype=np.int64)
    for state in range(1 << nu):
        bits = [(state >> j) & 1 for j in range(nu)] + [0]
        z0 = bits[0]
        for parity in (0, 1):
            z1 = parity ^ (z0 & int(swap))
            table[state, parity] = sum(
                (bits[j] ^ (((h0 >> j) & 1) & z0) ^ (((h1 >> j) & 1) & z1)) << (j - 1)
                for j in range(1, nu + 1))
    return table


# The tables by their number of states (format version 19: the trellis model's "states",
# absent = 8): NNCodec's, and the codes (h1, h0) of 16, 32 and 64 states whose granular
# gain at high rate is the largest of the codes with h1_1 = 0 (a state's two successors use
# one quantiser, as NNCodec's; bench/trellis_states.py --tables: 1.16, 1.22 and 1.27 dB
# against NNCodec's 1.09).
TABLES = {8: NEXT_STATE, 16: dq_table(4, 0o10, 0o23), 32: dq_table(5, 0o24, 0o43, True),
          64: dq_table(6, 0o54, 0o135, True)}
STATE_COUNTS = tuple(TABLES)
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
# The search's rate table reaches symbols of this magnitude at most (beyond the learnt
# table's own width): a call with larger values keeps the learnt width, and its elements
# past it have their rates worked out one by one.
FAR_SYMBOLS = 1 << 12


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


@numba.njit(inline="always")
def _candidates(a: float, sign: int, q: int, reach: int, errors: np.ndarray) -> tuple:
    """The nonzero candidates of quantiser q for |x| = a: magnitudes base − 1, base, base + 1
    (those > 0), sorted by the parity of their symbol. Returns (error, index) of the even
    ones, which follow symbol 0 (S1, S2), and of the odd ones (O1, O2), each pair in the
    order of its magnitudes, and last base + 1 (the largest magnitude); an index is the
    symbol + ``reach``, a missing candidate has error inf and the index of symbol 0.
    ``errors``: 4 float64 of scratch, errors[0] = inf. The choices are made by arithmetic
    on the parity, not branches (the parity of real weights is unpredictable)."""
    base = int(np.floor(a / 2.0)) if q == 0 else int(np.floor((a + 1.0) / 2.0))
    m1 = base - 1
    m2 = base
    m3 = base + 1
    level1 = 2.0 * m1 - q
    level2 = 2.0 * m2 - q
    level3 = 2.0 * m3 - q
    errors[1] = (a - level1) * (a - level1)
    errors[2] = (a - level2) * (a - level2)
    errors[3] = (a - level3) * (a - level3)
    i1 = sign * m1 + reach
    i2 = sign * m2 + reach
    i3 = sign * m3 + reach
    odd = m1 & 1  # m1 and m3 odd, m2 even; or the other way round
    even = 1 - odd
    valid1 = np.int64(m1 > 0)
    valid2 = np.int64(m2 > 0)
    # slots of ``errors``: 0 none (inf), 1..3 the magnitudes m1..m3
    return (errors[even * valid1 + odd * 2 * valid2], even * i1 + odd * i2,
            errors[even * 3], even * i3 + odd * reach,
            errors[even * 2 * valid2 + odd * valid1], even * i2 + odd * i1,
            errors[odd * 3], even * reach + odd * i3, m3)


@numba.njit(inline="always")
def _arrivals(here: float, e0: float, table: np.ndarray, s: int, zero: int, es1: float,
              is1: int, es2: float, is2: int, eo1: float, io1: int, eo2: float,
              io2: int) -> tuple:
    """State s's cheapest arrival by an even symbol (0, S1, S2: slot 0, 1 or 2) and by an
    odd one (O1, O2: slot 3 or 4), the first on a tie; λ·rate read from ``table`` (row:
    the symbol's index, column: s)."""
    even = here + e0 + table[zero, s]
    even_slot = 0
    c = here + es1 + table[is1, s]
    if c < even:
        even = c
        even_slot = 1
    c = here + es2 + table[is2, s]
    if c < even:
        even = c
        even_slot = 2
    odd = here + eo1 + table[io1, s]
    odd_slot = 3
    c = here + eo2 + table[io2, s]
    if c < odd:
        odd = c
        odd_slot = 4
    return even, even_slot, odd, odd_slot


@numba.njit(inline="always")
def _pick(first: float, first_slot: int, first_state: int, second: float, second_slot: int,
          second_state: int) -> tuple:
    """The cheaper of two arrivals at a state, the first on a tie: (cost, slot × 8 +
    the state it came from)."""
    if second < first:
        return second, np.int8(second_slot * 8 + second_state)
    return first, np.int8(first_slot * 8 + first_state)


@numba.njit(inline="always")
def _far_rates(table: np.ndarray, at: int, lam: float, bits: np.ndarray, lam_bits: np.ndarray,
               context: np.ndarray, q: int, reach: int, width: int, top: int, is1: int,
               is2: int, io1: int, io2: int) -> None:
    """Rows at..at + 4 of ``table``, for quantiser q's states: the rates of symbol 0 and
    of S1, S2, O1, O2 (indices − ``reach``), for an element beyond the table's reach."""
    for s in range(q, STATES, 2):
        ctx = context[s]
        table[at, s] = lam_bits[ctx, width]
        table[at + 1, s] = _rate(lam, bits, lam_bits, ctx, is1 - reach, width, top)
        table[at + 2, s] = _rate(lam, bits, lam_bits, ctx, is2 - reach, width, top)
        table[at + 3, s] = _rate(lam, bits, lam_bits, ctx, io1 - reach, width, top)
        table[at + 4, s] = _rate(lam, bits, lam_bits, ctx, io2 - reach, width, top)


@numba.njit(cache=True, nogil=True)
def _reach(x: np.ndarray, width: int) -> int:
    """The largest |symbol| a search's λ·rate table holds for values ``x`` (values / Δ)
    under a learnt table of ``width``: the largest magnitude either quantiser can give
    them (base + 1), below FAR_SYMBOLS; at least ``width`` and 1."""
    largest = 0.0
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            a = abs(x[b, t])
            if a > largest:
                largest = a
    reach = max(width, 1)
    if largest < 2.0 * FAR_SYMBOLS:
        reach = max(reach, int(np.floor((largest + 1.0) / 2.0)) + 1)
    return reach


@numba.njit(cache=True, nogil=True)
def _search(x: np.ndarray, row_class: np.ndarray, classes: int, group: np.ndarray,
            bits: np.ndarray, lam: float, out: np.ndarray, levels: np.ndarray,
            contexts: np.ndarray) -> None:
    """Viterbi search over each row of ``x`` (values in units of Δ) from state 0; the
    chosen symbols go to the same row of ``out``. The context of row b's symbols in state
    s: group[s] × classes + row_class[b]. Unless empty, ``levels`` and ``contexts`` get
    what `_walk` would give of the symbols, from the search's own path (the states the
    walk follows).

    At each element every state s weighs up to four symbols of its quantiser (q = s & 1):
    0 and the magnitudes base − 1, base, base + 1 around |x| (those > 0), at the cost
    ``cost[s] + (|x| − level)² + λ·rate(context of s, symbol)``; the cheapest arrival at
    each next state wins, the first one on a tie (states in order, then the four symbols).

    The same costs, bit for bit, and the same choices as evaluating the candidates one by
    one (`tests/test_trellis.py` checks the symbols, ties included, against the plain
    search and against the previous kernel), arranged for speed:

    - NNCodec's table (`NEXT_STATE`) is written into the code: states s and s + 4 (one
      quantiser) both reach NEXT_STATE[s] — s by an even symbol where s + 4 by an odd one,
      and the other way round — and nothing else does. So each state's candidates are
      reduced to its cheapest even and cheapest odd arrival (`_arrivals`, in symbol order),
      and each next state picks the first of its two (`_pick`, s before s + 4): the order
      of the plain search. The eight costs are local variables, not an array.
    - The candidates of a quantiser are worked out once per element for its four states
      (`_candidates`), sorted by parity by arithmetic, not branches.
    - λ·rate is read from a table made once per call: for each row class, the rate of every
      symbol in each state's context, states side by side (one cache line per symbol), out
      to the largest symbol the call's values can take (the learnt table's range, extended
      by `_rate`'s own formula). Values beyond ``FAR_SYMBOLS`` leave the table at the
      call's own width, and an element past it has its rates worked out by `_rate` into
      five spare rows (`_far_rates`).
    - The path is kept as one byte per state and element (the slot and the state it came
      from); the way back works out the symbol of the slot again (`_candidates`), picked
      from a small array by the slot, not by branches."""
    n, length = x.shape
    width = (bits.shape[1] - 1) // 2
    top = 2 * width
    lam_bits = lam * bits  # λ·rate of every in-range symbol, each the same product
    reach = _reach(x, width)  # the table's symbols: -reach..reach
    span = 2 * reach + 1
    tables = np.empty((classes, span + 5, STATES))  # [class, symbol + reach, state]
    for klass in range(classes):
        for s in range(STATES):
            ctx = group[s] * classes + klass
            for i in range(span):
                tables[klass, i, s] = _rate(lam, bits, lam_bits, ctx, i - reach, width, top)
    context = np.empty(STATES, dtype=np.int64)
    errors = np.empty(4)
    errors[0] = np.inf
    came = np.empty((length, STATES), dtype=np.int8)  # slot × 8 + previous state
    indices = np.empty(5, dtype=np.int64)  # of the slots, on the way back
    indices[0] = reach  # slot 0: symbol 0
    walk = contexts.size > 0
    restore = levels.size > 0
    for b in range(n):
        klass = row_class[b]
        table = tables[klass]
        for s in range(STATES):
            context[s] = group[s] * classes + klass
        c0 = 0.0
        c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.inf
        for t in range(length):
            v = x[b, t]
            a = abs(v)
            sign = -1 if v < 0 else 1
            e0 = a * a  # level 0: (a − 0.0)²
            # Q0: states 0, 2, 4, 6, reaching 0..3
            es1, is1, es2, is2, eo1, io1, eo2, io2, m3 = _candidates(a, sign, 0, reach, errors)
            zero = reach
            if m3 > reach:
                _far_rates(table, span, lam, bits, lam_bits, context, 0, reach, width, top, is1,
                           is2, io1, io2)
                zero, is1, is2, io1, io2 = span, span + 1, span + 2, span + 3, span + 4
            even0, j0, odd0, k0 = _arrivals(c0, e0, table, 0, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            even4, j4, odd4, k4 = _arrivals(c4, e0, table, 4, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            even2, j2, odd2, k2 = _arrivals(c2, e0, table, 2, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            even6, j6, odd6, k6 = _arrivals(c6, e0, table, 6, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            # Q1: states 1, 3, 5, 7, reaching 4..7
            es1, is1, es2, is2, eo1, io1, eo2, io2, m3 = _candidates(a, sign, 1, reach, errors)
            zero = reach
            if m3 > reach:
                _far_rates(table, span, lam, bits, lam_bits, context, 1, reach, width, top, is1,
                           is2, io1, io2)
                zero, is1, is2, io1, io2 = span, span + 1, span + 2, span + 3, span + 4
            even1, j1, odd1, k1 = _arrivals(c1, e0, table, 1, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            even5, j5, odd5, k5 = _arrivals(c5, e0, table, 5, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            even3, j3, odd3, k3 = _arrivals(c3, e0, table, 3, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            even7, j7, odd7, k7 = _arrivals(c7, e0, table, 7, zero, es1, is1, es2, is2, eo1,
                                            io1, eo2, io2)
            # NEXT_STATE[s] = (even target, odd target); NEXT_STATE[s + 4] the reverse
            c0, came[t, 0] = _pick(even0, j0, 0, odd4, k4, 4)
            c2, came[t, 2] = _pick(odd0, k0, 0, even4, j4, 4)
            c1, came[t, 1] = _pick(even2, j2, 2, odd6, k6, 6)
            c3, came[t, 3] = _pick(odd2, k2, 2, even6, j6, 6)
            c7, came[t, 7] = _pick(even1, j1, 1, odd5, k5, 5)
            c5, came[t, 5] = _pick(odd1, k1, 1, even5, j5, 5)
            c6, came[t, 6] = _pick(even3, j3, 3, odd7, k7, 7)
            c4, came[t, 4] = _pick(odd3, k3, 3, even7, j7, 7)
        state = 0
        best = c0
        for s, c in ((1, c1), (2, c2), (3, c3), (4, c4), (5, c5), (6, c6), (7, c7)):
            if c < best:
                best = c
                state = s
        for t in range(length - 1, -1, -1):
            code = came[t, state]
            state = code & 7
            slot = code >> 3
            v = x[b, t]
            found = _candidates(abs(v), -1 if v < 0 else 1, state & 1, reach, errors)
            indices[1] = found[1]
            indices[2] = found[3]
            indices[3] = found[5]
            indices[4] = found[7]
            k = indices[slot] - reach
            out[b, t] = k
            if walk:
                contexts[b, t] = context[state]
            if restore:
                levels[b, t] = _level(k, state)


@numba.njit(cache=True, nogil=True)
def _search_any(x: np.ndarray, row_class: np.ndarray, classes: int, group: np.ndarray,
                next_state: np.ndarray, bits: np.ndarray, lam: float, out: np.ndarray,
                levels: np.ndarray, contexts: np.ndarray) -> None:
    """`_search` over any table ``next_state`` (up to 64 states; a state's quantiser: its
    low bit; a state's two successors distinct, each state reached from two), ``group``
    each state's group of contexts: the same costs and the same choices as the plain
    search (every state weighs 0 and the magnitudes base − 1, base, base + 1 (> 0) of its
    quantiser; the cheapest arrival at each next state wins, the first on a tie: states in
    order, then the four symbols), arranged as `_search` is for NNCodec's table, from the
    table rather than written into the code:

    - each quantiser's candidates are worked out once per element, only the valid ones,
      split by the parity of their symbol (symbol 0 first among the even ones);
    - each state's candidates are reduced to its cheapest even and its cheapest odd
      arrival (the first on a tie, in symbol order), and each next state takes the
      cheaper of its two arrivals, the one from the lower state on a tie;
    - λ·rate is read from a table made once per call out to the largest symbol the values
      can take below FAR_SYMBOLS, and worked out by `_rate` beyond it;
    - the path is one byte per state and element: the slot (0: symbol 0, 1..3: the
      magnitudes base − 1 … base + 1) × 64 + the state it came from."""
    n, length = x.shape
    count = next_state.shape[0]
    width = (bits.shape[1] - 1) // 2
    top = 2 * width
    lam_bits = lam * bits
    reach = _reach(x, width)
    span = 2 * reach + 1
    tables = np.empty((classes, count, span))  # [class, state, symbol + reach]
    for klass in range(classes):
        for s in range(count):
            ctx = group[s] * classes + klass
            for i in range(span):
                tables[klass, s, i] = _rate(lam, bits, lam_bits, ctx, i - reach, width, top)
    # the two arrivals at each state, the lower state first: index 2·state + parity
    into = np.empty((count, 2), dtype=np.int64)
    seen = np.zeros(count, dtype=np.int64)
    for s in range(count):
        for parity in range(2):
            target = next_state[s, parity]
            into[target, seen[target]] = 2 * s + parity
            seen[target] += 1
    context = np.empty(count, dtype=np.int64)
    cost = np.empty(count)
    arrival = np.empty(2 * count)  # [2·state + parity]: the state's cheapest of that parity
    slot_of = np.empty(2 * count, dtype=np.int64)
    came = np.empty((length, count), dtype=np.uint8)
    # [quantiser, parity, i]: the valid candidates' errors, symbols and slots
    errors = np.empty((2, 2, 3))
    symbol = np.empty((2, 2, 3), dtype=np.int64)
    slots = np.empty((2, 2, 3), dtype=np.int64)
    found = np.empty((2, 2), dtype=np.int64)
    walk = contexts.size > 0
    restore = levels.size > 0
    for b in range(n):
        klass = row_class[b]
        table = tables[klass]
        for s in range(count):
            context[s] = group[s] * classes + klass
            cost[s] = np.inf
        cost[0] = 0.0
        for t in range(length):
            v = x[b, t]
            a = abs(v)
            sign = -1 if v < 0 else 1
            for q in range(2):
                base = int(np.floor(a / 2.0)) if q == 0 else int(np.floor((a + 1.0) / 2.0))
                errors[q, 0, 0] = a * a
                symbol[q, 0, 0] = 0
                slots[q, 0, 0] = 0
                found[q, 0] = 1
                found[q, 1] = 0
                for j in range(1, 4):
                    m = base - 2 + j
                    if m > 0:
                        level = 2.0 * m - q
                        parity = m & 1
                        i = found[q, parity]
                        errors[q, parity, i] = (a - level) * (a - level)
                        symbol[q, parity, i] = sign * m
                        slots[q, parity, i] = j
                        found[q, parity] = i + 1
            for s in range(count):
                here = cost[s]
                q = s & 1
                rates = table[s]
                for parity in range(2):
                    best = np.inf
                    best_slot = 0
                    for i in range(found[q, parity]):
                        k = symbol[q, parity, i]
                        index = k + reach
                        if 0 <= index < span:
                            r = rates[index]
                        else:
                            r = _rate(lam, bits, lam_bits, context[s], k, width, top)
                        c = here + errors[q, parity, i] + r
                        if c < best:
                            best = c
                            best_slot = slots[q, parity, i]
                    arrival[2 * s + parity] = best
                    slot_of[2 * s + parity] = best_slot
            for s in range(count):
                first, second = into[s, 0], into[s, 1]
                pick = second if arrival[second] < arrival[first] else first
                cost[s] = arrival[pick]
                came[t, s] = np.uint8(slot_of[pick] * 64 + (pick >> 1))
        state = 0
        best = cost[0]
        for s in range(1, count):
            if cost[s] < best:
                best = cost[s]
                state = s
        for t in range(length - 1, -1, -1):
            code = came[t, state]
            state = code & 63
            slot = code >> 6
            k = 0
            if slot > 0:
                q = state & 1
                a = abs(x[b, t])
                base = int(np.floor(a / 2.0)) if q == 0 else int(np.floor((a + 1.0) / 2.0))
                k = (-1 if x[b, t] < 0 else 1) * (base - 2 + slot)
            out[b, t] = k
            if walk:
                contexts[b, t] = context[state]
            if restore:
                levels[b, t] = _level(k, state)


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
    count = next_state.shape[0]
    following = np.empty(2 * count, dtype=np.int64)  # [2·state + parity]
    for s in range(count):
        following[2 * s] = next_state[s, 0]
        following[2 * s + 1] = next_state[s, 1]
    context = np.empty(count, dtype=np.int64)  # of each state in this row
    for b in range(n):
        for s in range(count):
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


def state_groups(groups: int, states: int = STATES) -> np.ndarray:
    """Each state's group of contexts: itself, or with more than 8 states itself mod 8 (8
    groups), or its quantiser (2)."""
    return np.arange(states, dtype=np.int64) % groups


def _searched(x: np.ndarray, classes: np.ndarray, n_classes: int, groups: int,
              bits: np.ndarray, lam: float, out: np.ndarray, levels: np.ndarray,
              contexts: np.ndarray, states: int) -> None:
    """`_search` (8 states) or `_search_any` (the table of ``states``)."""
    group = state_groups(groups, states)
    if states == STATES:
        _search(x, classes, n_classes, group, bits, lam, out, levels, contexts)
    else:
        _search_any(x, classes, n_classes, group, TABLES[states], bits, lam, out, levels,
                    contexts)


def learn_rates(x: np.ndarray, classes: np.ndarray, n_classes: int, groups: int,
                lam: float = DEFAULT_LAMBDA, states: int = STATES) -> np.ndarray:
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
        contexts = np.empty(part.shape, dtype=np.int16)
        _searched(part, part_classes, n_classes, groups, bits, lam, symbols,
                  np.empty((0, 0)), contexts, states)
        bits = _rate_table(symbols, contexts, count)
    return bits


def quantize(x: np.ndarray, classes: np.ndarray, n_classes: int, groups: int,
             bits: np.ndarray, lam: float = DEFAULT_LAMBDA, states: int = STATES) -> np.ndarray:
    """Symbols (int32) of (rows × columns) ``x`` (values / Δ) chosen by the trellis search
    under the rate table ``bits`` (`learn_rates`); ``classes``: each row's class."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.int32)
    _searched(x, np.ascontiguousarray(classes), n_classes, groups, bits, lam, out,
              np.empty((0, 0)), np.empty((0, 0), dtype=np.int16), states)
    return out


def quantize_walked(x: np.ndarray, classes: np.ndarray, n_classes: int, groups: int,
                    bits: np.ndarray, lam: float = DEFAULT_LAMBDA, states: int = STATES
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`quantize` and `reconstruct` of its symbols in one: (symbols int32, levels in units of
    Δ as float64, contexts int16), the levels and contexts from the search's own path."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.int32)
    levels = np.empty(x.shape)
    contexts = np.empty(x.shape, dtype=np.int16)
    _searched(x, np.ascontiguousarray(classes), n_classes, groups, bits, lam, out, levels,
              contexts, states)
    return out, levels, contexts


def reconstruct(symbols: np.ndarray, classes: np.ndarray, n_classes: int,
                groups: int, states: int = STATES) -> tuple[np.ndarray, np.ndarray]:
    """(levels in units of Δ as float64, context of every symbol) of (rows × columns)
    ``symbols``."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    levels = np.empty(symbols.shape)
    contexts = np.empty(symbols.shape, dtype=np.int16)
    _walk(symbols, np.ascontiguousarray(classes), n_classes, state_groups(groups, states),
          TABLES[states], levels, contexts)
    return levels, contexts


def split_streams(symbols: np.ndarray, contexts: np.ndarray, count: int) -> list[np.ndarray]:
    """Each of the ``count`` contexts' symbols in element order (views into one array of
    ``symbols``' dtype), ``contexts`` those `reconstruct` gave: the streams the entropy coder
    codes. The encoder splits a block of rows at a time, with the contexts of the walk it
    has just made, and codes each stream's pieces back to back."""
    flat = np.ascontiguousarray(contexts).reshape(-1)
    gathered = np.empty(flat.size, dtype=symbols.dtype)
    ends = np.zeros(count, dtype=np.int64)
    if not _gather_streams(np.ascontiguousarray(symbols).reshape(-1), flat, gathered, ends):
        raise ValueError("a context outside 0..count - 1")
    starts = np.concatenate([[0], ends[:-1]])
    return [gathered[start:end] for start, end in zip(starts, ends, strict=True)]


@numba.njit(cache=True, nogil=True)
def _gather_streams(symbols: np.ndarray, contexts: np.ndarray, gathered: np.ndarray,
                    ends: np.ndarray) -> bool:
    """``symbols`` gathered by context, each context's in element order (what a stable sort
    by context gives), ``ends`` (zeros, one per context) ← where each context's run ends, by
    counting and placing. False when a context is outside ``ends``."""
    count = ends.size
    for i in range(contexts.size):
        c = contexts[i]
        if c < 0 or c >= count:
            return False
        ends[c] += 1
    at = np.empty(count, dtype=np.int64)
    total = 0
    for c in range(count):
        at[c] = total
        total += ends[c]
        ends[c] = total
    for i in range(contexts.size):
        c = contexts[i]
        gathered[at[c]] = symbols[i]
        at[c] += 1
    return True


class StreamReader:
    """The decoder's side of the streams: rows are restored block by block, in order, each
    symbol taken from its context's stream; ``joined`` holds the streams back to back
    (int32), ``lengths`` their sizes."""

    def __init__(self, joined: np.ndarray, lengths: np.ndarray, classes: np.ndarray,
                 n_classes: int, groups: int, states: int = STATES) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        self.ends = np.cumsum(lengths).astype(np.int64)
        self.pointer = self.ends - lengths
        # int32 as decoded; the encoder's own streams (`weightdna.codec.tensor`'s one-coder
        # weighing) in the narrow dtype they were kept in.
        self.joined = np.ascontiguousarray(joined)
        self.classes = np.ascontiguousarray(classes)
        self.n_classes = n_classes
        self.group = state_groups(groups, states)
        self.next_state = TABLES[states]

    def rows(self, start: int, stop: int, columns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(symbols int32, levels in units of Δ) of rows [start, stop); None when a stream
        runs short (a corrupt file)."""
        symbols = np.empty((stop - start, columns), dtype=np.int32)
        levels = np.empty((stop - start, columns))
        if _merge(self.joined, self.pointer, self.ends, self.classes[start:stop],
                  self.n_classes, self.group, self.next_state, symbols, levels):
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
                                  self.next_state, steps, empty if base is None else base,
                                  out)

    def exhausted(self) -> bool:
        """Every stream read to its end."""
        return bool(np.all(self.pointer == self.ends))


# One adaptive coder per tensor (format version 17): the tensor's symbols in element order,
# each binarised as `weightdna.codec.adaptive` does, under contexts of its trellis state,
# its row's class and, with the neighbours on, the previous symbol in the row (|k| capped
# at LEFT_CAP) and the one above it (same column, previous row; |k| capped at ABOVE_CAP),
# both 0 where there is none. See `coder_contexts` for the layout. The encoder weighs the
# coder without and with the neighbours (NEIGHBOURS: the caps of each) and keeps the
# smaller: they pay on kernels, not on matrices (BENCHMARKS.md).
LEFT_CAP = 2
ABOVE_CAP = 1
NEIGHBOURS = ((0, 0), (LEFT_CAP, ABOVE_CAP))
# Format version 18: the ``sig`` and ``gt`` contexts may also be split by the symbol's
# column (``"column": COLUMN_BUCKETS`` in the coder's model; 1, absent, is version 17's
# contexts): the column's sum of |k| over the rows above, s, against the sum over all
# those rows, T, as the ratio of their means r = s·columns / T, in COLUMN_BUCKETS buckets
# at the edges COLUMN_EDGES / 10 (bucket = how many edges r reaches; the middle one,
# COLUMN_MIDDLE, while T is 0: the first row). Integers only: s·columns·10 and T·14 stay
# below 2^59 for |k| ≤ 2^19 and 2^36 elements. A weight matrix's columns (its inputs)
# differ in scale along all its rows, which no row class sees (MiniLM at 3 bits per
# weight: the coder's file 1.0% smaller with it than without, on every trellis tensor;
# BENCHMARKS.md, "The trellis coder's column context").
COLUMN_BUCKETS = 4
COLUMN_EDGES = (7, 10, 14)
COLUMN_MIDDLE = 2
COLUMNS = (1, COLUMN_BUCKETS)


def coder_contexts(classes: int, left_cap: int = LEFT_CAP, above_cap: int = ABOVE_CAP,
                   column: int = 1) -> int:
    """How many contexts the one coder of a tensor with ``classes`` row classes keeps:
    with N = (left_cap + 1)·(above_cap + 1) neighbour buckets and ``column`` column
    buckets (1: none), ``sig`` per state × class × bucket × column bucket (8·C·N·K),
    ``sign`` per quantiser × class × the left symbol's sign (2·C·3), ``gt 1 … GTX`` per
    quantiser × class × bucket × column bucket (2·C·N·K·GTX), the Exp-Golomb prefix bins
    shared (MAX_PREFIX)."""
    buckets = (left_cap + 1) * (above_cap + 1) * column
    return (STATES * buckets + 6 + 2 * buckets * adaptive.GTX) * classes + adaptive.MAX_PREFIX


def column_sums(columns: int) -> np.ndarray:
    """The column context's running sums, all 0: each column's sum of |k| over the rows
    walked, then (index ``columns``) the sum over all of them (`_column_buckets`)."""
    return np.zeros(columns + 1, dtype=np.int64)


@numba.njit(inline="always")
def _column_buckets(sums: np.ndarray, column: int, out: np.ndarray) -> None:
    """Each column's bucket for the next row (``out``; see COLUMN_BUCKETS) from ``sums``
    (`column_sums`); all 0 where ``column`` is 1 (no column context)."""
    length = out.size
    total = sums[length]
    if column == 1:
        out[:] = 0
    elif total == 0:
        out[:] = COLUMN_MIDDLE
    else:
        low, mid, high = (COLUMN_EDGES[0] * total, COLUMN_EDGES[1] * total,
                          COLUMN_EDGES[2] * total)
        for t in range(length):
            v = sums[t] * (10 * length)
            out[t] = np.int64(v >= low) + np.int64(v >= mid) + np.int64(v >= high)


@numba.njit(cache=True, nogil=True)
def _column_walk(symbols: np.ndarray, out: np.ndarray) -> None:
    n, length = symbols.shape
    sums = np.zeros(length + 1, dtype=np.int64)
    for b in range(n):
        _column_buckets(sums, COLUMN_BUCKETS, out[b])
        for t in range(length):
            a = abs(np.int64(symbols[b, t]))
            sums[t] += a
            sums[length] += a


def column_buckets(symbols: np.ndarray) -> np.ndarray:
    """Each symbol's column bucket (int8, 0 … COLUMN_BUCKETS − 1) of (rows × columns)
    ``symbols`` walked from their first row, as the coder's column context gives it."""
    out = np.empty(symbols.shape, dtype=np.int8)
    _column_walk(np.ascontiguousarray(symbols), out)
    return out


@numba.njit(inline="always")
def _coder_context(state: int, klass: int, classes: int, left: int, above: int,
                   left_cap: int, above_cap: int, column: int, bucket_column: int
                   ) -> tuple[int, int, int, int]:
    """The contexts (sig, sign, gt, prefix: `weightdna.codec.adaptive.forward_symbol`'s)
    of a symbol in ``state`` of a row of class ``klass``, after ``left``, below ``above``,
    in a column of bucket ``bucket_column`` of ``column``; a state of a table of more than
    8 states has the contexts of the state mod 8."""
    buckets = (left_cap + 1) * (above_cap + 1) * column
    bucket = ((min(abs(left), left_cap) * (above_cap + 1) + min(abs(above), above_cap))
              * column + bucket_column)
    q = state & 1
    sig = ((state & (STATES - 1)) * classes + klass) * buckets + bucket
    sign_base = STATES * classes * buckets
    left_sign = 0 if left == 0 else (1 if left < 0 else 2)
    sign = sign_base + (q * classes + klass) * 3 + left_sign
    gt_base = sign_base + 6 * classes
    gt = gt_base + ((q * classes + klass) * buckets + bucket) * adaptive.GTX
    prefix = gt_base + 2 * classes * buckets * adaptive.GTX
    return sig, sign, gt, prefix


@numba.njit(cache=True, nogil=True)
def _coder_forward(symbols: np.ndarray, row_class: np.ndarray, classes: int,
                   next_state: np.ndarray, counts: np.ndarray, previous: np.ndarray,
                   left_cap: int, above_cap: int, column: int, sums: np.ndarray,
                   reciprocal: np.ndarray, probs: np.ndarray, bits: np.ndarray, at: int,
                   log2: np.ndarray) -> tuple[int, float]:
    """The one coder's walk over a block of rows of ``symbols`` (the rows before it walked
    already: ``counts``, ``previous``, the last row's symbols, and ``sums``, the column
    context's, carried): each bin into ``probs``/``bits`` from ``at`` (both empty: not
    stored). Returns (the next index, the ideal bits)."""
    n, length = symbols.shape
    cost = 0.0
    buckets = np.zeros(length, dtype=np.int64)
    for b in range(n):
        klass = row_class[b]
        state = 0
        left = 0
        if column > 1:
            _column_buckets(sums, column, buckets)
        row_sum = 0
        for t in range(length):
            k = np.int64(symbols[b, t])
            sig, sign, gt, prefix = _coder_context(state, klass, classes, left, previous[t],
                                                   left_cap, above_cap, column, buckets[t])
            at, c = adaptive.forward_symbol(k, counts, sig, sign, gt, prefix, reciprocal,
                                            probs, bits, at, log2)
            cost += c
            previous[t] = k
            sums[t] += abs(k)
            row_sum += abs(k)
            left = k
            state = next_state[state, k & 1]
        sums[length] += row_sum
    return at, cost


@numba.njit(cache=True, nogil=True)
def _coder_merge(words: np.ndarray, coder: np.ndarray, counts: np.ndarray,
                 previous: np.ndarray, row_class: np.ndarray, classes: int,
                 next_state: np.ndarray, lo: int, hi: int, left_cap: int, above_cap: int,
                 column: int, sums: np.ndarray, reciprocal: np.ndarray, steps: np.ndarray,
                 base: np.ndarray, symbols: np.ndarray, levels: np.ndarray,
                 out: np.ndarray) -> int:
    """`_merge` (``symbols`` and ``levels``) or `_merge_float32` (``out``; ``base`` empty
    for none) from the one coder: each row walked, every symbol decoded under its contexts
    (``coder``: the rANS state and the words left, carried between blocks in a uint64
    array of 2; ``counts``, ``previous`` and ``sums`` likewise). Returns 0, or 1 when a
    symbol falls outside lo..hi."""
    if left_cap == 0 and above_cap == 0:
        return _coder_merge_plain(words, coder, counts, row_class, classes, next_state, lo,
                                  hi, column, sums, reciprocal, steps, base, symbols, levels,
                                  previous.size, out)
    n = row_class.size
    length = previous.size
    restore = out.size > 0
    has_base = base.size > 0
    state = coder[0]
    rest = np.int64(coder[1])
    buckets = np.zeros(length, dtype=np.int64)
    for b in range(n):
        klass = row_class[b]
        step = steps[b] if restore else 1.0
        walk = 0
        left = 0
        if column > 1:
            _column_buckets(sums, column, buckets)
        row_sum = 0
        for t in range(length):
            sig, sign, gt, prefix = _coder_context(walk, klass, classes, left, previous[t],
                                                   left_cap, above_cap, column, buckets[t])
            k, state, rest = adaptive.decode_symbol(counts, sig, sign, gt, prefix, reciprocal,
                                                    state, words, rest)
            if k < lo or k > hi:
                return 1
            level = _level(k, walk)
            if restore:
                value = level * step
                if has_base:
                    value += base[b, t]
                out[b, t] = np.float32(value)
            else:
                symbols[b, t] = k
                levels[b, t] = level
            previous[t] = k
            sums[t] += abs(k)
            row_sum += abs(k)
            left = k
            walk = next_state[walk, k & 1]
        sums[length] += row_sum
    coder[0] = state
    coder[1] = np.uint64(rest)
    return 0


@numba.njit(inline="always")
def _coder_merge_plain(words: np.ndarray, coder: np.ndarray, counts: np.ndarray,
                       row_class: np.ndarray, classes: int, next_state: np.ndarray, lo: int,
                       hi: int, column: int, sums: np.ndarray, reciprocal: np.ndarray,
                       steps: np.ndarray, base: np.ndarray, symbols: np.ndarray,
                       levels: np.ndarray, length: int, out: np.ndarray) -> int:
    """`_coder_merge` without the neighbours (caps (0, 0): every matrix's coder), the same
    bins in the same order, scheduled for speed: once a symbol's ``sig`` bin is decoded,
    the ``sig`` probabilities of both states the walk can go to next (in the next
    column's bucket) are worked out (`adaptive.probability`; no later bin of the symbol
    touches a ``sig`` context), and the next symbol takes the one its parity picks,
    without waiting on a load and the model's arithmetic (BENCHMARKS.md, "The trellis
    coder's gate judged on the whole tensor, and its decoder": the word embedding of
    MiniLM at 3 bits per weight decoded 28% faster). The previous row is not kept (no
    neighbour reads it); without the column context (``column`` 1) neither are the
    column sums."""
    n = row_class.size
    restore = out.size > 0
    has_base = base.size > 0
    state = coder[0]
    rest = np.int64(coder[1])
    sign_base = STATES * classes * column
    gt_base = sign_base + 6 * classes
    prefix = gt_base + 2 * classes * column * adaptive.GTX
    with_column = column > 1
    # each column's bucket, one past the last (0) so that the next column's read needs
    # no test
    buckets = np.zeros(length + 1, dtype=np.int64)
    for b in range(n):
        klass = row_class[b]
        step = steps[b] if restore else 1.0
        walk = 0
        left_sign = 0
        row_sum = 0
        if with_column:
            _column_buckets(sums, column, buckets[:length])
        p_sig = adaptive.probability(counts, klass * column + buckets[0], reciprocal)
        for t in range(length):
            q = walk & 1
            e = buckets[t]
            sig = ((walk & (STATES - 1)) * classes + klass) * column + e
            sign = sign_base + (q * classes + klass) * 3 + left_sign
            gt = gt_base + ((q * classes + klass) * column + e) * adaptive.GTX
            even, odd = next_state[walk, 0], next_state[walk, 1]
            p_sign = adaptive.probability(counts, sign, reciprocal)
            p_gt = adaptive.probability(counts, gt, reciprocal)
            # `adaptive.decode_symbol_at`'s bins, the next sig probabilities between them
            nonzero, state, rest = adaptive.masked_bin(p_sig, counts, sig, state, words,
                                                       rest, np.uint64(1))
            following = buckets[t + 1]
            p_even = adaptive.probability(counts, ((even & (STATES - 1)) * classes + klass)
                                          * column + following, reciprocal)
            p_odd = adaptive.probability(counts, ((odd & (STATES - 1)) * classes + klass)
                                         * column + following, reciprocal)
            negative, state, rest = adaptive.masked_bin(p_sign, counts, sign, state, words,
                                                        rest, nonzero)
            more, state, rest = adaptive.masked_bin(p_gt, counts, gt, state, words, rest,
                                                    nonzero)
            a = np.int64(nonzero) + np.int64(more)
            if more:
                a, state, rest = adaptive.decode_large(counts, gt, prefix, reciprocal, state,
                                                       words, rest)
            k = a - 2 * a * np.int64(negative)
            if k < lo or k > hi:
                return 1
            parity = a & 1
            p_sig = p_even + (p_odd - p_even) * np.uint64(parity)
            # `_level` without a branch on the sign: 2k − sgn(k) in the odd states
            level = np.float64(2 * k - q * np.int64(nonzero) * (1 - 2 * np.int64(negative)))
            if restore:
                value = level * step
                if has_base:
                    value += base[b, t]
                out[b, t] = np.float32(value)
            else:
                symbols[b, t] = k
                levels[b, t] = level
            if with_column:
                sums[t] += a
                row_sum += a
            left_sign = np.int64(nonzero) * (2 - np.int64(negative))
            walk = even + (odd - even) * parity
        if with_column:
            sums[length] += row_sum
    coder[0] = state
    coder[1] = np.uint64(rest)
    return 0


_NO_STEPS = np.zeros(0)
_NO_BASE = np.zeros((0, 0))
_NO_SYMBOLS = np.zeros((0, 0), dtype=np.int32)
_NO_LEVELS = np.zeros((0, 0))
_NO_OUT = np.zeros((0, 0), dtype=np.float32)
Blocks = Sequence[tuple[np.ndarray, np.ndarray]]


class CoderPlan:
    """A forward walk of the one coder over a tensor's blocks (`coder_plan`): its ideal
    ``bits`` and ``bins``, its neighbours' ``caps`` and ``column`` buckets, and each
    block's starting counts, row above, column sums and first bin, from which `coder_push`
    codes the blocks last first; ``costs``: each block's ideal bits (``bits`` is their
    sum, in order, from 0.0)."""

    def __init__(self, bits: float, bins: int, caps: tuple[int, int], column: int,
                 starts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int] | None],
                 costs: list[float], states: int = STATES) -> None:
        self.bits, self.bins, self.caps, self.starts = bits, bins, caps, starts
        self.column, self.costs, self.states = column, costs, states


def coder_plan(blocks: Blocks, n_classes: int, columns: int, left_cap: int = LEFT_CAP,
               above_cap: int = ABOVE_CAP, column: int = 1, states: int = STATES
               ) -> CoderPlan:
    """The one coder walked forward over ``blocks`` (``blocks[i]``: row block i's
    (symbols, row classes), in order; a sequence that may make each block when asked:
    `coder_push` asks for each once more), counting the ideal bits and the bins and keeping
    each block's starting state (memory: a block's counts and one row, not its bins);
    ``column``: the column context's buckets (1: none, format version 17's contexts)."""
    counts = np.zeros((coder_contexts(n_classes, left_cap, above_cap, column), 2),
                      dtype=np.int64)
    previous = np.zeros(columns, dtype=np.int64)
    sums = column_sums(columns)
    starts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int] | None] = []
    costs: list[float] = []
    at, total = 0, 0.0
    for i in range(len(blocks)):
        symbols, classes = blocks[i]
        starts.append((counts.copy(), previous.copy(), sums.copy(), at))
        at, cost = _coder_forward(symbols, classes, n_classes, TABLES[states], counts,
                                  previous, left_cap, above_cap, column, sums,
                                  adaptive.RECIPROCAL, adaptive.NO_PROBS, adaptive.NO_BITS, at,
                                  adaptive.LOG2)
        costs.append(cost)
        total += cost
    return CoderPlan(total, at, (left_cap, above_cap), column, starts, costs, states)


def coder_push(blocks: Blocks, plan: CoderPlan, n_classes: int) -> bytes:
    """The one coder's stream of ``blocks`` (those `coder_plan` walked), a block at a
    time: the blocks pushed last first, each one's bins worked out again from its starting
    state (memory: one block's bins, not the tensor's). Spends ``plan``'s states."""
    starts = plan.starts
    ends = [start[3] for start in starts[1:]] + [plan.bins]
    pusher = adaptive.Pusher()
    pieces = []
    for i in range(len(blocks) - 1, -1, -1):
        symbols, classes = blocks[i]
        counts, previous, sums, start = starts[i]
        bins = ends[i] - start
        probs = np.empty(bins, dtype=np.uint16)
        bits = np.empty(bins, dtype=np.uint8)
        _coder_forward(symbols, classes, n_classes, TABLES[plan.states], counts, previous,
                       *plan.caps, plan.column, sums, adaptive.RECIPROCAL, probs, bits, 0,
                       adaptive.LOG2)
        pieces.append(pusher.push(probs, bits, bins))
        starts[i] = None  # its counts no longer needed
    return b"".join(pieces) + pusher.finish()


def coder_bits(blocks: Blocks, n_classes: int, columns: int, left_cap: int = LEFT_CAP,
               above_cap: int = ABOVE_CAP, column: int = 1, states: int = STATES
               ) -> tuple[float, int]:
    """(the ideal bits of a tensor's symbols under its one coder, its number of bins);
    ``blocks`` as `coder_plan` takes them."""
    plan = coder_plan(blocks, n_classes, columns, left_cap, above_cap, column, states)
    return plan.bits, plan.bins


def coder_encode(blocks: Blocks, n_classes: int, columns: int, left_cap: int = LEFT_CAP,
                 above_cap: int = ABOVE_CAP, column: int = 1, states: int = STATES) -> bytes:
    """The one coder's stream of a tensor's symbols (``blocks`` as `coder_plan` takes
    them): `coder_plan`, then `coder_push`."""
    plan = coder_plan(blocks, n_classes, columns, left_cap, above_cap, column, states)
    return coder_push(blocks, plan, n_classes)


class CoderReader:
    """`StreamReader`'s interface over a tensor's one coder (format version 17; its column
    context, ``column`` buckets, version 18): rows are restored block by block, in order,
    every symbol decoded under its contexts. ``data``: the stream (whole words, two or
    more; the caller checks), lo..hi its symbols' range."""

    def __init__(self, data: bytes, lo: int, hi: int, classes: np.ndarray, n_classes: int,
                 columns: int, caps: tuple[int, int], column: int = 1,
                 states: int = STATES) -> None:
        self.words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        state, rest = (int(self.words[-1]) << 32) | int(self.words[-2]), self.words.size - 2
        self.coder = np.array([state, rest], dtype=np.uint64)
        self.caps = caps
        self.column = column
        self.counts = adaptive.decoder_counts(coder_contexts(n_classes, *caps, column))
        self.previous = np.zeros(columns, dtype=np.int64)
        self.sums = column_sums(columns)
        self.lo, self.hi = lo, hi
        self.classes = np.ascontiguousarray(classes)
        self.n_classes = n_classes
        self.next_state = TABLES[states]

    def rows(self, start: int, stop: int, columns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(symbols int32, levels in units of Δ) of rows [start, stop); None when a symbol
        falls outside the range (a corrupt file)."""
        symbols = np.empty((stop - start, columns), dtype=np.int32)
        levels = np.empty((stop - start, columns))
        if _coder_merge(self.words, self.coder, self.counts, self.previous,
                        self.classes[start:stop], self.n_classes, self.next_state, self.lo,
                        self.hi, *self.caps, self.column, self.sums, adaptive.RECIPROCAL,
                        _NO_STEPS, _NO_BASE, symbols, levels, _NO_OUT):
            return None
        return symbols, levels

    def restore_float32(self, start: int, stop: int, steps: np.ndarray,
                        base: np.ndarray | None, out: np.ndarray) -> bool:
        """`StreamReader.restore_float32` from the one coder; False when a symbol falls
        outside the range."""
        return not _coder_merge(self.words, self.coder, self.counts, self.previous,
                                self.classes[start:stop], self.n_classes, self.next_state,
                                self.lo, self.hi, *self.caps, self.column, self.sums,
                                adaptive.RECIPROCAL, steps, _NO_BASE if base is None else base,
                                _NO_SYMBOLS, _NO_LEVELS, out)

    def exhausted(self) -> bool:
        """The stream ends here: the state 2^32 with no word left."""
        return int(self.coder[1]) == 0 and int(self.coder[0]) == 1 << 32
