"""Local linearity: how well a tangent plane through a weight's neighbours predicts the weight."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import RandomState, as_generator, check_tensor
from weightdna.errors import InvalidInputError


def tangent_filter(window: int, degree: int = 1) -> np.ndarray:
    """Filter h (window × window): Σ h·W[window] is the least-squares surface at the centre.

    The surface is a polynomial of the given degree in the (row, col) offsets (1: a plane,
    2: a quadric, for curvature), fitted to the window without its centre. The prediction is
    linear in the values, so one filter serves every position. For a symmetric window and
    degree 1 it is the mean of the neighbours, since odd offsets cancel.
    """
    if window < 3 or window % 2 == 0:
        raise InvalidInputError(f"window must be an odd integer ≥ 3, got {window}")
    if degree not in (1, 2):
        raise InvalidInputError(f"degree must be 1 (plane) or 2 (quadric), got {degree}")
    half = window // 2
    di, dj = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
    di, dj = di.ravel().astype(float), dj.ravel().astype(float)
    columns = [np.ones_like(di), di, dj]
    if degree == 2:
        columns += [di * di, di * dj, dj * dj]
    design = np.stack(columns, axis=1)
    centre = design.shape[0] // 2
    rows = np.arange(design.shape[0]) != centre
    # The fitted surface's value at offset (0, 0) is its constant term.
    hat = np.linalg.pinv(design[rows])[0]
    h = np.zeros(design.shape[0])
    h[rows] = hat
    return h.reshape(window, window)


def _prediction_scores(W: np.ndarray, h: np.ndarray) -> tuple[float, float]:
    """R² and relative error ‖w − ŵ‖/‖w‖ of the filter's predictions over interior positions."""
    k = h.shape[0]
    half = k // 2
    pred = np.einsum("ijab,ab->ij", sliding_window_view(W, (k, k)), h)
    true = W[half : W.shape[0] - half, half : W.shape[1] - half]
    sse = float(np.sum((true - pred) ** 2))
    sst = float(np.sum((true - true.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else float("nan")
    norm = float(np.sum(true**2))
    rel = float(np.sqrt(sse / norm)) if norm > 0 else float("nan")
    return r2, rel


class LocalLinearity(BaseEstimator):
    """R² of predicting each weight from a tangent plane fitted to its window × window neighbours.

    Point cloud: the graph of (coordinates, value) of a matrix W: w = W[i, j] over (i, j).
    At every interior position a least-squares plane (degree=2: quadric) in the row and column
    offsets is fitted to the window × window neighbourhood without the centre, and evaluated
    at the centre. Border positions, whose windows are cut off, are left out. The same is
    measured on a seeded shuffle of W's entries, which destroys any spatial structure:
    R² near 1 means locally linear; near or below 0 (≈ −1/8 for i.i.d. weights with 3×3
    windows, as the plane is then the neighbours' mean) means no local structure.

    Attributes: r2_, relative_error_, shuffled_r2_, shuffled_relative_error_, n_predicted_.
    """

    def __init__(self, window: int = 3, degree: int = 1, random_state: RandomState = 0):
        self.window = window
        self.degree = degree
        self.random_state = random_state

    def fit(self, W: np.ndarray, y: None = None) -> LocalLinearity:
        """Score tangent-plane predictions on W and on W shuffled."""
        W = check_tensor(W)
        h = tangent_filter(self.window, self.degree)
        if W.shape[0] < self.window or W.shape[1] < self.window:
            raise InvalidInputError(
                f"W of shape {W.shape} is smaller than the {self.window}×{self.window} window"
            )
        self.r2_, self.relative_error_ = _prediction_scores(W, h)
        rng = as_generator(self.random_state)
        shuffled = rng.permutation(W.ravel()).reshape(W.shape)
        self.shuffled_r2_, self.shuffled_relative_error_ = _prediction_scores(shuffled, h)
        self.n_predicted_ = int((W.shape[0] - self.window + 1) * (W.shape[1] - self.window + 1))
        return self
