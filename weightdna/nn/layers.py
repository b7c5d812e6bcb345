"""Dense, Flatten and Dropout layers (seeds 001 and 002)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from weightdna.errors import InvalidInputError
from weightdna.nn.base import Layer
from weightdna.nn.initializers import INITIALIZERS, RngLike, initialize, make_rng


class Dense(Layer):
    """Fully connected layer ``Z = XW + b`` (seed 002), W stored transposed as PyTorch does.

    The seed's W is (in × out); ``params["weight"]`` holds Wᵀ, (out × in) like
    ``torch.nn.Linear``, so ``forward`` computes ``inputs @ weight.T + bias`` and a saved
    model reads like a torch file. Inputs may have leading dimensions beyond the batch.

    init: "he", "xavier", "siren_first" or "siren_hidden" (see ``initializers``). Biases are
    zero, except for the SIREN inits, which draw them from the weight's uniform range as
    siren-pytorch does, so that the first layer's sines start at different phases.
    l2: λ of the penalty ``λ Σ W²`` (gradient ``2λW``), on the weight only. Seed 001 writes
    ``λ/2 Σ W²``; that is the same penalty with λ doubled.
    omega0: the ω0 of the Sine that follows; used only by ``init="siren_hidden"``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init: str = "he",
        omega0: float = 30.0,
        l2: float = 0.0,
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise InvalidInputError(
                f"Dense needs positive sizes, got in_features={in_features}, "
                f"out_features={out_features}"
            )
        if init not in INITIALIZERS:
            raise InvalidInputError(
                f"unknown init {init!r} for Dense; choose one of {sorted(INITIALIZERS)}"
            )
        if l2 < 0:
            raise InvalidInputError(f"l2 must be >= 0, got {l2}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.init = init
        self.omega0 = float(omega0)
        self.l2 = float(l2)
        self.dtype = np.dtype(dtype)
        rng = make_rng(rng)
        shape = (self.out_features, self.in_features)
        weight = initialize(init, shape, rng=rng, dtype=self.dtype, omega0=self.omega0)
        if init.startswith("siren"):
            bias = initialize(
                init,
                self.out_features,
                fan_in=self.in_features,
                fan_out=self.out_features,
                rng=rng,
                dtype=self.dtype,
                omega0=self.omega0,
            )
        else:
            bias = np.zeros(self.out_features, dtype=self.dtype)
        self.params = {"weight": weight, "bias": bias}
        self.grads = {
            "weight": np.zeros_like(weight),
            "bias": np.zeros_like(bias),
        }
        self.inputs: np.ndarray | None = None

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        """``inputs @ weight.T + bias``; inputs (..., in_features)."""
        if inputs.shape[-1] != self.in_features:
            raise InvalidInputError(
                f"Dense expects inputs with {self.in_features} features in the last axis, "
                f"got shape {inputs.shape}"
            )
        self.inputs = inputs
        output = inputs @ self.params["weight"].T
        output += self.params["bias"]
        self.output = output
        return output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        """dW = (Xᵀδ)ᵀ = δᵀX, db = Σδ over the batch, dX = δW (W here out × in)."""
        weight = self.params["weight"]
        delta = dvalues.reshape(-1, self.out_features)
        inputs = self.inputs.reshape(-1, self.in_features)
        dweight = delta.T @ inputs
        if self.l2 > 0:
            dweight += 2.0 * self.l2 * weight
        self.grads["weight"] = dweight
        self.grads["bias"] = delta.sum(axis=0)
        self.dinputs = dvalues @ weight
        return self.dinputs

    def regularization_loss(self) -> float:
        """λ Σ W² (zero when l2 is 0)."""
        if self.l2 == 0:
            return 0.0
        weight = self.params["weight"]
        return self.l2 * float(np.sum(weight * weight))

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
            "omega0": self.omega0,
            "l2": self.l2,
            "dtype": self.dtype.name,
        }


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1·d2·...); backward restores the input shape."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape: tuple[int, ...] | None = None

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        self.input_shape = inputs.shape
        self.output = inputs.reshape(inputs.shape[0], -1)
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        self.dinputs = dvalues.reshape(self.input_shape)
        return self.dinputs


class Dropout(Layer):
    """Inverted dropout: in training, multiply by Bernoulli(keep)/keep; identity otherwise.

    rate: the probability of dropping a unit (as in ``torch.nn.Dropout(p)``); keep = 1 − rate.
    Scaling the kept units by 1/keep during training keeps the expected activation, so
    inference needs no rescaling.
    """

    def __init__(self, rate: float, rng: RngLike = None) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise InvalidInputError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = make_rng(rng)
        self.mask: np.ndarray | None = None

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self.mask = None
            self.output = inputs
            return inputs
        keep = 1.0 - self.rate
        mask = self.rng.random(inputs.shape, dtype=np.float64) < keep
        # The mask holds 0 or 1/keep in the input's dtype, so backward is one multiply.
        self.mask = mask.astype(inputs.dtype) / inputs.dtype.type(keep)
        self.output = inputs * self.mask
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        """Gradient flows through the kept units only (scaled like the forward)."""
        self.dinputs = dvalues if self.mask is None else dvalues * self.mask
        return self.dinputs

    def config(self) -> dict[str, Any]:
        return {"rate": self.rate}
