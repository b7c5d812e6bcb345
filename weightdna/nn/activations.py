"""Activation layers: ReLU, Sigmoid, Tanh, Softmax and SIREN's Sine (seeds 001, 002, 000)."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightdna.nn.base import Layer


class ReLU(Layer):
    """max(0, z); derivative 1 for z > 0 and 0 for z <= 0 (seed 002)."""

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        self.inputs = inputs
        self.output = np.maximum(inputs, 0)
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        self.dinputs = np.where(self.inputs > 0, dvalues, 0).astype(dvalues.dtype, copy=False)
        return self.dinputs


class Sigmoid(Layer):
    """1 / (1 + e^(−z)), computed without overflow for large |z|; derivative σ(1 − σ)."""

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        self.output = sigmoid(inputs)
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        s = self.output
        self.dinputs = dvalues * s * (1 - s)
        return self.dinputs


class Tanh(Layer):
    """tanh(z); derivative 1 − tanh²(z)."""

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        self.output = np.tanh(inputs)
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        t = self.output
        self.dinputs = dvalues * (1 - t * t)
        return self.dinputs


class Softmax(Layer):
    """Softmax over the last axis, with the row maximum subtracted first (seed 002)."""

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        self.output = softmax(inputs)
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        """Jacobian-vector product J·d = s ⊙ (d − ⟨d, s⟩), row by row, without forming J."""
        s = self.output
        inner = np.sum(dvalues * s, axis=-1, keepdims=True)
        self.dinputs = s * (dvalues - inner)
        return self.dinputs


class Sine(Layer):
    """SIREN activation sin(ω0·z) (Sitzmann et al. 2020); derivative ω0·cos(ω0·z)."""

    def __init__(self, omega0: float = 30.0) -> None:
        super().__init__()
        self.omega0 = float(omega0)

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        self.inputs = inputs
        self.output = np.sin(self.omega0 * inputs)
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        self.dinputs = dvalues * (self.omega0 * np.cos(self.omega0 * self.inputs))
        return self.dinputs

    def config(self) -> dict[str, Any]:
        return {"omega0": self.omega0}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, finite for any finite z (exp is only taken of −|z|)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; subtracting the row maximum keeps exp from overflowing."""
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)
