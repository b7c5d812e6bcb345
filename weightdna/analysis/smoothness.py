"""Spatial smoothness of conv kernels: how much neighbouring taps within a kh × kw window differ.

Roughness G = (mean squared difference of horizontally and vertically adjacent taps) /
(2 × the taps' variance about their window's mean), the sums pooled over windows. Taps
drawn independently give G ≈ 1 (E(a − b)² = 2σ²); a smooth kernel gives G ≪ 1; one that
alternates in sign, up to 2. On a Gaussian source, predicting each tap from its neighbour
leaves a residual of 2σ²G, which is what the structure map's bit estimate uses.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import RandomState, as_generator, bootstrap_interval
from weightdna.errors import InvalidInputError


class WindowRoughness(BaseEstimator):
    """G over the kh × kw windows of X (rows of flattened windows, or (…, kh, kw)).

    Attributes: roughness_, interval_ (bootstrap over the windows), n_windows_.
    """

    def __init__(self, window: tuple[int, int] = (3, 3), n_bootstrap: int = 20,
                 random_state: RandomState = 0):
        self.window = window
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> WindowRoughness:
        """Pool the neighbour differences and spreads of every window of X."""
        kh, kw = self.window
        if kh * kw < 2 or min(kh, kw) < 1:
            raise InvalidInputError(f"a {kh}×{kw} window has no neighbouring taps")
        windows = np.asarray(X, dtype=np.float64).reshape(-1, kh, kw)
        squares = []
        if kw > 1:
            squares.append((np.diff(windows, axis=2) ** 2).reshape(len(windows), -1))
        if kh > 1:
            squares.append((np.diff(windows, axis=1) ** 2).reshape(len(windows), -1))
        differences = np.concatenate(squares, axis=1)
        centred = windows - windows.mean(axis=(1, 2), keepdims=True)
        # Per window: the sum of squared neighbour differences over the pair count, and
        # twice the unbiased variance of its taps; G is the ratio of their sums.
        self._numerator = differences.sum(axis=1) / differences.shape[1]
        self._denominator = 2.0 * (centred**2).sum(axis=(1, 2)) / (kh * kw - 1)
        if self._denominator.sum() <= 0.0:
            raise InvalidInputError("every window is constant: roughness is undefined")
        self.n_windows_ = len(windows)
        self.roughness_ = float(self._numerator.sum() / self._denominator.sum())
        self.interval_ = bootstrap_interval(
            np.arange(len(windows)), self._ratio, n_bootstrap=self.n_bootstrap,
            random_state=as_generator(self.random_state))
        return self

    def _ratio(self, resamples: np.ndarray) -> np.ndarray:
        idx = resamples.astype(np.int64)
        return self._numerator[idx].sum(axis=1) / np.maximum(
            self._denominator[idx].sum(axis=1), 1e-300)
