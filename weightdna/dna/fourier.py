"""The alternatives to a SIREN: a ReLU MLP on random Fourier features, and a plain ReLU MLP.

Random Fourier features follow Tancik et al., "Fourier Features Let Networks Learn High
Frequency Functions in Low Dimensional Domains", NeurIPS 2020 (arXiv:2006.10739):
``γ(x) = [sin(2π x B), cos(2π x B)]`` with a fixed ``B ~ N(0, σ²)`` of shape
(in, features). σ sets the band of frequencies the MLP can reach. The plain ReLU MLP is the
baseline that shows the spectral bias the seed describes: on the same budget it learns low
frequencies and blurs the rest.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relu_stack(in_features: int, width: int, depth: int, out_features: int) -> nn.Sequential:
    """``depth`` Linear+ReLU layers of ``width`` units and a linear output (PyTorch init)."""
    if depth < 1 or width < 1:
        raise ValueError("an MLP needs depth >= 1 and width >= 1")
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class ReluMLP(nn.Module):
    """A plain ReLU MLP on the raw coordinates."""

    def __init__(self, in_features: int, width: int = 64, depth: int = 3,
                 out_features: int = 1) -> None:
        super().__init__()
        self.net = relu_stack(in_features, width, depth, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.net(coords)


class FourierFeatureMLP(nn.Module):
    """A ReLU MLP on random Fourier features ``[sin(2πxB), cos(2πxB)]``, B fixed."""

    def __init__(self, in_features: int, width: int = 64, depth: int = 3,
                 out_features: int = 1, features: int = 64, scale: float = 10.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        # B is a buffer, not a parameter: it is saved with the network but never trained.
        basis = torch.randn(in_features, features, generator=generator) * scale
        self.register_buffer("basis", 2.0 * math.pi * basis)
        self.net = relu_stack(2 * features, width, depth, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        projected = coords @ self.basis
        return self.net(torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1))
