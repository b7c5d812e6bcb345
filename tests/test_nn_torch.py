"""The engine's forward and backward passes, and its optimizer steps, against PyTorch.

Everything runs in float64 and must agree to 1e-6 relative (with a tiny absolute floor for
entries that are zero in exact arithmetic). PyTorch is the judge, as in micrograd's test.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weightdna.nn.activations import ReLU, Sigmoid, Sine, Softmax, Tanh
from weightdna.nn.layers import Dense, Dropout, Flatten
from weightdna.nn.losses import (
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
)
from weightdna.nn.optimizers import SGD, Adam

RTOL = 1e-6
ATOL = 1e-12


def close(engine: np.ndarray | float, reference: torch.Tensor) -> None:
    torch.testing.assert_close(
        torch.as_tensor(np.asarray(engine, dtype=np.float64)),
        reference.detach().to(torch.float64),
        rtol=RTOL,
        atol=ATOL,
    )


def leaf(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(2024)


def compare_layer(
    layer: object,
    torch_fn: Callable[..., torch.Tensor],
    x: np.ndarray,
    g: np.ndarray,
    extra_loss: Callable[..., torch.Tensor] | None = None,
) -> None:
    """Forward x through layer and torch_fn(x, **params), backward G, compare everything.

    The torch objective is ⟨out, G⟩ (+ extra_loss(**params)), so its gradients are what the
    engine's backward(G) must produce (grads include the engine's regularisation term).
    """
    out = layer.forward(x, training=True)
    dinputs = layer.backward(g)
    tx = leaf(x)
    tparams = {name: leaf(p) for name, p in layer.params.items()}
    tout = torch_fn(tx, **tparams)
    objective = torch.sum(tout * torch.as_tensor(g))
    if extra_loss is not None:
        objective = objective + extra_loss(**tparams)
        close(layer.regularization_loss(), extra_loss(**tparams))
    objective.backward()
    close(out, tout)
    close(dinputs, tx.grad)
    for name, tp in tparams.items():
        close(layer.grads[name], tp.grad)


@pytest.mark.parametrize("init", ["he", "xavier", "siren_first", "siren_hidden"])
def test_dense_matches_linear(rng: np.random.Generator, init: str) -> None:
    layer = Dense(7, 5, init=init, rng=3, dtype=np.float64)
    layer.params["bias"] = rng.normal(size=5)  # non-zero, so the bias path is exercised
    compare_layer(layer, F.linear, rng.normal(size=(9, 7)), rng.normal(size=(9, 5)))


def test_dense_weight_layout_is_torch_linear(rng: np.random.Generator) -> None:
    layer = Dense(3, 2, rng=0, dtype=np.float64)
    linear = torch.nn.Linear(3, 2, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(layer.params["weight"]))
        linear.bias.copy_(torch.as_tensor(layer.params["bias"]))
    x = rng.normal(size=(4, 3))
    close(layer.forward(x), linear(torch.as_tensor(x)))
    assert layer.params["weight"].shape == tuple(linear.weight.shape)


def test_dense_l2_matches_torch_penalty(rng: np.random.Generator) -> None:
    lam = 0.05
    layer = Dense(4, 3, l2=lam, rng=1, dtype=np.float64)
    compare_layer(
        layer,
        F.linear,
        rng.normal(size=(6, 4)),
        rng.normal(size=(6, 3)),
        extra_loss=lambda weight, bias: lam * torch.sum(weight**2),
    )


def test_dense_on_leading_dimensions(rng: np.random.Generator) -> None:
    layer = Dense(4, 3, rng=1, dtype=np.float64)
    compare_layer(layer, F.linear, rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3)))


def test_flatten(rng: np.random.Generator) -> None:
    compare_layer(
        Flatten(),
        lambda x: torch.flatten(x, 1),
        rng.normal(size=(3, 2, 4)),
        rng.normal(size=(3, 8)),
    )


def test_dropout_scales_like_torch_and_masks_gradient(rng: np.random.Generator) -> None:
    rate = 0.3
    layer = Dropout(rate, rng=11)
    x = rng.normal(size=(50, 20))
    layer.forward(x, training=True)
    mask = layer.mask.copy()
    # torch's dropout zeroes units and scales the rest by 1/(1 − p); so must the mask.
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / (1 - rate), rtol=1e-15)
    reference = F.dropout(torch.ones(200_000, dtype=torch.float64), p=rate, training=True)
    assert set(np.unique(reference.numpy()).round(12)) == {0.0, round(1 / (1 - rate), 12)}
    layer.rng = np.random.default_rng(11)  # draw the same mask again
    compare_layer(layer, lambda x: x * torch.as_tensor(mask), x, rng.normal(size=x.shape))


@pytest.mark.parametrize(
    ("layer", "torch_fn", "scale"),
    [
        (ReLU(), torch.relu, 1.0),
        (Sigmoid(), torch.sigmoid, 4.0),
        (Tanh(), torch.tanh, 2.0),
        (Softmax(), lambda x: torch.softmax(x, dim=-1), 3.0),
        (Sine(), lambda x: torch.sin(30.0 * x), 0.1),
        (Sine(omega0=2.5), lambda x: torch.sin(2.5 * x), 1.0),
    ],
    ids=["relu", "sigmoid", "tanh", "softmax", "sine30", "sine2.5"],
)
def test_activation(
    rng: np.random.Generator, layer: object, torch_fn: Callable[..., torch.Tensor], scale: float
) -> None:
    x = rng.normal(size=(6, 5)) * scale
    x[0, :2] = 0.0  # at exactly 0, torch.relu's derivative is 0: so must the engine's be
    compare_layer(layer, torch_fn, x, rng.normal(size=x.shape))


def compare_loss(
    loss: object, torch_loss: Callable[[torch.Tensor], torch.Tensor], y_pred: np.ndarray, y_true
) -> None:
    value = loss.forward(y_pred, y_true)
    dinputs = loss.backward(y_pred, y_true)
    tp = leaf(y_pred)
    tvalue = torch_loss(tp)
    tvalue.backward()
    close(value, tvalue)
    close(dinputs, tp.grad)


def test_mean_squared_error(rng: np.random.Generator) -> None:
    y_pred, y_true = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    compare_loss(
        MeanSquaredError(), lambda p: F.mse_loss(p, torch.as_tensor(y_true)), y_pred, y_true
    )


def test_binary_cross_entropy(rng: np.random.Generator) -> None:
    y_pred = rng.uniform(0.02, 0.98, size=(8, 2))
    y_true = rng.integers(0, 2, size=(8, 2)).astype(np.float64)
    compare_loss(
        BinaryCrossEntropy(),
        lambda p: F.binary_cross_entropy(p, torch.as_tensor(y_true)),
        y_pred,
        y_true,
    )


def _probabilities(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    e = np.exp(rng.normal(size=(n, k)))
    return e / e.sum(axis=1, keepdims=True)


def test_categorical_cross_entropy_integer_labels(rng: np.random.Generator) -> None:
    y_pred, labels = _probabilities(rng, 8, 4), rng.integers(0, 4, size=8)
    compare_loss(
        CategoricalCrossEntropy(),
        lambda p: F.nll_loss(torch.log(p), torch.as_tensor(labels)),
        y_pred,
        labels,
    )


def test_categorical_cross_entropy_one_hot_labels(rng: np.random.Generator) -> None:
    y_pred, onehot = _probabilities(rng, 8, 4), np.eye(4)[rng.integers(0, 4, size=8)]
    compare_loss(
        CategoricalCrossEntropy(),
        lambda p: -torch.mean(torch.sum(torch.as_tensor(onehot) * torch.log(p), dim=1)),
        y_pred,
        onehot,
    )


def test_softmax_cross_entropy_integer_labels(rng: np.random.Generator) -> None:
    logits, labels = rng.normal(size=(8, 5)) * 4, rng.integers(0, 5, size=8)
    loss = SoftmaxCrossEntropy()
    compare_loss(loss, lambda z: F.cross_entropy(z, torch.as_tensor(labels)), logits, labels)
    close(loss.probabilities, torch.softmax(torch.as_tensor(logits), dim=1))


def test_softmax_cross_entropy_one_hot_labels(rng: np.random.Generator) -> None:
    logits, onehot = rng.normal(size=(8, 5)) * 4, np.eye(5)[rng.integers(0, 5, size=8)]
    # torch's cross_entropy accepts class probabilities as the target.
    compare_loss(
        SoftmaxCrossEntropy(),
        lambda z: F.cross_entropy(z, torch.as_tensor(onehot)),
        logits,
        onehot,
    )


# ---------------------------------------------------------------------------- optimizers


def run_engine(optimizer: object, params: dict[str, np.ndarray], grads: list) -> dict:
    """Apply len(grads) steps of optimizer to a Dense holding params; return its params."""
    layer = Dense(4, 3, rng=0, dtype=np.float64)
    for name in layer.params:
        layer.params[name][...] = params[name]
    for step_grads in grads:
        layer.grads = {name: g.copy() for name, g in step_grads.items()}
        optimizer.step([layer, ReLU()])  # a parameterless layer is skipped
    return layer.params


def run_torch(
    make_optimizer: Callable[[list], torch.optim.Optimizer],
    params: dict[str, np.ndarray],
    grads: list,
    decay: float = 0.0,
) -> dict:
    """The same steps with a torch optimizer; decay 1/(1 + d·t) via LambdaLR."""
    tparams = {name: torch.tensor(p, dtype=torch.float64) for name, p in params.items()}
    optimizer = make_optimizer(list(tparams.values()))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 / (1 + decay * t))
    for step_grads in grads:
        for name, tp in tparams.items():
            tp.grad = torch.as_tensor(step_grads[name].copy())
        optimizer.step()
        scheduler.step()
    return tparams


def problem(rng: np.random.Generator, steps: int) -> tuple[dict, list]:
    params = {"weight": rng.normal(size=(3, 4)), "bias": rng.normal(size=3)}
    grads = [{"weight": rng.normal(size=(3, 4)), "bias": rng.normal(size=3)} for _ in range(steps)]
    return params, grads


def compare_params(engine: dict, reference: dict) -> None:
    for name, p in engine.items():
        close(p, reference[name])


def test_sgd_one_step(rng: np.random.Generator) -> None:
    params, grads = problem(rng, 1)
    compare_params(
        run_engine(SGD(learning_rate=0.3), params, grads),
        run_torch(lambda ps: torch.optim.SGD(ps, lr=0.3), params, grads),
    )


def test_sgd_with_decay(rng: np.random.Generator) -> None:
    params, grads = problem(rng, 4)
    optimizer = SGD(learning_rate=0.5, decay=0.2)
    compare_params(
        run_engine(optimizer, params, grads),
        run_torch(lambda ps: torch.optim.SGD(ps, lr=0.5), params, grads, decay=0.2),
    )
    assert optimizer.iterations == 4
    assert optimizer.current_learning_rate == pytest.approx(0.5 / (1 + 0.2 * 3))


def test_sgd_classical_momentum_matches_torch_at_constant_rate(rng: np.random.Generator) -> None:
    # torch: b = βb + g, w −= ηb. With v = −ηb this is v = βv − ηg, w += v (seed 002),
    # exactly, while η is constant.
    params, grads = problem(rng, 5)
    compare_params(
        run_engine(SGD(learning_rate=0.1, momentum=0.8), params, grads),
        run_torch(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8), params, grads),
    )


def hand_reference(params: dict, grads: list, update: Callable) -> dict:
    """Apply update(w, g, state, t) step by step in float64; the seed's formulas, verbatim."""
    out = {}
    for name, p in params.items():
        w, state = p.copy(), {}
        for t, step_grads in enumerate(grads):
            w = update(w, step_grads[name], state, t)
        out[name] = torch.as_tensor(w)
    return out


def test_sgd_classical_momentum_with_decay(rng: np.random.Generator) -> None:
    params, grads = problem(rng, 5)
    lr0, d, beta = 0.2, 0.1, 0.7

    def seed_002(w, g, state, t):
        v = beta * state.get("v", 0.0) - lr0 / (1 + d * t) * g
        state["v"] = v
        return w + v

    compare_params(
        run_engine(SGD(learning_rate=lr0, decay=d, momentum=beta), params, grads),
        hand_reference(params, grads, seed_002),
    )


def test_sgd_ema_momentum(rng: np.random.Generator) -> None:
    params, grads = problem(rng, 5)
    lr0, d, beta = 0.2, 0.1, 0.9

    def seed_001(w, g, state, t):
        v = beta * state.get("v", 0.0) + (1 - beta) * g
        state["v"] = v
        return w - lr0 / (1 + d * t) * v

    engine = run_engine(
        SGD(learning_rate=lr0, decay=d, momentum=beta, convention="ema"), params, grads
    )
    compare_params(engine, hand_reference(params, grads, seed_001))
    # From the second step on, torch's dampened momentum (b = βb + (1 − β)g) is the same
    # recursion; it differs only in starting b at g instead of (1 − β)g. Starting the
    # engine's velocity where torch's starts makes them agree at every step.
    torch_params = run_torch(
        lambda ps: torch.optim.SGD(ps, lr=lr0, momentum=beta, dampening=beta),
        params,
        grads,
        decay=d,
    )
    optimizer = SGD(learning_rate=lr0, decay=d, momentum=beta, convention="ema")
    layer = Dense(4, 3, rng=0, dtype=np.float64)
    for name in layer.params:
        layer.params[name][...] = params[name]
    for t, step_grads in enumerate(grads):
        layer.grads = {name: g.copy() for name, g in step_grads.items()}
        if t == 0:
            for name, g in step_grads.items():
                # v after step 0 must be g: pre-load v so that βv + (1 − β)g = g.
                optimizer._slot(layer, "velocity", name, g)[...] = g
        optimizer.step([layer])
    compare_params(layer.params, torch_params)


def test_sgd_default_convention_is_classical() -> None:
    assert SGD().convention == "classical"


@pytest.mark.parametrize("decay", [0.0, 0.05])
def test_adam_matches_torch_over_several_steps(rng: np.random.Generator, decay: float) -> None:
    params, grads = problem(rng, 6)
    kwargs = {"beta1": 0.8, "beta2": 0.95, "epsilon": 1e-8}
    optimizer = Adam(learning_rate=0.01, decay=decay, **kwargs)
    compare_params(
        run_engine(optimizer, params, grads),
        run_torch(
            lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-8),
            params,
            grads,
            decay=decay,
        ),
    )
    assert optimizer.iterations == 6


def test_adam_one_step_with_defaults(rng: np.random.Generator) -> None:
    params, grads = problem(rng, 1)
    compare_params(
        run_engine(Adam(), params, grads),
        run_torch(lambda ps: torch.optim.Adam(ps), params, grads),
    )
