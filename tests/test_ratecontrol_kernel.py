"""The rate control's compiled rounding (ratecontrol._round_and_count) gives the figures of
NumPy's float32 formula bit for bit: the same errors (so the same squared error by the
same np.dot) and the same histogram, hence the same estimated bits and the same allocation."""

from __future__ import annotations

import numpy as np

from weightdna.codec import ratecontrol as rc
from weightdna.codec.quantize import round_symbols


def _numpy(sample: np.ndarray, divisor: np.ndarray | np.float32,
           deadzone: float) -> tuple[np.ndarray, np.ndarray]:
    """What `evaluate` computed before the kernel."""
    scaled = sample / divisor
    symbols = round_symbols(scaled, deadzone)
    error = (scaled - symbols) * divisor
    return error, symbols.astype(np.int32).reshape(-1)


def test_compiled_rounding_is_numpy_s() -> None:
    rng = np.random.default_rng(0)
    taken = 0
    for trial in range(40):
        rows, columns = int(rng.integers(1, 200)), int(rng.integers(1, 300))
        sample = (rng.laplace(0, 1, (rows, columns)) * 10 ** rng.uniform(-3, 1)).astype(
            np.float32)
        sample[rng.random(sample.shape) < 0.05] = 0
        sample[0, 0] = -0.0
        divisor = (rng.uniform(1e-3, 1, (rows, 1)).astype(np.float32) if trial % 2
                   else np.float32(rng.uniform(1e-3, 1)))
        peak = float(np.max(np.abs(sample.astype(np.float64)) / np.asarray(divisor, np.float64)))
        for deadzone in rc.DEADZONES:
            error, symbols = _numpy(sample, divisor, deadzone)
            got_error, counts = rc._rounding_errors(sample, divisor, deadzone, peak)
            taken += counts.size == 2 * (int(peak * 1.001) + 2) + 1  # the compiled path
            assert np.array_equal(np.abs(got_error).view(np.int32),
                                  np.abs(error).view(np.int32))  # ±0 alike
            assert np.dot(got_error.reshape(-1), got_error.reshape(-1)) == \
                np.dot(error.reshape(-1), error.reshape(-1))
            assert rc._counted_bits(counts, symbols.size) == rc._ideal_bits(symbols)
    assert taken == 120


def test_a_symbol_beyond_the_histogram_falls_back_to_numpy() -> None:
    sample = np.array([[0.5, 40.0, -3.2]], dtype=np.float32)
    error, symbols = _numpy(sample, np.float32(1.0), 0.1)
    got_error, counts = rc._rounding_errors(sample, np.float32(1.0), 0.1, peak=3.0)  # too low
    assert np.array_equal(got_error, error)
    assert rc._counted_bits(counts, 3) == rc._ideal_bits(symbols)


def _check(sample: np.ndarray, divisor: np.ndarray | np.float32, peak: float) -> int:
    """Compare `_rounding_errors` with NumPy at every deadzone; returns how many took the
    compiled path."""
    taken = 0
    for deadzone in rc.DEADZONES:
        error, symbols = _numpy(sample, divisor, deadzone)
        got_error, counts = rc._rounding_errors(sample, divisor, deadzone, peak)
        half = int(peak * 1.001) + 2  # `_rounding_errors`'s histogram, asked directly
        per_row = np.broadcast_to(np.asarray(divisor, np.float32).reshape(-1),
                                  (sample.shape[0],)).copy()
        taken += rc._round_and_count(sample, per_row, not deadzone,
                                     np.float32(0.5 - deadzone), np.empty_like(sample),
                                     np.zeros(2 * half + 1, np.int64))
        assert np.array_equal(np.abs(got_error).view(np.int32),
                              np.abs(error).view(np.int32))  # ±0 alike: the same squares
        assert rc._counted_bits(counts, symbols.size) == rc._ideal_bits(symbols)
        lo = int(symbols.min())
        assert np.array_equal(np.trim_zeros(counts), np.trim_zeros(np.bincount(symbols - lo)))
    return taken


def test_ties_zeros_and_edges_of_the_histogram() -> None:
    """Awkward inputs: exact ties at k + ½ (rint to even; floor(|x| + shift) where |x| +
    shift lands on an integer), ±0, symbols exactly at the histogram's edge, rows whose
    width is not a multiple of the histogram's eight lanes, one column, and histograms
    small (eight lanes) and large (one) beside the sample."""
    rng = np.random.default_rng(1)
    halves = (np.arange(-40, 40) + 0.5).astype(np.float32)
    for columns in (1, 3, 5, 384, 387):
        rows = 9
        base = rng.choice(np.concatenate([halves, [0.0, -0.0, 0.6, -0.6, 0.9, 1.4]]),
                          (rows, columns)).astype(np.float32)
        for divisor in (np.float32(1.0), np.float32(0.25),
                        np.float32(2.0) ** rng.integers(-3, 3, (rows, 1)).astype(np.float32)):
            sample = (base * divisor).astype(np.float32)  # scaled = base exactly
            peak = float(np.max(np.abs(base)))
            assert _check(sample, divisor, peak) == 3
            # The tightest histogram: |symbol| ≤ offset exactly at the largest symbol.
            assert _check(sample, divisor, float(np.max(np.abs(np.rint(base)))) - 2) == 3
    many = rng.laplace(0, 3, (300, 64)).astype(np.float32)  # 8 lanes (19,200 ≫ 16 × bins)
    assert _check(many, np.float32(0.5), float(np.max(np.abs(many))) * 2) == 3
    assert _check(many[:2], np.float32(0.5), 5000.0) == 3  # one lane: bins ≫ the sample


def test_huge_values_fall_back_wherever_they_are() -> None:
    """A symbol beyond the histogram anywhere in the sample (first, middle or last element;
    a little or far beyond) sends the whole sample to NumPy, whose figures come back (the
    kernel's partial histogram is not used)."""
    rng = np.random.default_rng(2)
    for where in ((0, 0), (3, 17), (7, 99)):
        for huge in (23.0, 1e6, -3e7):
            sample = rng.laplace(0, 1, (8, 100)).astype(np.float32)
            np.clip(sample, -15, 15, out=sample)
            sample[where] = huge
            for divisor in (np.float32(1.0), rng.uniform(0.9, 1.0, (8, 1)).astype(np.float32)):
                assert _check(sample, divisor, 15.0) == 0
            if abs(huge) < rc.MAX_SYMBOL:  # the compiled path, with a histogram that fits
                assert _check(sample, np.float32(1.0), abs(huge)) == 3


def _correlated_matrices() -> list[np.ndarray]:
    """Matrices whose neighbours correlate by about the threshold, far from it, not at all,
    exactly (constant rows or columns, a constant matrix, a ramp), with a large mean, tiny
    or subnormal values, one row, one column; 2-D and 4-D (a kernel's shape)."""
    rng = np.random.default_rng(4)
    out = []
    for rho in (0.0, 0.3, 0.5, 0.5 + 2e-7, 0.5 - 2e-7, 0.7, 0.99):
        # an AR(1) row: neighbours along the row correlate by about rho
        noise = rng.normal(size=(30, 200))
        x = np.empty_like(noise)
        x[:, 0] = noise[:, 0]
        for j in range(1, 200):
            x[:, j] = rho * x[:, j - 1] + np.sqrt(1 - rho * rho) * noise[:, j]
        out += [x, x.T.copy()]
    ramp = np.add.outer(np.arange(40.0), np.arange(30.0))
    out += [
        np.ones((20, 30)), np.zeros((8, 8)), np.tile(rng.normal(size=30), (20, 1)),
        np.tile(rng.normal(size=(20, 1)), (1, 30)), ramp, 1e6 + rng.normal(size=(30, 30)),
        1e6 + 1e-12 * rng.normal(size=(30, 30)), 1e-300 * rng.normal(size=(30, 30)),
        5e-324 * rng.integers(-3, 4, (30, 30)).astype(np.float64),
        rng.normal(size=(1, 500)), rng.normal(size=(500, 1)),
        rng.normal(size=(16, 8, 3, 3)), np.cumsum(rng.normal(size=(12, 4, 3, 3)), axis=1),
    ]
    return out


def test_the_compiled_correlation_test_decides_as_corrcoef(monkeypatch) -> None:  # noqa: ANN001
    """`_correlated` (one compiled pass per pair, `_pair_moments`) gives the decision of
    `_adjacent_correlation` ≥ DNA_MIN_CORRELATION on every awkward matrix, by its own
    figure where that is clear of the threshold (most of them here) and by corrcoef's
    where not; and its moments are NumPy's to rounding."""
    exact_calls = []
    original = rc._adjacent_correlation

    def exact(values: np.ndarray) -> float:
        exact_calls.append(1)
        return original(values)

    decisions = []
    for values in _correlated_matrices():
        monkeypatch.setattr(rc, "_adjacent_correlation", exact)
        decided = rc._correlated(values)
        monkeypatch.undo()
        assert decided == (original(values) >= rc.DNA_MIN_CORRELATION), values.shape
        decisions.append(decided)
    assert True in decisions and False in decisions
    assert 0 < len(exact_calls) < len(decisions) // 2  # mostly the compiled figure decides
    # At the threshold itself the compiled figure is too close to decide: corrcoef's does.
    values = _correlated_matrices()[10]
    r = original(values)
    for threshold, expected in ((r, True), (np.nextafter(r, 2.0), False)):
        exact_calls.clear()
        monkeypatch.setattr(rc, "DNA_MIN_CORRELATION", threshold)
        monkeypatch.setattr(rc, "_adjacent_correlation", exact)
        assert rc._correlated(values) is expected and exact_calls
        monkeypatch.undo()
    rng = np.random.default_rng(9)
    a, b = rng.normal(3, 2, (50, 70)), rng.normal(-1, 5, (50, 70))
    mean_a, mean_b, saa, sbb, sab, flat = rc._pair_moments(a, b)
    assert not flat and np.allclose([mean_a, mean_b], [a.mean(), b.mean()], rtol=1e-12)
    assert np.allclose([saa, sbb, sab], [((a - a.mean()) ** 2).sum(), ((b - b.mean()) ** 2).sum(),
                                         ((a - a.mean()) * (b - b.mean())).sum()], rtol=1e-10)
    assert rc._pair_moments(np.ones((3, 3)), b[:3, :3])[5]
