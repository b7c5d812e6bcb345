"""Finite-difference checks of every backward pass of the engine, in float64.

Each analytic gradient is compared with central differences (f(x + h) − f(x − h)) / 2h of a
scalar objective: ⟨output, G⟩ for a fixed random G (so backward receives G) for layers and
activations, the loss itself for losses.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from weightdna.nn.activations import ReLU, Sigmoid, Sine, Softmax, Tanh
from weightdna.nn.layers import Dense, Dropout, Flatten
from weightdna.nn.losses import (
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
)

H = 1e-6
# Central differences are O(h²) accurate, so 1e-6 relative leaves room only for rounding.
RTOL = 1e-6
ATOL = 1e-8


def numeric_gradient(f: Callable[[], float], x: np.ndarray, h: float = H) -> np.ndarray:
    """Central-difference gradient of f() with respect to the array x, perturbed in place."""
    grad = np.zeros_like(x)
    flat = x.reshape(-1)  # a view: writing it perturbs x itself
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + h
        plus = f()
        flat[i] = original - h
        minus = f()
        flat[i] = original
        grad.reshape(-1)[i] = (plus - minus) / (2 * h)
    return grad


def assert_close(analytic: np.ndarray, numeric: np.ndarray) -> None:
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL)


def check_layer(make_layer: Callable[[], object], x: np.ndarray, seed: int = 0) -> object:
    """Check dinputs and every grads entry of a layer against finite differences.

    make_layer is called once; the objective is ⟨forward(x), G⟩ + regularization_loss().
    """
    layer = make_layer()
    out = layer.forward(x, training=True)
    g = np.random.default_rng(seed).normal(size=out.shape)

    def objective() -> float:
        return float(np.sum(layer.forward(x, training=True) * g) + layer.regularization_loss())

    layer.forward(x, training=True)
    dinputs = layer.backward(g).copy()
    grads = {name: grad.copy() for name, grad in layer.grads.items()}
    assert dinputs.shape == x.shape
    assert_close(dinputs, numeric_gradient(objective, x))
    assert set(grads) == set(layer.params)
    for name, param in layer.params.items():
        assert grads[name].shape == param.shape
        assert_close(grads[name], numeric_gradient(objective, param))
    return layer


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.mark.parametrize("init", ["he", "xavier", "siren_first", "siren_hidden"])
def test_dense(rng: np.random.Generator, init: str) -> None:
    layer = check_layer(
        lambda: Dense(5, 4, init=init, rng=0, dtype=np.float64), rng.normal(size=(6, 5))
    )
    assert layer.params["weight"].shape == (4, 5)


def test_dense_with_l2_penalty(rng: np.random.Generator) -> None:
    layer = check_layer(
        lambda: Dense(5, 3, l2=0.3, rng=1, dtype=np.float64), rng.normal(size=(4, 5))
    )
    assert layer.regularization_loss() == pytest.approx(0.3 * np.sum(layer.params["weight"] ** 2))


def test_dense_on_leading_dimensions(rng: np.random.Generator) -> None:
    check_layer(lambda: Dense(3, 2, rng=2, dtype=np.float64), rng.normal(size=(2, 4, 3)))


def test_flatten(rng: np.random.Generator) -> None:
    check_layer(Flatten, rng.normal(size=(3, 2, 2, 3)))


def test_dropout_with_fixed_mask(rng: np.random.Generator) -> None:
    x = rng.normal(size=(8, 6))
    # A fresh layer with the same seed draws the same mask on every forward.
    layer = Dropout(0.4, rng=7)
    g = rng.normal(size=x.shape)

    def objective() -> float:
        return float(np.sum(Dropout(0.4, rng=7).forward(x, training=True) * g))

    layer.forward(x, training=True)
    assert 0 < np.count_nonzero(layer.mask) < layer.mask.size  # the mask really drops some
    assert_close(layer.backward(g), numeric_gradient(objective, x))


@pytest.mark.parametrize(
    ("make_activation", "scale"),
    [(ReLU, 1.0), (Sigmoid, 3.0), (Tanh, 1.0), (Softmax, 2.0), (Sine, 1 / 30), (Sine, 1.0)],
    ids=["relu", "sigmoid", "tanh", "softmax", "sine-siren-range", "sine-wide"],
)
def test_activation(
    rng: np.random.Generator, make_activation: Callable[[], object], scale: float
) -> None:
    x = rng.normal(size=(5, 4)) * scale
    # Keep ReLU's inputs away from the kink at 0, where the derivative is not defined.
    x = np.where(np.abs(x) < 1e-3, 0.5, x)
    check_layer(make_activation, x)


def check_loss(loss: object, y_pred: np.ndarray, y_true: np.ndarray) -> None:
    analytic = loss.backward(y_pred, y_true).copy()
    numeric = numeric_gradient(lambda: loss.forward(y_pred, y_true), y_pred)
    assert analytic.shape == y_pred.shape
    assert_close(analytic, numeric)


def test_mean_squared_error(rng: np.random.Generator) -> None:
    check_loss(MeanSquaredError(), rng.normal(size=(6, 3)), rng.normal(size=(6, 3)))


def test_mean_squared_error_single_output_with_flat_targets(rng: np.random.Generator) -> None:
    check_loss(MeanSquaredError(), rng.normal(size=(6, 1)), rng.normal(size=6))


def test_binary_cross_entropy(rng: np.random.Generator) -> None:
    y_pred = rng.uniform(0.05, 0.95, size=(7, 2))
    y_true = rng.integers(0, 2, size=(7, 2)).astype(np.float64)
    check_loss(BinaryCrossEntropy(), y_pred, y_true)


def _probabilities(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    e = np.exp(rng.normal(size=(n, k)))
    return e / e.sum(axis=1, keepdims=True)


def test_categorical_cross_entropy_integer_labels(rng: np.random.Generator) -> None:
    check_loss(CategoricalCrossEntropy(), _probabilities(rng, 6, 4), rng.integers(0, 4, size=6))


def test_categorical_cross_entropy_one_hot_labels(rng: np.random.Generator) -> None:
    y_true = np.eye(4)[rng.integers(0, 4, size=6)]
    check_loss(CategoricalCrossEntropy(), _probabilities(rng, 6, 4), y_true)


@pytest.mark.parametrize("one_hot", [False, True], ids=["integer", "one-hot"])
def test_softmax_cross_entropy(rng: np.random.Generator, one_hot: bool) -> None:
    labels = rng.integers(0, 5, size=7)
    y_true = np.eye(5)[labels] if one_hot else labels
    logits = rng.normal(size=(7, 5)) * 3
    check_loss(SoftmaxCrossEntropy(), logits, y_true)


def test_fused_softmax_cross_entropy_equals_softmax_then_cce(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(6, 3))
    labels = rng.integers(0, 3, size=6)
    fused = SoftmaxCrossEntropy()
    softmax, cce = Softmax(), CategoricalCrossEntropy()
    probabilities = softmax.forward(logits)
    assert fused.forward(logits, labels) == pytest.approx(cce.forward(probabilities, labels))
    np.testing.assert_allclose(fused.probabilities, probabilities, rtol=1e-12)
    chained = softmax.backward(cce.backward(probabilities, labels))
    np.testing.assert_allclose(fused.backward(logits, labels), chained, rtol=1e-9, atol=1e-12)
    expected = (probabilities - np.eye(3)[labels]) / 6  # the seed's (P − y)/N
    np.testing.assert_allclose(fused.dinputs, expected, rtol=1e-12, atol=1e-15)


def test_network_end_to_end(rng: np.random.Generator) -> None:
    """Dense → Tanh → Dropout → Dense(l2) → softmax-CCE: chained backward matches differences."""
    layers = [
        Dense(4, 6, init="xavier", rng=3, dtype=np.float64),
        Tanh(),
        Dropout(0.25, rng=5),
        Dense(6, 3, l2=0.01, rng=4, dtype=np.float64),
    ]
    loss = SoftmaxCrossEntropy()
    x = rng.normal(size=(5, 4))
    labels = rng.integers(0, 3, size=5)

    def objective() -> float:
        layers[2].rng = np.random.default_rng(5)  # the same dropout mask every time
        out = x
        for layer in layers:
            out = layer.forward(out, training=True)
        return loss.forward(out, labels) + sum(layer.regularization_loss() for layer in layers)

    objective()
    d = loss.backward(layers[-1].output, labels)
    for layer in reversed(layers):
        d = layer.backward(d)
    analytic = {
        (i, name): g.copy() for i, layer in enumerate(layers) for name, g in layer.grads.items()
    }
    for (i, name), grad in analytic.items():
        assert_close(grad, numeric_gradient(objective, layers[i].params[name]))
