"""Seeded subsampling of large inputs, bootstrap intervals and input checks for the estimators."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from weightdna.coords import matrix_shape
from weightdna.errors import InvalidInputError

RandomState = int | np.random.Generator | None


def as_generator(random_state: RandomState) -> np.random.Generator:
    """A NumPy generator from a seed (int), a generator (used as is) or None (seed 0)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    # None means seed 0, not fresh entropy: every analysis must be reproducible.
    return np.random.default_rng(0 if random_state is None else random_state)


def check_points(X: object, min_points: int = 2, name: str = "X") -> np.ndarray:
    """X as a finite float64 array of shape (n_points, n_features); 1-D input is one feature."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise InvalidInputError(
            f"{name} must be a 2-D array (n_points, n_features), got shape {X.shape}; "
            "reshape a tensor so that each row is one point"
        )
    if X.shape[0] < min_points:
        raise InvalidInputError(
            f"{name} has {X.shape[0]} points; this estimator needs at least {min_points}"
        )
    if not np.all(np.isfinite(X)):
        raise InvalidInputError(f"{name} contains NaN or infinite values; remove them first")
    return X


def check_tensor(W: object, name: str = "W") -> np.ndarray:
    """W as a finite float64 matrix: 1-D is one row; >2-D keeps axis 0 and flattens the rest."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 0 or W.size == 0:
        raise InvalidInputError(f"{name} must be a non-empty array, got shape {W.shape}")
    # The matrix layout of φ: a vector is one row, a conv kernel is out × (in·kh·kw).
    W = W.reshape(matrix_shape(W.shape))
    if not np.all(np.isfinite(W)):
        raise InvalidInputError(f"{name} contains NaN or infinite values; remove them first")
    return W


def sample_indices(n: int, max_points: int | None, random_state: RandomState) -> np.ndarray:
    """Sorted indices of a seeded sample of min(n, max_points) of n items (all of them if None)."""
    if max_points is None or max_points >= n:
        return np.arange(n)
    if max_points < 1:
        raise InvalidInputError(f"max_points must be at least 1, got {max_points}")
    rng = as_generator(random_state)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def _mean_of_rows(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=-1)


def bootstrap_interval(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] = _mean_of_rows,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    random_state: RandomState = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic of values, resampled with replacement.

    statistic maps the resamples, an array (n_bootstrap, n), to n_bootstrap values (one per row).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or n_bootstrap < 1:
        return (float("nan"), float("nan"))
    rng = as_generator(random_state)
    resamples = values[rng.integers(0, values.size, size=(n_bootstrap, values.size))]
    stats = np.asarray(statistic(resamples), dtype=np.float64)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))
