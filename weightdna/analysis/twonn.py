"""TwoNN intrinsic dimension (Facco et al. 2017) from the ratio of the two nearest distances."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.analysis._neighbors import query_neighbors
from weightdna.analysis.sampling import (
    RandomState,
    as_generator,
    check_points,
    sample_indices,
)
from weightdna.errors import InvalidInputError


class TwoNN(BaseEstimator):
    """TwoNN dimension: μ = r₂/r₁ follows a Pareto law of shape d on a d-dimensional manifold.

    Point cloud: the rows of X (n_points, n_features); pass W.T to use columns as points.
    As in Facco et al. and scikit-dimension's TwoNN(method="linear"): sort the μ of N points,
    drop the largest discard_fraction, and fit −log(1 − i/N) = d·log μ₍ᵢ₎ through the origin.
    Query points are a seeded sample of up to max_points rows, neighbours searched among all
    rows; points with r₁ = 0 (duplicates) are dropped.

    Attributes: dimension_, log_mu_, sample_size_, interval_ (bootstrap over the μ values).
    """

    def __init__(
        self,
        discard_fraction: float = 0.1,
        max_points: int | None = 2000,
        n_bootstrap: int = 200,
        confidence: float = 0.95,
        random_state: RandomState = 0,
    ):
        self.discard_fraction = discard_fraction
        self.max_points = max_points
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> TwoNN:
        """Estimate the dimension from the ratios of second to first neighbour distances."""
        if not 0.0 <= self.discard_fraction < 1.0:
            raise InvalidInputError(
                f"discard_fraction must lie in [0, 1), got {self.discard_fraction}"
            )
        X = check_points(X, min_points=3)
        query = sample_indices(X.shape[0], self.max_points, self.random_state)
        dist, _ = query_neighbors(X, query, 2)
        valid = dist[:, 0] > 0
        log_mu = np.log(dist[valid, 1] / dist[valid, 0])
        if log_mu.size < 3:
            raise InvalidInputError("fewer than 3 distinct points; TwoNN needs more")
        self.log_mu_ = log_mu
        self.sample_size_ = int(log_mu.size)
        self.dimension_ = float(_fit_twonn(log_mu[None, :], self.discard_fraction)[0])
        if self.n_bootstrap > 0:
            rng = as_generator(self.random_state)
            resamples = log_mu[rng.integers(0, log_mu.size, (self.n_bootstrap, log_mu.size))]
            stats = _fit_twonn(resamples, self.discard_fraction)
            alpha = (1.0 - self.confidence) / 2.0
            lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
            self.interval_ = (float(lo), float(hi))
        else:
            self.interval_ = None
        return self


def _fit_twonn(log_mu: np.ndarray, discard_fraction: float) -> np.ndarray:
    """Slope through the origin of −log(1 − F) on log μ, one per row of log_mu (B, N)."""
    n = log_mu.shape[1]
    # The last point has F = 1 and −log(0) = ∞: never keep it.
    keep = min(int(n * (1.0 - discard_fraction)), n - 1)
    x = np.sort(log_mu, axis=1)[:, :keep]
    y = -np.log(1.0 - np.arange(1, keep + 1) / n)
    # Rows with identical nearest neighbours give μ = 1, log μ = 0 throughout: no slope, NaN
    # (shown as undefined), not a warning.
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x @ y) / np.einsum("ij,ij->i", x, x)
