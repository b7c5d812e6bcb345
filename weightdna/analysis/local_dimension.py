"""Local dimension: PCA of each point's k nearest neighbours (the seed's d_local)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from weightdna.analysis._neighbors import query_neighbors
from weightdna.analysis.sampling import (
    RandomState,
    bootstrap_interval,
    check_points,
    sample_indices,
)
from weightdna.errors import InvalidInputError

_RULES = ("fraction_of_largest", "explained_variance")


class LocalDimension(BaseEstimator):
    """Number of significant eigenvalues of the covariance of each point's k nearest neighbours.

    Point cloud: the rows of X (n_points, n_features); pass W.T to use columns as points.
    For each of up to max_points seeded query points, the n_neighbors nearest other points
    (Euclidean, searched among all points) are centred on their mean and the eigenvalues of
    their covariance counted:
      rule="fraction_of_largest" (default): eigenvalues > threshold · largest eigenvalue
        (Fukunaga–Olsen, threshold 0.05 as in scikit-dimension's lPCA ver="FO");
      rule="explained_variance": the fewest eigenvalues holding `threshold` of the variance
        (e.g. 0.95).
    The per-point counts can never exceed max_dimension_ = min(n_neighbors − 1, n_features):
    an estimate at that cap (as for Gaussian weights) says only "at least this much".

    Attributes: dimension_ (mean over query points), dimension_pw_ (per query point),
    max_dimension_, n_neighbors_ (used; at most n_points − 1), sample_indices_,
    sample_size_, interval_ (percentile bootstrap of the mean over query points; overlapping
    neighbourhoods make it optimistic).
    """

    def __init__(
        self,
        n_neighbors: int = 100,
        threshold: float = 0.05,
        rule: str = "fraction_of_largest",
        max_points: int | None = 1000,
        n_bootstrap: int = 200,
        confidence: float = 0.95,
        random_state: RandomState = 0,
    ):
        self.n_neighbors = n_neighbors
        self.threshold = threshold
        self.rule = rule
        self.max_points = max_points
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> LocalDimension:
        """Estimate the local dimension around each sampled point and their mean."""
        if self.rule not in _RULES:
            raise InvalidInputError(f"rule must be one of {_RULES}, got {self.rule!r}")
        X = check_points(X, min_points=3)
        k = min(self.n_neighbors, X.shape[0] - 1)
        if k < 2:
            raise InvalidInputError(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        query = sample_indices(X.shape[0], self.max_points, self.random_state)
        _, idx = query_neighbors(X, query, k)
        dims = np.empty(len(query))
        # Chunks bound the memory of the (chunk, k, D) neighbourhood stack to ~32 MB.
        chunk = max(1, int(4e6 // (k * X.shape[1])))
        # Threaded BLAS on many small matrices spins its threads idle: measured 30× slower on
        # a busy 2-core machine than one thread. threadpoolctl comes with scikit-learn.
        with threadpool_limits(limits=1, user_api="blas"):
            for start in range(0, len(query), chunk):
                nb = X[idx[start : start + chunk]]
                nb = nb - nb.mean(axis=1, keepdims=True)
                dims[start : start + chunk] = self._count(_covariance_eigenvalues(nb))
        self.n_neighbors_ = k
        self.max_dimension_ = min(k - 1, X.shape[1])
        self.sample_indices_ = query
        self.sample_size_ = len(query)
        self.dimension_pw_ = dims
        self.dimension_ = float(dims.mean())
        self.interval_ = bootstrap_interval(
            dims,
            n_bootstrap=self.n_bootstrap,
            confidence=self.confidence,
            random_state=self.random_state,
        )
        return self

    def _count(self, eig: np.ndarray) -> np.ndarray:
        """Significant eigenvalues per row of eig (sorted descending)."""
        if self.rule == "fraction_of_largest":
            return (eig > self.threshold * eig[:, :1]).sum(axis=1)
        total = eig.sum(axis=1, keepdims=True)
        energy = np.cumsum(eig, axis=1) / np.where(total > 0, total, 1.0)
        return (energy < self.threshold - 1e-12).sum(axis=1) + 1


def _covariance_eigenvalues(nb: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of each centred neighbourhood's covariance, batch (B, k, D)."""
    k, d = nb.shape[1], nb.shape[2]
    # The k×k Gram matrix has the same nonzero eigenvalues as the D×D covariance: use the smaller.
    if k <= d:
        gram = nb @ nb.transpose(0, 2, 1)
    else:
        gram = nb.transpose(0, 2, 1) @ nb
    eig = np.linalg.eigvalsh(gram)[:, ::-1] / (k - 1)
    return np.clip(eig, 0.0, None)
