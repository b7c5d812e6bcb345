"""Data sets and the three reference recipes, with their accuracy targets (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from weightdna.data import load_digits, spiral_bayes_predict, spiral_data
from weightdna.errors import InvalidInputError
from weightdna.train import (
    SPIRAL_CLASSES,
    SPIRAL_VALIDATION_OFFSET,
    SPIRAL_VALIDATION_POINTS,
    train_digits_cnn,
    train_digits_mlp,
    train_recipe,
    train_spiral,
)


def test_spiral_data_shapes_labels_and_seed() -> None:
    X, y = spiral_data(100, 3, seed=0)
    assert X.shape == (300, 2) and X.dtype == np.float32
    assert y.shape == (300,) and np.array_equal(np.bincount(y), [100, 100, 100])
    # nnfs: the radius runs evenly from 0 to 1 in each class; only the angle is noisy.
    np.testing.assert_allclose(np.hypot(*X[:100].T), np.linspace(0, 1, 100), atol=1e-6)
    again, _ = spiral_data(100, 3, seed=0)
    other, _ = spiral_data(100, 3, seed=1)
    np.testing.assert_array_equal(X, again)
    assert not np.array_equal(X, other)


def test_spiral_without_noise_follows_the_nnfs_formula() -> None:
    X, _ = spiral_data(5, 2, noise=0.0)
    r = np.linspace(0, 1, 5)
    t = np.linspace(4, 8, 5)  # class 1
    np.testing.assert_allclose(X[5:], np.c_[r * np.sin(2.5 * t), r * np.cos(2.5 * t)],
                               atol=1e-6)


def test_spiral_bayes_classifier_is_a_ceiling() -> None:
    clean, y_clean = spiral_data(200, 3, noise=0.0, seed=0)
    # Without noise only the shared centre point is ambiguous.
    assert np.mean(spiral_bayes_predict(clean, 3, noise=0.05) == y_clean) > 0.99
    # With the nnfs noise (0.2), classes 0 and 2 lie only 1.15 rad apart on every ring
    # while the angle noise is 0.5 rad: about 91% is the best anyone can do.
    accs = [
        np.mean(spiral_bayes_predict(X, 3) == y)
        for X, y in (spiral_data(100, 3, seed=s) for s in range(20))
    ]
    assert 0.89 < np.mean(accs) < 0.93


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(InvalidInputError):
        spiral_data(0, 3)
    with pytest.raises(InvalidInputError):
        load_digits(test_size=1.5)
    with pytest.raises(InvalidInputError, match="unknown model"):
        train_recipe("resnet")


def test_load_digits_split_and_layout() -> None:
    X_train, X_test, y_train, y_test = load_digits()
    assert X_train.shape == (1437, 64) and X_test.shape == (360, 64)
    assert X_train.dtype == np.float32 and 0.0 <= X_train.min() and X_train.max() == 1.0
    assert y_train.dtype.kind == "i" and set(np.unique(y_test)) == set(range(10))
    images, _, _, _ = load_digits(image=True)
    assert images.shape == (1437, 1, 8, 8)
    np.testing.assert_array_equal(images.reshape(-1, 64), X_train)


def test_recipes_repeat_exactly() -> None:
    a = train_recipe("mlp", epochs=1, seed=3)
    b = train_recipe("mlp", epochs=1, seed=3)
    for name, value in a.model.state_dict().items():
        np.testing.assert_array_equal(value, b.model.state_dict()[name])
    assert a.history == b.history


@pytest.mark.slow
def test_spiral_model_generalises_to_a_fresh_spiral() -> None:
    run = train_spiral(seed=0)
    # The recipe judges itself on a spiral it never saw; recompute that here independently.
    X_val, y_val = spiral_data(
        SPIRAL_VALIDATION_POINTS, SPIRAL_CLASSES, seed=SPIRAL_VALIDATION_OFFSET
    )
    accuracy = float(np.mean(run.model.predict(X_val).argmax(axis=1) == y_val))
    assert accuracy == pytest.approx(run.test_accuracy)
    assert accuracy >= 0.90
    # And it is close to the best possible on that spiral, not lucky on an easy draw.
    bayes = float(np.mean(spiral_bayes_predict(X_val, SPIRAL_CLASSES) == y_val))
    assert accuracy >= bayes - 0.03


@pytest.mark.slow
def test_digits_mlp_reaches_97_percent() -> None:
    run = train_digits_mlp(seed=0)
    assert run.test_accuracy >= 0.97
    assert run.history["accuracy"][-1] > 0.99


@pytest.mark.slow
def test_digits_cnn_reaches_97_percent() -> None:
    run = train_digits_cnn(seed=0)
    assert run.test_accuracy >= 0.97
    assert run.history["loss"][-1] < run.history["loss"][0] / 10
