"""Dependent (trellis-coded) quantisation: the state machine, the streams, the gain."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightdna.codec import tensor, trellis
from weightdna.codec.ratecontrol import trellis_step_factor
from weightdna.codec.tensor import decode_tensor, encode_tensor, trellis_classes
from weightdna.errors import CorruptFileError, InvalidInputError


def _snr(w: torch.Tensor, r: torch.Tensor) -> float:
    w64, r64 = w.double(), r.double()
    return 10 * math.log10(float((w64**2).sum() / ((w64 - r64) ** 2).sum()))


def _size(sections: dict[str, bytes]) -> int:
    return sum(len(b) for b in sections.values())


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.lists(st.integers(-50, 50), min_size=1, max_size=40), min_size=1,
                max_size=6).filter(lambda rows: len({len(r) for r in rows}) == 1))
@pytest.mark.parametrize("groups", trellis.STATE_GROUPS)
def test_walk_follows_the_state_machine(groups: int, rows: list[list[int]]) -> None:
    symbols = np.array(rows, dtype=np.int32)
    classes = (np.arange(len(rows)) % 2).astype(np.uint8)
    levels, contexts = trellis.reconstruct(symbols, classes, 2, groups)
    for row, klass, row_levels, row_contexts in zip(symbols, classes, levels, contexts,
                                                    strict=True):
        state = 0
        for k, level, ctx in zip(row, row_levels, row_contexts, strict=True):
            assert ctx == (state % groups) * 2 + klass
            expected = 2 * k - (state & 1) * np.sign(k)  # Q1 (odd states): odd levels or 0
            assert level == expected
            state = trellis.NEXT_STATE[state, abs(int(k)) % 2]
    streams = trellis.split_streams(symbols, contexts, 2 * groups)
    for c, stream in enumerate(streams):  # each context's symbols, in element order
        np.testing.assert_array_equal(stream, symbols[contexts == c])
    reader = trellis.StreamReader(np.concatenate(streams), [s.size for s in streams], classes,
                                  2, groups)
    back = reader.rows(0, len(rows), symbols.shape[1])
    assert back is not None and reader.exhausted()
    np.testing.assert_array_equal(back[0], symbols)
    np.testing.assert_array_equal(back[1], levels)


def test_split_streams_is_a_stable_sort_by_context() -> None:
    """The streams (counted and placed by a compiled loop) are what a stable sort of the
    symbols by context gives, for each symbol dtype; a context out of range is refused."""
    rng = np.random.default_rng(5)
    for dtype in (np.int32, np.int64, np.int8):
        symbols = rng.integers(-100, 100, (300, 77)).astype(dtype)
        contexts = rng.integers(0, 13, (300, 77)).astype(np.int16)
        contexts[:, :5] = 12  # a long run; context 13 of 14 stays empty
        streams = trellis.split_streams(symbols, contexts, 14)
        order = np.argsort(contexts.reshape(-1), kind="stable")
        np.testing.assert_array_equal(np.concatenate(streams), symbols.reshape(-1)[order])
        assert [s.size for s in streams] == list(np.bincount(contexts.reshape(-1),
                                                             minlength=14))
        assert all(s.dtype == dtype for s in streams) and streams[13].size == 0
    with pytest.raises(ValueError, match="context"):
        trellis.split_streams(symbols, contexts, 12)


def test_a_short_stream_is_detected() -> None:
    symbols = np.array([[3, -1, 0, 2, 5, 1]], dtype=np.int32)
    _, contexts = trellis.reconstruct(symbols, np.zeros(1, np.uint8), 1, 8)
    streams = trellis.split_streams(symbols, contexts, 8)
    lengths = [s.size for s in streams]
    longest = int(np.argmax(lengths))
    lengths[longest] -= 1
    joined = np.concatenate(streams)
    reader = trellis.StreamReader(joined[: sum(lengths)], lengths, np.zeros(1, np.uint8), 1, 8)
    assert reader.rows(0, 1, 6) is None


def test_the_search_minimises_error_plus_rate() -> None:
    """With λ = 0 the search is pure trellis-coded quantisation: never worse than rounding
    to the even grid (Q0 alone is one path through the trellis)."""
    x = np.random.default_rng(1).laplace(size=(50, 200)) * 4
    bits = np.zeros((trellis.STATES, 3))
    symbols = trellis.quantize(x, np.zeros(50, np.uint8), 1, 8, bits, lam=0.0)
    levels, _ = trellis.reconstruct(symbols, np.zeros(50, np.uint8), 1, 8)
    even = 2 * np.rint(x / 2)
    assert ((x - levels) ** 2).sum() < 0.8 * ((x - even) ** 2).sum()


def _reference_search(x: np.ndarray, row_class: np.ndarray, classes: int, group: np.ndarray,
                      bits: np.ndarray, lam: float,
                      next_state: np.ndarray = trellis.NEXT_STATE) -> np.ndarray:
    """The search as first written (format version 6), in plain Python: each state's four
    candidates evaluated on their own, λ·rate multiplied per candidate; ``next_state``:
    the table (a state's quantiser its low bit)."""
    count = next_state.shape[0]
    width = (bits.shape[1] - 1) // 2

    def rate(ctx: int, k: int) -> float:
        index = k + width
        if index < 0:
            return bits[ctx, 0] + 1.0 + (-index)
        if index > 2 * width:
            return bits[ctx, 2 * width] + 1.0 + (index - 2 * width)
        return bits[ctx, index]

    out = np.empty(x.shape, dtype=np.int32)
    for b in range(x.shape[0]):
        cost = [math.inf] * count
        cost[0] = 0.0
        came, chosen = [], []
        for v in x[b].tolist():
            a, sign = abs(v), (-1 if v < 0 else 1)
            new = [math.inf] * count
            came.append([0] * count)
            chosen.append([0] * count)
            for s in range(count):
                if cost[s] == math.inf:
                    continue
                q = s & 1
                base = math.floor(a / 2.0) if q == 0 else math.floor((a + 1.0) / 2.0)
                ctx = int(group[s]) * classes + int(row_class[b])
                for j in range(4):
                    m = 0 if j == 0 else base + j - 2
                    if j and m <= 0:
                        continue
                    level = 2.0 * m - (q if m > 0 else 0)
                    c = cost[s] + (a - level) * (a - level) + lam * float(rate(ctx, sign * m))
                    ns = int(next_state[s, m & 1])
                    if c < new[ns]:
                        new[ns], came[-1][ns], chosen[-1][ns] = c, s, sign * m
            cost = new
        state = min(range(count), key=lambda s: (cost[s], s))
        for t in range(x.shape[1] - 1, -1, -1):
            out[b, t] = chosen[t][state]
            state = came[t][state]
    return out


@pytest.mark.parametrize("groups", trellis.STATE_GROUPS)
@pytest.mark.parametrize("lam", [0.0, 0.14, 1.5])
def test_the_compiled_search_chooses_what_the_reference_does(groups: int, lam: float) -> None:
    """The compiled search (candidates shared by the states of a quantiser, a λ·rate table)
    picks the same symbols as the plain search, ties included: values on the half-grid
    and integer rate tables make many paths cost exactly the same; a narrow table sends
    large symbols past its ends."""
    rng = np.random.default_rng(7)
    classes = 3
    row_class = rng.integers(0, classes, 12).astype(np.uint8)
    for x in (rng.laplace(size=(12, 40)) * 6, np.round(rng.laplace(size=(12, 40)) * 8) / 2):
        for bits in (rng.uniform(0.5, 9, size=(groups * classes, 41)),
                     rng.integers(1, 4, size=(groups * classes, 7)).astype(np.float64)):
            got = trellis.quantize(x, row_class, classes, groups, bits, lam=lam)
            want = _reference_search(x, row_class, classes, trellis.state_groups(groups), bits,
                                     lam)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("states", [16, 32, 64])
@pytest.mark.parametrize("lam", [0.0, 0.14, 1.5])
def test_the_search_of_more_states_chooses_what_the_reference_does(states: int,
                                                                   lam: float) -> None:
    """Format version 19's tables (`trellis._search_any`): the plain search's symbols,
    ties included (the inputs of the test above), and its levels and contexts from the
    search's own path those of the walk."""
    rng = np.random.default_rng(8)
    classes = 3
    row_class = rng.integers(0, classes, 12).astype(np.uint8)
    for groups in trellis.STATE_GROUPS:
        group = trellis.state_groups(groups, states)
        for x in (rng.laplace(size=(12, 40)) * 6, np.round(rng.laplace(size=(12, 40)) * 8) / 2):
            for bits in (rng.uniform(0.5, 9, size=(groups * classes, 41)),
                         rng.integers(1, 4, size=(groups * classes, 7)).astype(np.float64)):
                got, levels, contexts = trellis.quantize_walked(x, row_class, classes, groups,
                                                                bits, lam=lam, states=states)
                want = _reference_search(x, row_class, classes, group, bits, lam,
                                         trellis.TABLES[states])
                np.testing.assert_array_equal(got, want)
                walked = trellis.reconstruct(want, row_class, classes, groups, states)
                np.testing.assert_array_equal(levels, walked[0])
                np.testing.assert_array_equal(contexts, walked[1])


def test_the_general_search_on_nncodecs_table_is_the_specialised_one() -> None:
    """`trellis._search_any` given NNCodec's table chooses what `trellis._search` does."""
    rng = np.random.default_rng(9)
    x = rng.laplace(size=(40, 300)) * 3
    row_class = rng.integers(0, 4, 40).astype(np.uint8)
    bits = trellis.learn_rates(x, row_class, 4, 8)
    want = trellis.quantize(x, row_class, 4, 8, bits)
    got = np.empty(x.shape, dtype=np.int32)
    trellis._search_any(x, row_class, 4, trellis.state_groups(8), trellis.NEXT_STATE, bits,
                        trellis.DEFAULT_LAMBDA, got, np.empty((0, 0)),
                        np.empty((0, 0), dtype=np.int16))
    np.testing.assert_array_equal(got, want)


def _previous_search(x, row_class, classes, group, bits, lam, next_state, out):  # noqa: ANN001
    """The compiled search before the even/odd reduction (commit da3680f), to check the
    current kernel against on inputs too large for the plain reference."""
    n, length = x.shape
    width = (bits.shape[1] - 1) // 2
    top = 2 * width
    lam_bits = lam * bits
    chosen = np.empty((length, 8), dtype=np.int32)
    came = np.empty((length, 8), dtype=np.int8)
    cost = np.empty(8)
    new_cost = np.empty(8)
    context = np.empty(8, dtype=np.int64)
    for b in range(n):
        for s in range(8):
            context[s] = group[s] * classes + row_class[b]
            cost[s] = np.inf
        cost[0] = 0.0
        for t in range(length):
            v = x[b, t]
            a = abs(v)
            sign = -1 if v < 0 else 1
            for s in range(8):
                new_cost[s] = np.inf
            for q in range(2):
                base = int(np.floor(a / 2.0)) if q == 0 else int(np.floor((a + 1.0) / 2.0))
                for s in range(q, 8, 2):
                    here = cost[s]
                    if here == np.inf:
                        continue
                    ctx = context[s]
                    for j in range(4):
                        m = 0 if j == 0 else base + j - 2
                        if j and m <= 0:
                            continue
                        level = 2.0 * m - q if m > 0 else 0.0
                        k = sign * m
                        rate = lam_bits[ctx, width] if j == 0 else trellis._rate(
                            lam, bits, lam_bits, ctx, k, width, top)
                        c = here + (a - level) * (a - level) + rate
                        ns = next_state[s, m & 1]
                        if c < new_cost[ns]:
                            new_cost[ns] = c
                            came[t, ns] = s
                            chosen[t, ns] = k
            cost, new_cost = new_cost, cost
        state = 0
        for s in range(1, 8):
            if cost[s] < cost[state]:
                state = s
        for t in range(length - 1, -1, -1):
            out[b, t] = chosen[t, state]
            state = came[t, state]


_previous = numba.njit(_previous_search)


def _both(x: np.ndarray, row_class: np.ndarray, classes: int, groups: int, bits: np.ndarray,
          lam: float) -> tuple[np.ndarray, np.ndarray]:
    got = trellis.quantize(x, row_class, classes, groups, bits, lam=lam)
    want = np.empty(x.shape, dtype=np.int32)
    _previous(np.ascontiguousarray(x, dtype=np.float64), row_class, classes,
              trellis.state_groups(groups), bits, lam, trellis.NEXT_STATE, want)
    return got, want


@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["laplace", "half", "edges", "far"]),
       st.sampled_from([1, 3, 7, 41]), st.sampled_from([0.0, 0.14, 1.5]))
@pytest.mark.parametrize("groups", trellis.STATE_GROUPS)
def test_the_search_matches_the_previous_kernel(groups: int, seed: int, kind: str, columns: int,
                                                 lam: float) -> None:
    """The current kernel (candidates sorted by parity by arithmetic, the even/odd arrivals,
    a rate table per call, symbols worked out again on the way back, the walk's levels and
    contexts from its own path) against the one before it and `reconstruct`, on awkward
    inputs: values on the half-grid with integer rates (ties everywhere), the
    edges of the rate table and just past them, and values far beyond ``FAR_SYMBOLS``
    mixed with small ones (the rates worked out element by element)."""
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(1, 4))
    rows, length = int(rng.integers(1, 6)), int(rng.integers(1, 60))
    width = (columns - 1) // 2
    if kind == "laplace":
        x = rng.laplace(size=(rows, length)) * rng.uniform(0.3, 20)
    elif kind == "half":
        x = np.round(rng.laplace(size=(rows, length)) * 6) / 2
    elif kind == "edges":
        x = rng.choice([-1.0, 1.0], (rows, length)) * (
            2.0 * width + rng.integers(-3, 4, (rows, length))
            + rng.choice([0.0, 0.5], (rows, length)))
    else:
        x = rng.laplace(size=(rows, length)) * 3
        far = rng.random((rows, length)) < 0.3
        x[far] = rng.choice([-1.0, 1.0], far.sum()) * rng.uniform(
            2 * trellis.FAR_SYMBOLS - 4, 5 * trellis.FAR_SYMBOLS, far.sum()).round(1)
    x[rng.random(x.shape) < 0.1] = 0.0
    x[rng.random(x.shape) < 0.05] = -0.0
    if rng.random() < 0.5:
        bits = rng.integers(1, 4, size=(groups * classes, columns)).astype(np.float64)
    else:
        bits = rng.uniform(0.5, 9, size=(groups * classes, columns))
    row_class = rng.integers(0, classes, rows).astype(np.uint8)
    got, want = _both(x, row_class, classes, groups, bits, lam)
    np.testing.assert_array_equal(got, want)
    symbols, levels, contexts = trellis.quantize_walked(x, row_class, classes, groups, bits,
                                                        lam)
    walked_levels, walked_contexts = trellis.reconstruct(want, row_class, classes, groups)
    np.testing.assert_array_equal(symbols, want)
    np.testing.assert_array_equal(levels, walked_levels)  # the same floats, bit for bit
    np.testing.assert_array_equal(contexts, walked_contexts)
    assert contexts.dtype == walked_contexts.dtype and levels.dtype == walked_levels.dtype


def test_the_search_matches_the_reference_past_the_far_limit() -> None:
    """Elements whose symbols lie beyond the table's reach take their rates from `_rate`
    one by one: the same symbols as the plain search."""
    rng = np.random.default_rng(11)
    x = rng.laplace(size=(4, 30)) * 5
    x[:, ::4] = rng.uniform(2 * trellis.FAR_SYMBOLS, 3 * trellis.FAR_SYMBOLS, (4, 8)) * \
        rng.choice([-1, 1], (4, 8))
    row_class = np.array([0, 1, 1, 0], dtype=np.uint8)
    for groups in trellis.STATE_GROUPS:
        bits = rng.integers(1, 4, size=(groups * 2, 9)).astype(np.float64)
        got = trellis.quantize(x, row_class, 2, groups, bits)
        want = _reference_search(x, row_class, 2, trellis.state_groups(groups), bits,
                                 trellis.DEFAULT_LAMBDA)
        np.testing.assert_array_equal(got, want)
        assert np.abs(got).max() > trellis.FAR_SYMBOLS


def test_empty_searches() -> None:
    bits = np.ones((8, 5))
    for shape in ((0, 4), (3, 0)):
        out = trellis.quantize(np.zeros(shape), np.zeros(shape[0], np.uint8), 1, 8, bits)
        assert out.shape == shape


@pytest.mark.parametrize("shape", [(300, 256), (64, 3, 3, 3), (1000,), (), (0, 5), (7, 1)])
def test_round_trip_matches_the_reported_error(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g) * 0.1
    entry, sections = encode_tensor(w, name="t", step=0.01, quantizer="trellis")
    restored = decode_tensor(entry, sections)
    assert restored.shape == w.shape and restored.dtype == w.dtype
    mse = float(((restored.double() - w.double()) ** 2).mean()) if w.numel() else 0.0
    assert mse == pytest.approx(entry["stats"]["mse"], rel=1e-9, abs=1e-15)
    if w.numel():
        assert entry["params"]["model"]["kind"] == "trellis"


def test_per_row_steps_and_row_classes_round_trip(monkeypatch) -> None:
    monkeypatch.setattr(tensor, "TRELLIS_CODER", False)  # the context streams (version 17's
    # one coder: tests/test_codec_trellis_adaptive.py)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(512, 256, generator=g) * torch.logspace(-2, 0, 512)[:, None]
    steps = np.linspace(0.001, 0.05, 512)
    entry, sections = encode_tensor(w, name="t", step=steps, quantizer="trellis")
    assert entry["params"]["model"]["classes"] == trellis_classes(w.numel(), 512) > 1
    assert entry["params"]["model"]["groups"] == 8
    assert "classes" in sections
    restored = decode_tensor(entry, sections)
    assert float(((restored - w) ** 2).mean()) == pytest.approx(entry["stats"]["mse"], rel=1e-6)


def test_trellis_beats_scalar_rounding_at_equal_size() -> None:
    """The point of the trellis: at the same coded size, at least 0.5 dB more SNR than
    scalar rounding (its deadzone chosen best) on Laplace weights at 2-6 bits/weight."""
    w = torch.from_numpy(np.random.default_rng(3).laplace(size=(256, 512)).astype(np.float32))
    scalar = []
    for step in np.geomspace(0.05, 1.5, 14):
        best = None
        for deadzone in (0.0, 0.1, 0.2):
            entry, sections = encode_tensor(w, name="s", step=float(step), deadzone=deadzone)
            point = (8 * _size(sections) / w.numel(), _snr(w, decode_tensor(entry, sections)))
            best = point if best is None or point[1] - 6.02 * point[0] > \
                best[1] - 6.02 * best[0] else best
        scalar.append(best)
    scalar.sort()
    rates, snrs = np.array(scalar).T
    for step in (0.3, 0.1, 0.05):
        entry, sections = encode_tensor(w, name="t", step=step, quantizer="trellis")
        rate = 8 * _size(sections) / w.numel()
        gain = _snr(w, decode_tensor(entry, sections)) - np.interp(rate, rates, snrs)
        assert 2 <= rate <= 6 and gain >= 0.5, (step, rate, gain)


def test_trellis_requests_are_checked() -> None:
    w = torch.randn(10, 10)
    with pytest.raises(InvalidInputError, match="quantizer"):
        encode_tensor(w, name="t", step=0.1, quantizer="vector")
    with pytest.raises(InvalidInputError, match="trellis"):
        encode_tensor(w, name="t", max_abs_error=0.1, quantizer="trellis")
    with pytest.raises(InvalidInputError, match="trellis"):
        encode_tensor(w, name="t", step=0.1, deadzone=0.1, quantizer="trellis")


@pytest.mark.parametrize("damage", ["classes", "groups", "counts", "count_total",
                                    "histogram_flag"])
def test_corrupt_trellis_params_are_refused(damage: str, monkeypatch) -> None:
    monkeypatch.setattr(tensor, "TRELLIS_CODER", False)  # the context streams' params
    g = torch.Generator().manual_seed(4)
    w = torch.randn(128, 512, generator=g) * torch.linspace(0.1, 2, 128)[:, None]
    entry, sections = encode_tensor(w, name="t", step=0.2, quantizer="trellis")
    model = entry["params"]["model"]
    streams = model["streams"]
    if damage == "classes":
        model["classes"] = 3  # the stream count no longer matches
    elif damage == "groups":
        model["groups"] = 4
    elif damage == "counts":
        streams[0]["count"], streams[1]["count"] = streams[0]["count"] + 1, \
            streams[1]["count"] - 1
    elif damage == "count_total":
        streams[0]["count"] += 1
    else:
        streams[0]["histogram"] = 0 if streams[0]["histogram"] else 5
    with pytest.raises(CorruptFileError):
        decode_tensor(entry, sections)


def test_step_factor_spans_half_to_four_fifths() -> None:
    assert trellis_step_factor(8.0) == 0.5 and trellis_step_factor(3.5) == 0.5
    assert trellis_step_factor(1.0) == pytest.approx(0.8)
    assert trellis_step_factor(0.2) == pytest.approx(0.8)
    assert 0.5 < trellis_step_factor(2.5) < 0.8


def test_the_states_reaching_a_state_share_a_quantiser() -> None:
    """The compiled search is written for NNCodec's table: the two states that reach any
    state share a quantiser (so its arrivals keep the order of their states, its tie rule),
    they are s and s + 4, s by an even symbol where s + 4 by an odd one, and Q0's states
    (even) reach 0..3, Q1's 4..7."""
    reaching: dict[int, list[int]] = {}
    for s in range(trellis.STATES):
        for parity in range(2):
            reaching.setdefault(int(trellis.NEXT_STATE[s, parity]), []).append(s)
    assert sorted(reaching) == list(range(trellis.STATES))
    for sources in reaching.values():
        assert len({s & 1 for s in sources}) == 1
    for s in range(4):
        assert list(trellis.NEXT_STATE[s + 4]) == list(trellis.NEXT_STATE[s][::-1])
        assert set(trellis.NEXT_STATE[s]) <= ({0, 1, 2, 3} if s % 2 == 0 else {4, 5, 6, 7})
