"""Null baselines: a statistic on shuffled weights, on Gaussian weights of equal variance, and
on the weights shuffled within each row (which keeps every row's norm and values)."""

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


def row_shuffled_like(W: np.ndarray, random_state: RandomState = 0) -> np.ndarray:
    """W with each row's entries in its own seeded random order: every row keeps its values
    (so its norm and mean), any order along the row is gone. 1-D input is one row; a tensor
    of more dimensions is shuffled within each slice along axis 0."""
    W = np.asarray(W)
    rows = W.reshape(1 if W.ndim < 2 else W.shape[0], -1)
    order = np.argsort(as_generator(random_state).random(rows.shape), axis=1)
    return np.take_along_axis(rows, order, axis=1).reshape(W.shape)


# The nulls of every statistic, by the name results and reports use.
NULLS = {"shuffled": shuffled_like, "gaussian": gaussian_like}
# The lenses (weightdna.analysis.lenses) are also measured on the row-norm-keeping null.
LENS_NULLS = {**NULLS, "within_rows": row_shuffled_like}


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
