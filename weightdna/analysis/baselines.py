"""Null baselines: a statistic on shuffled weights and on Gaussian weights of equal variance."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone

from weightdna.analysis.sampling import RandomState, as_generator


def shuffled_like(W: np.ndarray, random_state: RandomState = 0) -> np.ndarray:
    """W's entries in a seeded random order: same values, no positional structure."""
    W = np.asarray(W)
    return as_generator(random_state).permutation(W.ravel()).reshape(W.shape)


def gaussian_like(W: np.ndarray, random_state: RandomState = 0) -> np.ndarray:
    """Seeded Gaussian entries with W's shape, mean and variance."""
    W = np.asarray(W, dtype=np.float64)
    return as_generator(random_state).normal(W.mean(), W.std(), W.shape)


def null_baselines(
    X: np.ndarray, estimator: BaseEstimator, random_state: RandomState = 0
) -> dict[str, BaseEstimator]:
    """Fit fresh copies of estimator on X, on X shuffled and on Gaussian X of equal variance.

    Returns {"weights": …, "shuffled": …, "gaussian": …}, each a fitted clone; the estimator
    passed in is left untouched.
    """
    rng = as_generator(random_state)
    inputs = {
        "weights": np.asarray(X),
        "shuffled": shuffled_like(X, rng),
        "gaussian": gaussian_like(X, rng),
    }
    return {name: clone(estimator).fit(data) for name, data in inputs.items()}
