"""Recipes that build and train the three reference models with fixed seeds.

* ``spiral``: an MLP on seed 002's three interleaved spirals, judged on a freshly drawn
  spiral (another seed) and beside the best possible (Bayes) accuracy on it;
* ``mlp``: an MLP on scikit-learn's 8×8 digits;
* ``cnn``: a small convolutional network on the same digits.

Tests, the demo and the compression experiments train their models here, so each recipe
is fast (seconds on one core) and repeats exactly for a given seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from weightdna.data import load_digits, spiral_bayes_predict, spiral_data
from weightdna.errors import InvalidInputError
from weightdna.nn.activations import ReLU
from weightdna.nn.conv import Conv2D, MaxPool2D
from weightdna.nn.layers import Dense, Flatten
from weightdna.nn.losses import SoftmaxCrossEntropy, accuracy
from weightdna.nn.model import Callback, Model
from weightdna.nn.optimizers import Adam

SPIRAL_CLASSES = 3
# The spiral model trains on 1000 points per class. On 100 per class (the seed's figure)
# an MLP stays near 0.85 on a fresh spiral: with the nnfs noise the Bayes ceiling is only
# ≈ 0.91, and 300 noisy points do not pin the boundary down. Validation uses 100 per class.
SPIRAL_TRAIN_POINTS = 1000
SPIRAL_VALIDATION_POINTS = 100
# The validation spiral's seed is the training seed plus this, so the two never coincide.
SPIRAL_VALIDATION_OFFSET = 1000


@dataclass
class TrainingRun:
    """A trained reference model with its history and held-out accuracy."""

    name: str
    model: Model
    history: dict[str, list[float]]
    test_accuracy: float
    seconds: float
    details: dict[str, float] = field(default_factory=dict)


def build_spiral_model(seed: int = 0, hidden: int = 64) -> Model:
    """2 → hidden → hidden → 3 ReLU MLP (logits out; train with SoftmaxCrossEntropy)."""
    rng = np.random.default_rng(seed)
    return Model(
        [
            Dense(2, hidden, l2=1e-5, rng=rng),
            ReLU(),
            Dense(hidden, hidden, l2=1e-5, rng=rng),
            ReLU(),
            Dense(hidden, SPIRAL_CLASSES, rng=rng),
        ]
    )


def build_digits_mlp(seed: int = 0, hidden: Sequence[int] = (128, 64)) -> Model:
    """64 → hidden… → 10 ReLU MLP on flat 8×8 digits (logits out)."""
    rng = np.random.default_rng(seed)
    layers = []
    width = 64
    for size in hidden:
        layers += [Dense(width, size, rng=rng), ReLU()]
        width = size
    layers.append(Dense(width, 10, rng=rng))
    return Model(layers)


def build_digits_cnn(seed: int = 0) -> Model:
    """conv(16) → pool → conv(32) → pool → dense(64) → 10, on (N, 1, 8, 8) digits."""
    rng = np.random.default_rng(seed)
    return Model(
        [
            Conv2D(1, 16, 3, padding=1, rng=rng),
            ReLU(),
            MaxPool2D(2),
            Conv2D(16, 32, 3, padding=1, rng=rng),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(32 * 2 * 2, 64, rng=rng),
            ReLU(),
            Dense(64, 10, rng=rng),
        ]
    )


def train_spiral(
    epochs: int = 200,
    seed: int = 0,
    points_per_class: int = SPIRAL_TRAIN_POINTS,
    callbacks: Sequence[Callback] = (),
) -> TrainingRun:
    """Train the spiral model; test accuracy is on a fresh spiral drawn with another seed.

    ``details`` holds the Bayes (best possible) accuracy on that validation spiral.
    """
    X, y = spiral_data(points_per_class, SPIRAL_CLASSES, seed=seed)
    X_val, y_val = spiral_data(
        SPIRAL_VALIDATION_POINTS, SPIRAL_CLASSES, seed=seed + SPIRAL_VALIDATION_OFFSET
    )
    model = build_spiral_model(seed)
    run = _train(
        "spiral",
        model,
        (X, y),
        (X_val, y_val),
        epochs=epochs,
        batch_size=100,
        optimizer=Adam(learning_rate=0.005, decay=1e-3),
        seed=seed,
        callbacks=callbacks,
    )
    bayes = accuracy(spiral_bayes_predict(X_val, SPIRAL_CLASSES), y_val)
    run.details["bayes_accuracy"] = bayes
    return run


def train_digits_mlp(
    epochs: int = 30, seed: int = 0, callbacks: Sequence[Callback] = ()
) -> TrainingRun:
    """Train the digits MLP; test accuracy on the held-out 20% of the digits."""
    X_train, X_test, y_train, y_test = load_digits(seed=seed)
    return _train(
        "mlp",
        build_digits_mlp(seed),
        (X_train, y_train),
        (X_test, y_test),
        epochs=epochs,
        batch_size=32,
        optimizer=Adam(learning_rate=1e-3, decay=1e-3),
        seed=seed,
        callbacks=callbacks,
    )


def train_digits_cnn(
    epochs: int = 20, seed: int = 0, callbacks: Sequence[Callback] = ()
) -> TrainingRun:
    """Train the small digits CNN; test accuracy on the held-out 20% of the digits."""
    X_train, X_test, y_train, y_test = load_digits(seed=seed, image=True)
    return _train(
        "cnn",
        build_digits_cnn(seed),
        (X_train, y_train),
        (X_test, y_test),
        epochs=epochs,
        batch_size=32,
        optimizer=Adam(learning_rate=3e-3, decay=5e-3),
        seed=seed,
        callbacks=callbacks,
    )


RECIPES: dict[str, Callable[..., TrainingRun]] = {
    "spiral": train_spiral,
    "mlp": train_digits_mlp,
    "cnn": train_digits_cnn,
}


def train_recipe(
    name: str, epochs: int | None = None, seed: int = 0, callbacks: Sequence[Callback] = ()
) -> TrainingRun:
    """Run the recipe called ``name`` ("spiral", "mlp" or "cnn"); epochs None = its default."""
    if name not in RECIPES:
        raise InvalidInputError(f"unknown model {name!r}; choose one of {sorted(RECIPES)}")
    kwargs: dict[str, object] = {"seed": seed, "callbacks": callbacks}
    if epochs is not None:
        if epochs < 1:
            raise InvalidInputError(f"epochs must be >= 1, got {epochs}")
        kwargs["epochs"] = epochs
    return RECIPES[name](**kwargs)


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run NumPy's BLAS on one thread inside the block.

    The engine's matrices are small (tens to hundreds of rows per batch): BLAS threads
    cost more in start-up and spinning than they give, and on a shared machine they can
    make training several times slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn depends on it, but run unlimited without it.
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _train(
    name: str,
    model: Model,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    optimizer: Adam,
    seed: int,
    callbacks: Sequence[Callback],
) -> TrainingRun:
    loss = SoftmaxCrossEntropy()
    start = time.perf_counter()
    with single_blas_thread():
        history = model.fit(
            *train,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            loss=loss,
            validation_data=test,
            seed=seed,
            callbacks=callbacks,
        )
        _, test_accuracy = model.evaluate(*test, loss=loss)
    return TrainingRun(
        name=name,
        model=model,
        history=history,
        test_accuracy=test_accuracy,
        seconds=time.perf_counter() - start,
    )
