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
