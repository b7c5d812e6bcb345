"""SIREN: a coordinate network with sine activations (SPEC part B).

Sitzmann, Martel, Bergman, Lindell, Wetzstein, "Implicit Neural Representations with
Periodic Activation Functions", NeurIPS 2020 (arXiv:2006.09661), section 3.2 and its
reference code. A sine layer computes ``sin(ω₀ · (W h + b))``. The initialisation is what
makes a deep stack of sines train at all, so it is written out here:

* first layer:  ``W ~ U(−1/n, 1/n)``, n = fan-in. Then ``ω₀ W x`` spans several periods
  of the sine over the input domain [−1, 1]: ω₀ (30 by default) sets the frequencies the
  network starts from.
* hidden layers: ``W ~ U(−√(6/n)/ω₀, √(6/n)/ω₀)``. Then ``ω₀ W h`` has unit-order
  variance whatever the width, so the pre-activations stay in the regime where the output
  of every sine layer is arcsine-distributed and the next layer sees the same statistics.
* the output layer is linear, initialised like a hidden layer (as the reference code does).

Biases use PyTorch's default ``U(−1/√n, 1/√n)``, as the reference code does.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def siren_weight_bound(fan_in: int, omega0: float, first: bool) -> float:
    """Half-width of the uniform SIREN initialisation of a layer with ``fan_in`` inputs."""
    if first:
        return 1.0 / fan_in
    return math.sqrt(6.0 / fan_in) / omega0


class _SineFunction(torch.autograd.Function):
    """``sin(ω₀ (x Wᵀ + b))`` with a hand-written backward, for speed on the CPU.

    Autograd would scale the (batch × width) gradient by ω₀ in separate passes; here ω₀
    multiplies only the small weight-sized results. ``tests/test_dna_fit.py`` checks it
    against autograd.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                omega0: float) -> torch.Tensor:
        z = torch.addmm(bias, x, weight.t(), beta=omega0, alpha=omega0)
        ctx.save_for_backward(x, weight, z)
        ctx.omega0 = omega0
        return torch.sin(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, weight, z = ctx.saved_tensors
        omega0 = ctx.omega0
        # d sin(ω₀ u)/du = ω₀ cos(ω₀ u); ω₀ is applied to the three small results below.
        g = torch.cos(z).mul_(grad)
        grad_x = g @ (weight * omega0) if ctx.needs_input_grad[0] else None
        grad_w = (g.t() @ x).mul_(omega0) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0).mul_(omega0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class SineLayer(nn.Module):
    """``sin(ω₀ · (x Wᵀ + b))`` with the SIREN initialisation."""

    def __init__(self, in_features: int, out_features: int, omega0: float = 30.0,
                 first: bool = False) -> None:
        super().__init__()
        self.omega0 = float(omega0)
        self.first = first
        self.linear = nn.Linear(in_features, out_features)
        bound = siren_weight_bound(in_features, self.omega0, first)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type) or not torch.is_grad_enabled():
            # Autocast and inference take the plain path (autocast does not see inside
            # a custom Function; inference needs no saved tensors).
            z = torch.addmm(self.linear.bias, x, self.linear.weight.t(),
                            beta=self.omega0, alpha=self.omega0)
            return torch.sin(z)
        return _SineFunction.apply(x, self.linear.weight, self.linear.bias, self.omega0)

    def extra_repr(self) -> str:
        return f"omega0={self.omega0}, first={self.first}"


class Siren(nn.Module):
    """``depth`` sine layers of ``width`` units, then a linear output layer."""

    def __init__(self, in_features: int, width: int = 64, depth: int = 3,
                 out_features: int = 1, omega0: float = 30.0,
                 hidden_omega0: float | None = None) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError("a SIREN needs depth >= 1 and width >= 1")
        hidden_omega0 = omega0 if hidden_omega0 is None else hidden_omega0
        layers = [SineLayer(in_features, width, omega0, first=True)]
        layers += [SineLayer(width, width, hidden_omega0) for _ in range(depth - 1)]
        self.layers = nn.Sequential(*layers)
        self.output = nn.Linear(width, out_features)
        bound = siren_weight_bound(width, hidden_omega0, first=False)
        with torch.no_grad():
            self.output.weight.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.output(self.layers(coords))
