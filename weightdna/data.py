"""Data sets the engine is trained on: the spiral of seed 002 and scikit-learn's digits."""

from __future__ import annotations

import numpy as np

from weightdna.errors import InvalidInputError

# One class's spiral covers t in [4c, 4c + 4]; the angle is 2.5·t (the nnfs recipe).
_T_SPAN = 4.0
_ANGLE_PER_T = 2.5


def spiral_data(
    points_per_class: int,
    classes: int,
    noise: float = 0.2,
    seed: int = 0,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved noisy spirals, one per class (nnfs): X (N, 2), integer labels y (N,).

    The radius runs evenly from 0 to 1; only the angle is noisy (``noise`` is the standard
    deviation of t, the angle being 2.5·t).
    """
    if points_per_class < 1 or classes < 1:
        raise InvalidInputError(
            f"spiral_data needs at least one point and one class, got "
            f"points_per_class={points_per_class}, classes={classes}"
        )
    if noise < 0:
        raise InvalidInputError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    X = np.zeros((points_per_class * classes, 2), dtype=np.float64)
    y = np.zeros(points_per_class * classes, dtype=np.int64)
    for c in range(classes):
        rows = slice(c * points_per_class, (c + 1) * points_per_class)
        r = np.linspace(0.0, 1.0, points_per_class)
        t = np.linspace(c * _T_SPAN, (c + 1) * _T_SPAN, points_per_class)
        t = t + rng.standard_normal(points_per_class) * noise
        X[rows] = np.c_[r * np.sin(t * _ANGLE_PER_T), r * np.cos(t * _ANGLE_PER_T)]
        y[rows] = c
    return X.astype(dtype), y


def spiral_bayes_predict(X: np.ndarray, classes: int, noise: float = 0.2) -> np.ndarray:
    """The best possible classifier for ``spiral_data``: the most likely class of each point.

    It knows the generator (exact radius, Gaussian noise on t), so its accuracy on a spiral
    is the ceiling any trained model can reach on it.
    """
    X = np.asarray(X, dtype=np.float64)
    r = np.hypot(X[:, 0], X[:, 1])
    angle = np.arctan2(X[:, 0], X[:, 1])  # x = r·sin, y = r·cos
    # Every t that lands on this angle: (angle + 2πk) / 2.5, for all windings k in reach.
    reach = int(np.ceil((classes * _T_SPAN + 6 * noise) * _ANGLE_PER_T / (2 * np.pi))) + 2
    k = np.arange(-reach, reach + 1)
    t = (angle[:, None] + 2 * np.pi * k[None, :]) / _ANGLE_PER_T
    scores = np.empty((len(X), classes))
    sigma = max(noise, 1e-12)
    for c in range(classes):
        mean_t = c * _T_SPAN + r * _T_SPAN
        scores[:, c] = np.exp(-0.5 * ((t - mean_t[:, None]) / sigma) ** 2).sum(axis=1)
    return scores.argmax(axis=1)


def load_digits(
    test_size: float = 0.2,
    seed: int = 0,
    image: bool = False,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits, scaled to [0, 1], split stratified by class.

    Returns ``X_train, X_test, y_train, y_test``; X is (N, 64), or (N, 1, 8, 8) with
    ``image=True`` (NCHW, as the engine's Conv2D and PyTorch expect).
    """
    if not 0.0 < test_size < 1.0:
        raise InvalidInputError(f"test_size must lie strictly between 0 and 1, got {test_size}")
    # Imported here so that importing weightdna.data stays cheap.
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    X = (digits.data / 16.0).astype(dtype)  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    if image:
        X_train = X_train.reshape(-1, 1, 8, 8)
        X_test = X_test.reshape(-1, 1, 8, 8)
    return X_train, X_test, y_train, y_test
