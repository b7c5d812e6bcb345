"""Running input moments of a model's weights, for GPTQ's Hessians and the columns'
second moments: `Moments`, filled by the recorders of `weightdna.evaluate.calibration`
(engine, BERT and Hugging Face models) and `weightdna.evaluate.onnx_calibration` (ONNX
graphs)."""

from __future__ import annotations

import numpy as np


class Moments:
    """Running Σ xxᵀ and count of input vectors, per weight name; ``diagonal``: only its
    diagonal Σ x_j², and Σ x_j (for the variances)."""

    def __init__(self, diagonal: bool = False) -> None:
        self.diagonal = diagonal
        self.sums: dict[str, np.ndarray] = {}
        self.firsts: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, inputs: np.ndarray) -> None:
        x = np.asarray(inputs, dtype=np.float64).reshape(-1, inputs.shape[-1])
        if name not in self.sums:
            self.sums[name] = np.zeros(x.shape[1] if self.diagonal else (x.shape[1],) * 2)
            self.firsts[name] = np.zeros(x.shape[1])
            self.counts[name] = 0
        if self.diagonal:
            self.sums[name] += (x * x).sum(0)
            self.firsts[name] += x.sum(0)
        else:
            self.sums[name] += x.T @ x
        self.counts[name] += x.shape[0]

    def hessians(self) -> dict[str, np.ndarray]:
        """{name: H = XᵀX / N} (``diagonal``: its diagonal, E[x_j²])."""
        return {n: s / max(self.counts[n], 1) for n, s in self.sums.items()}

    def variances(self) -> dict[str, np.ndarray]:
        """{name: the unbiased variance of each input column} (``diagonal`` moments)."""
        return {n: (s - self.firsts[n] ** 2 / max(self.counts[n], 1))
                / max(self.counts[n] - 1, 1) for n, s in self.sums.items()}
