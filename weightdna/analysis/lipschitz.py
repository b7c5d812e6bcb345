"""Empirical Lipschitz constant of a weight matrix as a function of its coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import RandomState, check_tensor, sample_indices
from weightdna.coords import axis_coordinate
from weightdna.errors import InvalidInputError


def _spacing(size: int) -> float:
    """Coordinate distance between neighbouring entries of an axis of `size` (φ of coords)."""
    return float(np.diff(axis_coordinate([0, 1], size))[0])


class LipschitzConstant(BaseEstimator):
    """Ratios |Δw|/|Δc| between neighbouring weights, c the coordinates of SPEC's φ.

    Point cloud: the graph of (coordinates, value) of a matrix W (m × n): w = W[i, j] at
    c = (2i/(m−1) − 1, 2j/(n−1) − 1), as weightdna.coords.axis_coordinate places them.
    Neighbours are (i, j)–(i+1, j), |Δc| = 2/(m−1), and (i, j)–(i, j+1), |Δc| = 2/(n−1).
    Tensors are laid out as matrices as coords does: a vector is one row; more than two
    axes are read as W.reshape(shape[0], −1).

    Attributes: max_, quantiles_ (dict q → value), max_by_axis_ (dict axis → max; axis 0
    means i changes), n_pairs_, ratios_ (for plotting: the ratios, axis 0 then axis 1, or a
    seeded sample of max_stored of them).
    """

    def __init__(
        self,
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        max_stored: int | None = 100_000,
        random_state: RandomState = 0,
    ):
        self.quantiles = quantiles
        self.max_stored = max_stored
        self.random_state = random_state

    def fit(self, W: np.ndarray, y: None = None) -> LipschitzConstant:
        """Compute every neighbour ratio of W and summarise them."""
        W = check_tensor(W)
        m, n = W.shape
        if m < 2 and n < 2:
            raise InvalidInputError("W has a single entry; it has no neighbouring coordinates")
        along = {}
        if m > 1:
            along[0] = (np.abs(np.diff(W, axis=0)) / _spacing(m)).ravel()
        if n > 1:
            along[1] = (np.abs(np.diff(W, axis=1)) / _spacing(n)).ravel()
        ratios = np.concatenate(list(along.values()))
        # Summaries use every ratio; only the copy kept for plotting is sampled, to bound memory
        # (an embedding table has tens of millions of neighbour pairs).
        self.ratios_ = ratios[sample_indices(ratios.size, self.max_stored, self.random_state)]
        self.n_pairs_ = int(ratios.size)
        self.max_ = float(ratios.max())
        self.max_by_axis_ = {axis: float(r.max()) for axis, r in along.items()}
        values = np.quantile(ratios, self.quantiles)
        self.quantiles_ = {float(q): float(v) for q, v in zip(self.quantiles, values, strict=True)}
        return self
