"""SGD (decay, momentum) and Adam, with the nnfs update protocol (seeds 001 and 002).

Every optimizer follows ``pre_update_params()`` (sets this step's learning rate),
``update_params(layer)`` for each trainable layer, ``post_update_params()`` (counts the
step); ``step(layers)`` does all three. Parameters are updated in place, so anything that
holds ``layer.params[name]`` sees the new values. Per-parameter state (velocities, moments)
lives on the optimizer, keyed by the layer and the parameter's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from weightdna.errors import InvalidInputError
from weightdna.nn.base import Layer


class Optimizer:
    """Learning-rate decay ``lr_t = lr0 / (1 + decay·t)`` and per-parameter state."""

    def __init__(self, learning_rate: float, decay: float = 0.0) -> None:
        if learning_rate <= 0:
            raise InvalidInputError(f"learning_rate must be > 0, got {learning_rate}")
        if decay < 0:
            raise InvalidInputError(f"decay must be >= 0, got {decay}")
        self.learning_rate = float(learning_rate)
        self.decay = float(decay)
        self.current_learning_rate = self.learning_rate
        self.iterations = 0
        # id(layer) -> (layer, {slot name: {param name: array}}). Holding the layer keeps its
        # id from being reused by another object while the optimizer lives.
        self._state: dict[int, tuple[Layer, dict[str, dict[str, np.ndarray]]]] = {}

    def pre_update_params(self) -> None:
        """Set ``current_learning_rate`` for this step (seed 002's decay)."""
        self.current_learning_rate = self.learning_rate / (1.0 + self.decay * self.iterations)

    def update_params(self, layer: Layer) -> None:
        """Update every entry of ``layer.params`` in place from ``layer.grads``."""
        for name, param in layer.params.items():
            self._update(layer, name, param, layer.grads[name])

    def post_update_params(self) -> None:
        """Count the step (drives decay and Adam's bias correction)."""
        self.iterations += 1

    def step(self, layers: Iterable[Layer]) -> None:
        """One optimisation step over the trainable layers among ``layers``."""
        self.pre_update_params()
        for layer in layers:
            if layer.params:
                self.update_params(layer)
        self.post_update_params()

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this optimizer."""
        return {"learning_rate": self.learning_rate, "decay": self.decay}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _slot(self, layer: Layer, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        """State array ``slot`` of parameter ``name`` of ``layer``, zeros on first use."""
        key = id(layer)
        if key not in self._state:
            self._state[key] = (layer, {})
        slots = self._state[key][1].setdefault(slot, {})
        if name not in slots:
            slots[name] = np.zeros_like(like)
        return slots[name]

    def _update(self, layer: Layer, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with decay and momentum.

    convention: how momentum is written, when ``momentum`` β > 0.
      * "classical" (the default; seed 002): ``v = βv − η_t g; w = w + v``.
      * "ema" (seed 001): ``v = βv + (1 − β)g; w = w − η_t v`` — an exponential moving
        average of the gradients, so the step size does not grow by 1/(1 − β).
    Without momentum both are ``w = w − η_t g``.
    """

    CONVENTIONS = ("classical", "ema")

    def __init__(
        self,
        learning_rate: float = 1.0,
        decay: float = 0.0,
        momentum: float = 0.0,
        convention: str = "classical",
    ) -> None:
        super().__init__(learning_rate, decay)
        if not 0.0 <= momentum < 1.0:
            raise InvalidInputError(f"momentum must be in [0, 1), got {momentum}")
        if convention not in self.CONVENTIONS:
            raise InvalidInputError(
                f"unknown momentum convention {convention!r}; choose one of {self.CONVENTIONS}"
            )
        self.momentum = float(momentum)
        self.convention = convention

    def _update(self, layer: Layer, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        lr = self.current_learning_rate
        beta = self.momentum
        if beta == 0.0:
            param -= lr * grad
            return
        velocity = self._slot(layer, "velocity", name, param)
        velocity *= beta
        if self.convention == "classical":
            velocity -= lr * grad
            param += velocity
        else:
            velocity += (1.0 - beta) * grad
            param -= lr * velocity

    def config(self) -> dict[str, Any]:
        return {**super().config(), "momentum": self.momentum, "convention": self.convention}


class Adam(Optimizer):
    """Adam with bias correction (seed 001), the same arithmetic as ``torch.optim.Adam``.

    ``m = β1 m + (1 − β1) g``, ``v = β2 v + (1 − β2) g²``, ``m̂ = m / (1 − β1ᵗ)``,
    ``v̂ = v / (1 − β2ᵗ)``, ``θ −= α_t m̂ / (√v̂ + ε)``; ε defaults to torch's 1e-8.
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        decay: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__(learning_rate, decay)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise InvalidInputError(f"{label} must be in [0, 1), got {beta}")
        if epsilon <= 0:
            raise InvalidInputError(f"epsilon must be > 0, got {epsilon}")
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.epsilon = float(epsilon)

    def _update(self, layer: Layer, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        t = self.iterations + 1
        m = self._slot(layer, "m", name, param)
        v = self._slot(layer, "v", name, param)
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        v += (1.0 - self.beta2) * (grad * grad)
        # Written as torch writes it: the bias corrections folded into step size and denom.
        step_size = self.current_learning_rate / (1.0 - self.beta1**t)
        denom = np.sqrt(v) / np.sqrt(1.0 - self.beta2**t)
        denom += self.epsilon
        param -= step_size * (m / denom)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
        }
