"""Maximum-likelihood intrinsic dimension (Levina–Bickel), averaged as MacKay–Ghahramani advise."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.analysis._neighbors import query_neighbors
from weightdna.analysis.sampling import (
    RandomState,
    bootstrap_interval,
    check_points,
    sample_indices,
)
from weightdna.errors import InvalidInputError


def _harmonic_mean_of_rows(samples: np.ndarray) -> np.ndarray:
    return 1.0 / np.mean(1.0 / samples, axis=-1)


class MLEDimension(BaseEstimator):
    """Levina–Bickel maximum-likelihood dimension from the distances to the k nearest neighbours.

    Point cloud: the rows of X (n_points, n_features); pass W.T to use columns as points.
    Per query point, m(x) = [(1/(k−1)) Σ_{j<k} log(T_k(x)/T_j(x))]⁻¹ with T_j the distance to
    the j-th nearest other point; the global estimate averages the inverses,
    dimension_ = 1 / mean(1/m(x)) (MacKay & Ghahramani 2005), which is the maximum-likelihood
    combination and matches scikit-dimension's MLE(comb="mle"). Query points are a seeded
    sample of up to max_points rows; their neighbours are searched among all rows. Points with a
    zero neighbour distance (duplicates) are skipped: their likelihood is undefined.

    Attributes: dimension_, dimension_pw_ (m(x) per query point), n_neighbors_,
    sample_indices_, sample_size_, interval_ (percentile bootstrap over the query points;
    neighbourhoods overlap, so the m(x) are not independent and the interval is optimistic).
    """

    def __init__(
        self,
        n_neighbors: int = 20,
        max_points: int | None = 2000,
        n_bootstrap: int = 200,
        confidence: float = 0.95,
        random_state: RandomState = 0,
    ):
        self.n_neighbors = n_neighbors
        self.max_points = max_points
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> MLEDimension:
        """Estimate the dimension around each sampled point and combine them."""
        X = check_points(X, min_points=4)
        k = min(self.n_neighbors, X.shape[0] - 1)
        if k < 3:
            raise InvalidInputError(f"n_neighbors must be at least 3, got {self.n_neighbors}")
        query = sample_indices(X.shape[0], self.max_points, self.random_state)
        dist, _ = query_neighbors(X, query, k)
        valid = dist[:, 0] > 0
        if not valid.any():
            raise InvalidInputError("every point has a duplicate; the MLE dimension is undefined")
        dist = dist[valid]
        log_ratios = np.log(dist[:, -1:] / dist[:, :-1])
        with np.errstate(divide="ignore"):
            # All k distances equal gives an infinite local dimension; 1/m = 0 handles it below.
            inverse = log_ratios.sum(axis=1) / (k - 1)
            pointwise = 1.0 / inverse
        self.n_neighbors_ = k
        self.sample_indices_ = query[valid]
        self.sample_size_ = int(valid.sum())
        self.dimension_pw_ = pointwise
        self.dimension_ = float(1.0 / inverse.mean())
        self.interval_ = bootstrap_interval(
            pointwise,
            _harmonic_mean_of_rows,
            self.n_bootstrap,
            self.confidence,
            self.random_state,
        )
        return self
