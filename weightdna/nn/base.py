"""The contract every engine layer, activation and loss follows (after nnfs).

* ``forward(inputs, training=False)`` computes the output, keeps what backward needs, and
  returns the output (also stored as ``self.output``).
* ``backward(dvalues)`` takes the gradient of the loss w.r.t. the output, sets
  ``self.dinputs`` (and, for trainable layers, the entries of ``self.grads``) and returns
  ``self.dinputs``.
* Trainable layers keep their arrays in ``self.params`` (``{"weight": ..., "bias": ...}``)
  and the matching gradients in ``self.grads``; optimizers update ``params`` in place.
  Names and layouts follow PyTorch (a Dense weight is stored out×in, as ``nn.Linear`` does),
  so an engine model saved as safetensors reads like any other model file.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Layer:
    """A step of a network: no parameters unless it sets ``params``."""

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}
        self.output: np.ndarray | None = None
        self.dinputs: np.ndarray | None = None

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (saved with the model)."""
        return {}

    def regularization_loss(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Loss:
    """``forward(y_pred, y_true)`` returns the batch-mean loss; ``backward(y_pred, y_true)``
    sets and returns ``dinputs``, the gradient w.r.t. ``y_pred``."""

    def __init__(self) -> None:
        self.dinputs: np.ndarray | None = None

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        return self.forward(y_pred, y_true)
