"""Pictures of the engine (seed 002): activations, training curves, the spiral's decision
boundary, and optimisation paths with and without momentum. Each function writes a PNG and
returns its path.

Figures are built with ``matplotlib.figure.Figure`` directly, which renders with Agg and
never touches pyplot's global state or a display.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from weightdna.atomic import save_figure_atomic
from weightdna.errors import InvalidInputError
from weightdna.nn.activations import ReLU, Sigmoid, Sine, Tanh
from weightdna.nn.base import Layer
from weightdna.nn.model import Model
from weightdna.nn.optimizers import SGD

PathLike = str | os.PathLike[str]
DPI = 120


def new_figure(width: float, height: float):  # -> matplotlib.figure.Figure
    """A matplotlib Figure (Agg, no pyplot state) with constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidInputError(f"pictures are written as PNG; give a .png path, not {path}")
    return save_figure_atomic(fig, path, DPI)


def plot_activations(path: PathLike, z_range: float = 4.0) -> Path:
    """ReLU, Sigmoid, Tanh and Sine with their derivatives (from the engine's backward)."""
    z = np.linspace(-z_range, z_range, 801)
    # ω0 = 1 keeps the sine readable on this range; SIREN's ω0 = 30 only rescales z.
    layers: list[tuple[str, Layer]] = [
        ("ReLU", ReLU()),
        ("Sigmoid", Sigmoid()),
        ("Tanh", Tanh()),
        ("Sine (ω0 = 1)", Sine(omega0=1.0)),
    ]
    fig = new_figure(10, 7)
    axes = fig.subplots(2, 2).ravel()
    for ax, (name, layer) in zip(axes, layers, strict=True):
        value = layer.forward(z[:, None])[:, 0]
        # Backward with an upstream gradient of ones gives the elementwise derivative.
        derivative = layer.backward(np.ones((len(z), 1)))[:, 0]
        ax.plot(z, value, label="f(z)", color="tab:blue")
        ax.plot(z, derivative, label="f′(z)", color="tab:orange", linestyle="--")
        ax.axhline(0, color="0.7", linewidth=0.8)
        ax.axvline(0, color="0.7", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel("z")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("Activation functions and their derivatives")
    return _save(fig, path)


def plot_training(
    history: dict[str, Sequence[float]], path: PathLike, title: str = "Training"
) -> Path:
    """Loss and (if recorded) accuracy per epoch, training and validation."""
    if not history.get("loss"):
        raise InvalidInputError("the training history has no 'loss' entries to plot")
    has_accuracy = bool(history.get("accuracy"))
    fig = new_figure(11 if has_accuracy else 6, 4)
    axes = fig.subplots(1, 2 if has_accuracy else 1)
    axes = np.atleast_1d(axes)
    epochs = np.arange(1, len(history["loss"]) + 1)
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if has_accuracy else [])
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.plot(epochs, history[key], label=f"training {label}")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], label=f"held-out {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_decision_boundary(
    model: Model,
    X: np.ndarray,
    y: np.ndarray,
    path: PathLike,
    title: str = "Decision boundary",
    resolution: int = 300,
) -> Path:
    """The class a 2-D classifier predicts over the plane, with the points on top."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise InvalidInputError(f"a decision boundary needs 2-D inputs (N, 2), got {X.shape}")
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0))
    low, high = X.min(axis=0) - pad, X.max(axis=0) + pad
    gx, gy = np.meshgrid(
        np.linspace(low[0], high[0], resolution), np.linspace(low[1], high[1], resolution)
    )
    grid = np.c_[gx.ravel(), gy.ravel()].astype(X.dtype)
    predicted = model.predict(grid).argmax(axis=1).reshape(gx.shape)
    classes = int(max(predicted.max(), np.max(y)) + 1)
    fig = new_figure(6, 6)
    ax = fig.subplots()
    levels = np.arange(classes + 1) - 0.5
    ax.contourf(gx, gy, predicted, levels=levels, cmap="tab10", vmin=0, vmax=9, alpha=0.3)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="tab10", vmin=0, vmax=9, s=12, edgecolors="k",
               linewidths=0.3)
    accuracy = float(np.mean(model.predict(X).argmax(axis=1) == y))
    ax.set_title(f"{title} (accuracy on these points {accuracy:.3f})")
    ax.set_aspect("equal")
    return _save(fig, path)


class _Point(Layer):
    """A 2-D point as a trainable 'layer', so the engine's optimizers can move it."""

    def __init__(self, start: Sequence[float]) -> None:
        super().__init__()
        self.params = {"weight": np.asarray(start, dtype=np.float64).copy()}
        self.grads = {"weight": np.zeros(2)}


def optimisation_path(
    optimizer: object,
    gradient: Callable[[np.ndarray], np.ndarray],
    start: Sequence[float],
    steps: int,
) -> np.ndarray:
    """The points an engine optimizer visits on a 2-parameter problem: (steps + 1, 2)."""
    point = _Point(start)
    path = [point.params["weight"].copy()]
    for _ in range(steps):
        point.grads["weight"] = gradient(point.params["weight"])
        optimizer.pre_update_params()
        optimizer.update_params(point)
        optimizer.post_update_params()
        path.append(point.params["weight"].copy())
    return np.array(path)


# An elongated quadratic bowl: steep across (w2), shallow along (w1), the classic case
# where plain gradient descent zig-zags and momentum runs down the valley.
_CURVATURE = np.array([1.0, 25.0])


def elongated_quadratic(w: np.ndarray) -> np.ndarray:
    """f(w) = ½ (w1² + 25 w2²), evaluated on the last axis."""
    return 0.5 * np.sum(_CURVATURE * np.asarray(w) ** 2, axis=-1)


def elongated_quadratic_gradient(w: np.ndarray) -> np.ndarray:
    """∇f(w) = (w1, 25 w2)."""
    return _CURVATURE * np.asarray(w)


def plot_momentum(
    path: PathLike,
    learning_rate: float = 0.05,
    momentum: float = 0.6,
    steps: int = 30,
    start: Sequence[float] = (-4.0, 1.0),
) -> Path:
    """Paths of the engine's SGD with and without momentum on an elongated quadratic."""
    plain = optimisation_path(
        SGD(learning_rate=learning_rate), elongated_quadratic_gradient, start, steps
    )
    heavy = optimisation_path(
        SGD(learning_rate=learning_rate, momentum=momentum),
        elongated_quadratic_gradient,
        start,
        steps,
    )
    fig = new_figure(8, 5)
    ax = fig.subplots()
    gx, gy = np.meshgrid(np.linspace(-4.5, 4.5, 300), np.linspace(-1.6, 1.6, 200))
    surface = elongated_quadratic(np.stack([gx, gy], axis=-1))
    ax.contour(gx, gy, surface, levels=np.geomspace(0.02, 40, 14), colors="0.6",
               linewidths=0.7)
    final = {}
    for label, points, color in (
        ("SGD", plain, "tab:red"),
        (f"SGD + momentum β = {momentum}", heavy, "tab:blue"),
    ):
        final[label] = float(elongated_quadratic(points[-1]))
        ax.plot(points[:, 0], points[:, 1], "o-", color=color, markersize=3, linewidth=1.2,
                label=f"{label}: f = {final[label]:.2e} after {steps} steps")
    ax.plot(0, 0, "k*", markersize=12)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_title(f"f(w) = ½(w1² + 25 w2²), learning rate {learning_rate}")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_error_vs_parameters(
    parameters: np.ndarray,
    train_error: np.ndarray,
    test_error: np.ndarray,
    train_examples: int,
    path: PathLike,
) -> Path:
    """Train and test error against parameter count, with the number of examples marked."""
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    ax.plot(parameters, train_error, "o-", label="training error")
    ax.plot(parameters, test_error, "s-", label="test error")
    ax.axvline(train_examples, color="0.4", linestyle="--",
               label=f"parameters = training examples ({train_examples})")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("error (1 − accuracy)")
    # Linear below 1%, logarithmic above: zero training errors stay on the plot and the
    # small test errors of the wide networks stay distinguishable.
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylim(bottom=0, top=1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Digits MLPs 64 → h → 10: error against size")
    return _save(fig, path)
