"""How far a reconstruction ŵ is from the weights w, per tensor and pooled over a model.

* PSNR = 10 log₁₀(MAX² / MSE), the seed's formula. The seed says MAX = 1 "after
  normalisation" without saying which, and PSNR depends heavily on it, so the
  normalisation is always named:
  - ``"maxabs"`` (default): w and ŵ are divided by max|w| of the original tensor, so MAX = 1;
  - ``"range"``: MAX = max(w) − min(w).
  Pooled over several tensors, the per-tensor normalised squared errors are averaged.
* SNR = 10 log₁₀(Σw² / Σ(w − ŵ)²): scale-free; 0 dB is what predicting zero achieves.
* relative L2 error = ‖w − ŵ‖ / ‖w‖.
* maximum absolute error = max|w − ŵ|, in the units of the weights.

All sums are taken in float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from weightdna.dna.options import PSNR_NORMALISATIONS

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def decibels(numerator: float, denominator: float) -> float:
    """10 log₁₀(numerator / denominator), with the zero cases made explicit."""
    if denominator == 0.0:
        return math.inf  # a perfect reconstruction, even of an all-zero tensor
    if numerator == 0.0:
        return -math.inf
    return 10.0 * math.log10(numerator / denominator)


def psnr_peak(original: ArrayLike, normalisation: str = "maxabs") -> float:
    """MAX of the PSNR formula, in the units of ``original``, for a named normalisation."""
    w = _as_float64(original)
    if w.size == 0:
        return 0.0
    if normalisation == "maxabs":
        return float(np.max(np.abs(w)))
    if normalisation == "range":
        return float(np.max(w) - np.min(w))
    raise ValueError(f"unknown PSNR normalisation {normalisation!r}; use one of "
                     f"{', '.join(PSNR_NORMALISATIONS)}")


@dataclass(frozen=True)
class ErrorMetrics:
    """Errors of a reconstruction; ``normalisation`` names the PSNR's MAX."""

    psnr: float
    snr: float
    relative_l2: float
    max_abs: float
    mse: float
    count: int
    normalisation: str

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain values, as stored in .dna.pt files."""
        return asdict(self)


class ErrorTally:
    """Sums from which the metrics of one tensor, or of many pooled, are computed."""

    def __init__(self, normalisation: str = "maxabs") -> None:
        if normalisation not in PSNR_NORMALISATIONS:
            raise ValueError(f"unknown PSNR normalisation {normalisation!r}; use one of "
                             f"{', '.join(PSNR_NORMALISATIONS)}")
        self.normalisation = normalisation
        self.signal = 0.0          # Σ w²
        self.error = 0.0           # Σ (w − ŵ)²
        self.normalised_error = 0.0  # Σ ((w − ŵ) / MAX)²
        self.max_abs = 0.0
        self.count = 0

    def add(self, original: ArrayLike, approx: ArrayLike, peak: float | None = None) -> None:
        """Add one tensor (or a subset of it; ``peak`` is then the whole tensor's MAX)."""
        w, w_hat = _as_float64(original), _as_float64(approx)
        if w.shape != w_hat.shape:
            raise ValueError(f"shapes differ: {w.shape} vs {w_hat.shape}")
        if w.size == 0:
            return
        peak = psnr_peak(w, self.normalisation) if peak is None else float(peak)
        diff = w - w_hat
        error = float(np.dot(diff, diff))
        self.signal += float(np.dot(w, w))
        self.error += error
        if peak > 0.0:
            self.normalised_error += error / (peak * peak)
        elif error > 0.0:
            self.normalised_error = math.inf
        self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        self.count += w.size

    def metrics(self) -> ErrorMetrics:
        """The metrics of everything added so far."""
        n = max(self.count, 1)
        return ErrorMetrics(
            psnr=decibels(1.0, self.normalised_error / n),
            snr=decibels(self.signal, self.error),
            relative_l2=(math.sqrt(self.error / self.signal) if self.signal > 0.0
                         else (0.0 if self.error == 0.0 else math.inf)),
            max_abs=self.max_abs,
            mse=self.error / n,
            count=self.count,
            normalisation=self.normalisation,
        )


def error_metrics(original: ArrayLike, approx: ArrayLike,
                  normalisation: str = "maxabs") -> ErrorMetrics:
    """PSNR (normalisation named), SNR, relative L2 and max-abs error of ``approx``."""
    tally = ErrorTally(normalisation)
    tally.add(original, approx)
    return tally.metrics()


def psnr(original: ArrayLike, approx: ArrayLike, normalisation: str = "maxabs") -> float:
    """10 log₁₀(MAX² / MSE); MAX from ``normalisation`` ("maxabs" or "range")."""
    return error_metrics(original, approx, normalisation).psnr


def snr(original: ArrayLike, approx: ArrayLike) -> float:
    """10 log₁₀(Σw² / Σ(w − ŵ)²) in dB."""
    return error_metrics(original, approx).snr


def relative_l2_error(original: ArrayLike, approx: ArrayLike) -> float:
    """‖w − ŵ‖ / ‖w‖."""
    return error_metrics(original, approx).relative_l2


def max_abs_error(original: ArrayLike, approx: ArrayLike) -> float:
    """max |w − ŵ|."""
    return error_metrics(original, approx).max_abs
