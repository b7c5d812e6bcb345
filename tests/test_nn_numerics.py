"""Numerical behaviour of the engine: dropout statistics, extreme inputs, initialisers,
reproducibility, dtypes and in-place updates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from weightdna.errors import InvalidInputError
from weightdna.nn.activations import ReLU, Sigmoid, Sine, Softmax, Tanh
from weightdna.nn.initializers import (
    fans,
    he_normal,
    make_rng,
    siren_first_uniform,
    siren_hidden_uniform,
    xavier_normal,
)
from weightdna.nn.layers import Dense, Dropout, Flatten
from weightdna.nn.losses import (
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    accuracy,
)
from weightdna.nn.optimizers import SGD, Adam


@pytest.fixture(autouse=True)
def numpy_warnings_are_errors():
    # Overflow, log(0) and 0/0 raise here instead of passing as inf or nan; underflow to 0
    # is what a stable softmax or sigmoid is meant to do.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            yield


# ------------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_keeps_the_expected_activation(rate: float) -> None:
    x = np.full((1000, 1000), 2.0)
    out = Dropout(rate, rng=0).forward(x, training=True)
    keep = 1 - rate
    # Each entry is 2/keep with probability keep, else 0: std 2·sqrt(rate/keep) per entry,
    # so over 10⁶ entries the mean has std ≤ 0.004; 0.02 is five of those at worst.
    assert out.mean() == pytest.approx(2.0, abs=0.02)
    assert np.mean(out == 0) == pytest.approx(rate, abs=0.003)
    np.testing.assert_allclose(out[out != 0], 2.0 / keep, rtol=1e-12)


def test_dropout_is_identity_at_inference() -> None:
    x = np.random.default_rng(0).normal(size=(20, 30))
    layer = Dropout(0.5, rng=0)
    out = layer.forward(x)  # training defaults to False
    np.testing.assert_array_equal(out, x)
    g = np.ones_like(x)
    np.testing.assert_array_equal(layer.backward(g), g)
    np.testing.assert_array_equal(layer.forward(x, training=False), x)


def test_dropout_gradient_flows_through_kept_units_only() -> None:
    x = np.ones((50, 40))
    layer = Dropout(0.5, rng=3)
    out = layer.forward(x, training=True)
    d = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(d == 0, out == 0)
    np.testing.assert_allclose(d[d != 0], 2.0)


def test_dropout_rejects_invalid_rate() -> None:
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(InvalidInputError):
            Dropout(rate)


# ------------------------------------------------------------------------ extreme inputs


def test_softmax_is_finite_and_correct_for_huge_logits() -> None:
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])
    expected = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    layer = Softmax()
    out = layer.forward(logits)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, atol=1e-15)
    assert np.all(np.isfinite(layer.backward(np.ones_like(logits))))


def test_softmax_cross_entropy_is_finite_for_huge_logits() -> None:
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])
    labels = np.array([1, 2, 0])
    loss = SoftmaxCrossEntropy()
    # −log p: 2e4 for the first row (exactly, in log space), log 3, log 2.
    assert loss.forward(logits, labels) == pytest.approx((2e4 + np.log(3) + np.log(2)) / 3)
    grad = loss.backward(logits, labels)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)


def test_softmax_float32_stays_finite() -> None:
    logits = np.array([[1e4, -1e4, 0.0]], dtype=np.float32)
    out = Softmax().forward(logits)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_binary_cross_entropy_is_finite_at_exactly_zero_and_one(dtype) -> None:
    y_pred = np.array([[0.0], [1.0], [0.0], [1.0]], dtype=dtype)
    y_true = np.array([[0.0], [1.0], [1.0], [0.0]], dtype=dtype)
    loss = BinaryCrossEntropy()
    value = loss.forward(y_pred, y_true)
    grad = loss.backward(y_pred, y_true)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))
    assert grad.dtype == dtype
    # Right answers cost almost nothing; wrong ones cost about −log(eps) ≈ 16.1 each (in
    # float32, 1 − 1e-7 rounds to 1 − 2⁻²³, so a wrong "1" costs −log(2⁻²³) ≈ 15.9).
    rel = 1e-3 if dtype == np.float64 else 0.02
    assert value == pytest.approx(-np.log(1e-7) / 2, rel=rel)
    # The gradient still pushes each wrong prediction towards its target.
    assert grad[2, 0] < 0 < grad[3, 0]


def test_categorical_cross_entropy_is_finite_at_zero_probability() -> None:
    y_pred = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array([1, 1])
    loss = CategoricalCrossEntropy()
    assert np.isfinite(loss.forward(y_pred, labels))
    assert np.all(np.isfinite(loss.backward(y_pred, labels)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_is_finite_at_huge_inputs(dtype) -> None:
    z = np.array([1e4, -1e4, 0.0, 800.0, -800.0], dtype=dtype)
    layer = Sigmoid()
    out = layer.forward(z)
    np.testing.assert_array_equal(out, np.array([1.0, 0.0, 0.5, 1.0, 0.0], dtype=dtype))
    assert out.dtype == dtype
    assert np.all(np.isfinite(layer.backward(np.ones_like(z))))


def test_sigmoid_is_accurate_in_the_tails() -> None:
    # The naive 1/(1 + e^(−z)) rounds σ(−40) ≈ 4.2e-18 correctly too, but 1 − σ(z) style
    # formulas lose it; check the small tail against the exact e^z/(1 + e^z).
    z = np.array([-40.0, -700.0])
    np.testing.assert_allclose(Sigmoid().forward(z), np.exp(z) / (1 + np.exp(z)), rtol=1e-14)


# -------------------------------------------------------------------------- initialisers


def test_xavier_and_he_standard_deviations() -> None:
    shape = (300, 500)  # out × in; 150 000 draws: the std estimate is good to ~0.2%
    xavier = xavier_normal(shape, rng=0, dtype=np.float64)
    he = he_normal(shape, rng=0, dtype=np.float64)
    assert xavier.std() == pytest.approx(np.sqrt(2 / (500 + 300)), rel=0.01)
    assert he.std() == pytest.approx(np.sqrt(2 / 500), rel=0.01)
    assert abs(xavier.mean()) < 0.01 * xavier.std()
    assert abs(he.mean()) < 0.01 * he.std()


def test_dense_uses_fan_in_of_its_torch_layout() -> None:
    # Dense(in=800, out=50): He's std is sqrt(2/800), not sqrt(2/50).
    weight = Dense(800, 50, init="he", rng=0, dtype=np.float64).params["weight"]
    assert weight.shape == (50, 800)
    assert weight.std() == pytest.approx(np.sqrt(2 / 800), rel=0.02)


def test_siren_initialiser_bounds() -> None:
    n, omega0 = 64, 30.0
    first = siren_first_uniform((256, n), rng=0, dtype=np.float64)
    hidden = siren_hidden_uniform((256, n), rng=0, dtype=np.float64, omega0=omega0)
    for w, bound in ((first, 1 / n), (hidden, np.sqrt(6 / n) / omega0)):
        assert np.abs(w).max() <= bound
        # 16 384 uniform draws reach within 0.1% of both ends almost surely.
        assert w.max() > 0.999 * bound and w.min() < -0.999 * bound
        assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_dense_siren_biases_share_the_weight_range() -> None:
    layer = Dense(16, 500, init="siren_hidden", omega0=10.0, rng=0, dtype=np.float64)
    bound = np.sqrt(6 / 16) / 10.0
    assert np.abs(layer.params["bias"]).max() <= bound
    assert np.abs(layer.params["bias"]).max() > 0.9 * bound
    assert not np.any(Dense(16, 5, init="he", rng=0).params["bias"])


def test_fans_follow_torch_conventions() -> None:
    assert fans((5, 3)) == (3, 5)
    assert fans((8, 4, 3, 3)) == (36, 72)
    with pytest.raises(InvalidInputError):
        fans((7,))


def test_unknown_init_is_a_user_error() -> None:
    with pytest.raises(InvalidInputError, match="init"):
        Dense(3, 2, init="glorot_banana")


# ------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_same_weights() -> None:
    a = Dense(10, 7, rng=42)
    b = Dense(10, 7, rng=42)
    c = Dense(10, 7, rng=43)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], c.params["weight"])


def test_shared_generator_gives_a_reproducible_stream() -> None:
    def build(seed: int) -> list[np.ndarray]:
        rng = make_rng(seed)
        return [Dense(6, 6, rng=rng).params["weight"] for _ in range(3)]

    first, second = build(5), build(5)
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0], first[1])  # one stream, not one seed per layer


def test_same_seed_gives_same_dropout_mask() -> None:
    x = np.ones((30, 30))
    a = Dropout(0.5, rng=9).forward(x, training=True)
    b = Dropout(0.5, rng=9).forward(x, training=True)
    np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------------- dtypes and in place


def test_float32_stays_float32_through_a_network_step() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8)).astype(np.float32)
    labels = rng.integers(0, 3, size=16)
    layers = [Dense(8, 8, rng=0), ReLU(), Dropout(0.2, rng=0), Tanh(), Sine(), Dense(8, 3, rng=1)]
    out = x
    for layer in layers:
        out = layer.forward(out, training=True)
        assert out.dtype == np.float32, type(layer).__name__
    loss = SoftmaxCrossEntropy()
    loss.forward(out, labels)
    d = loss.backward(out, labels)
    assert d.dtype == np.float32
    for layer in reversed(layers):
        d = layer.backward(d)
        assert d.dtype == np.float32, type(layer).__name__
        for g in layer.grads.values():
            assert g.dtype == np.float32
    for optimizer in (SGD(0.1, momentum=0.9), Adam()):
        optimizer.step(layers)
        for layer in layers:
            for p in layer.params.values():
                assert p.dtype == np.float32


@pytest.mark.parametrize(
    "optimizer",
    [SGD(0.1), SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.9, convention="ema"), Adam(0.1)],
    ids=["sgd", "sgd-classical", "sgd-ema", "adam"],
)
def test_optimizers_update_parameters_in_place(optimizer) -> None:
    layer = Dense(4, 3, rng=0)
    held = dict(layer.params)
    before = {name: p.copy() for name, p in held.items()}
    layer.forward(np.ones((2, 4), dtype=np.float32))
    layer.backward(np.ones((2, 3), dtype=np.float32))
    optimizer.step([layer])
    for name, p in layer.params.items():
        assert p is held[name]
        assert not np.array_equal(p, before[name])


def test_momentum_state_is_per_layer() -> None:
    # Two layers with identical parameters and gradients must move identically; shared
    # state would give the second layer the first one's velocity.
    a, b = Dense(3, 2, rng=0), Dense(3, 2, rng=0)
    optimizer = SGD(0.1, momentum=0.9)
    for _ in range(3):
        for layer in (a, b):
            layer.forward(np.ones((1, 3), dtype=np.float32))
            layer.backward(np.ones((1, 2), dtype=np.float32))
        optimizer.step([a, b])
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])


def test_flatten_restores_shape() -> None:
    x = np.arange(24.0).reshape(2, 3, 4)
    layer = Flatten()
    assert layer.forward(x).shape == (2, 12)
    assert layer.backward(np.ones((2, 12))).shape == (2, 3, 4)


# ------------------------------------------------------------------- losses and accuracy


def test_mse_rejects_mismatched_targets() -> None:
    with pytest.raises(InvalidInputError):
        MeanSquaredError().forward(np.zeros((4, 2)), np.zeros(3))


def test_accuracy_label_kinds() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    assert accuracy(scores, labels) == 0.75
    assert accuracy(scores, np.eye(2)[labels]) == 0.75
    assert accuracy(np.array([[0.9], [0.2], [0.6]]), np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(np.array([2, 1, 0]), np.array([2, 1, 1])) == pytest.approx(2 / 3)


def test_layers_report_their_config() -> None:
    assert Dense(3, 2, init="xavier", l2=0.1).config() == {
        "in_features": 3,
        "out_features": 2,
        "init": "xavier",
        "omega0": 30.0,
        "l2": 0.1,
        "dtype": "float32",
    }
    assert Sine(omega0=12.0).config() == {"omega0": 12.0}
    assert Dropout(0.25).config() == {"rate": 0.25}
    assert ReLU().config() == {}
    rebuilt = Dense(**Dense(5, 4, init="siren_first").config())
    assert rebuilt.params["weight"].shape == (4, 5)


def test_relu_derivative_is_one_above_zero_and_zero_elsewhere() -> None:
    # Seed 002: 1 for z > 0, 0 for z <= 0 — including z exactly 0, as torch.relu does.
    z = np.array([-5.0, -1e-3, -1e-300, 0.0, 1e-300, 1e-3, 5.0])
    layer = ReLU()
    np.testing.assert_array_equal(layer.forward(z), np.maximum(z, 0))
    np.testing.assert_array_equal(layer.backward(np.full_like(z, 2.0)), [0, 0, 0, 0, 2, 2, 2])
