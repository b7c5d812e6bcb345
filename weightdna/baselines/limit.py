"""How far from the limit: an estimate of the best SNR any coder of these weights could reach
at a rate, when each row's own scale is known for free.

Each row i (a tensor laid out as rows × columns by `weightdna.coords.matrix_shape`; a 1-D
tensor is one row) of n_i values, variance σ_i² and standardised differential entropy h_i
(bits, of the row divided by σ_i) has entropy power Q_i = σ_i²·2^(2h_i)/(2πe) ≤ σ_i². The
Shannon lower bound says no code of that row at R_i bits per value has a mean squared error
below Q_i·2^(−2R_i) (and an error of σ_i² needs no bits). Spreading a total of R bits per
weight over the rows to minimise Σ n_i·D_i is reverse water-filling: D_i = min(θ, Q_i), with
θ set so that Σ n_i·max(0, ½·log₂(Q_i/θ)) = R·Σ n_i. The limit's SNR is then
10·log₁₀(Σ n_i·σ_i² / Σ n_i·D_i).

It is an estimate, not a proof: h_i is estimated from the row's own values
(`scipy.stats.differential_entropy`, Vasicek's m-spacings estimator; on MiniLM
Ebrahimi's bias correction puts the limit 0.16 dB lower at 2, 4 and 8 bits per weight, so
Vasicek's is the more generous limit), the
rows are treated as independent, and the side information (scales, model parameters,
header) is free. A constant row (σ_i = 0) costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from weightdna.coords import matrix_shape

_TWO_PI_E = 2 * math.pi * math.e
# Rows longer than this have their entropy estimated on an evenly spaced subset of their
# sorted values' ranks (the estimate needs the order statistics, not every value).
_MAX_ROW_VALUES = 4096


def row_entropy_powers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_i, σ_i², Q_i) of every row of ``values`` (any shape; laid out as rows × columns)."""
    from scipy.stats import differential_entropy

    rows, columns = matrix_shape(values.shape)
    x = np.asarray(values, dtype=np.float64).reshape(rows, columns)
    x = np.where(np.isfinite(x), x, 0.0)  # non-finite values are stored apart, exactly
    variance = x.var(axis=1)
    counts = np.full(rows, x.shape[1], dtype=np.float64)
    powers = np.zeros(rows)
    live = variance > 0
    if x.shape[1] < 4 or not live.any():
        powers[live] = variance[live]  # too few values to estimate: the Gaussian's (largest)
        return counts, variance, powers
    z = (x[live] - x[live].mean(axis=1, keepdims=True)) / np.sqrt(variance[live])[:, None]
    if z.shape[1] > _MAX_ROW_VALUES:
        z = np.sort(z, axis=1)[:, np.linspace(0, z.shape[1] - 1, _MAX_ROW_VALUES).astype(int)]
    h_nats = differential_entropy(z, axis=1, method="vasicek")
    gaussian_nats = 0.5 * math.log(_TWO_PI_E)
    # No distribution of unit variance has more entropy than the Gaussian.
    h_nats = np.minimum(h_nats, gaussian_nats)
    powers[live] = variance[live] * np.exp(2 * h_nats) / _TWO_PI_E
    return counts, variance, powers


def water_filling_snr(counts: np.ndarray, variances: np.ndarray, powers: np.ndarray,
                      rate: float) -> float:
    """The SNR (dB) of reverse water-filling at ``rate`` bits per weight (module docstring)."""
    total, signal = counts.sum(), float(np.dot(counts, variances))
    live = powers > 0
    if signal == 0 or not live.any():
        return math.inf
    n, q = counts[live], powers[live]

    def bits(log_theta: float) -> float:
        return float(np.dot(n, np.maximum(0.0, 0.5 * (np.log2(q) - log_theta)))) / total

    lo, hi = float(np.log2(q).min()) - 2 * rate - 2, float(np.log2(q).max())
    for _ in range(200):  # bits() falls as log θ grows
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if bits(mid) > rate else (lo, mid)
    theta = 2.0 ** hi
    distortion = float(np.dot(counts, np.minimum(theta, powers)))
    # Rows the water level does not reach keep their whole variance as error.
    distortion += float(np.dot(counts[~live], variances[~live]))
    return 10 * math.log10(signal / distortion) if distortion > 0 else math.inf


def row_shannon_limit(tensors: Iterable[np.ndarray], rates: Sequence[float]) -> dict[float, float]:
    """The limit's SNR (dB) at each of ``rates`` bits per weight, pooled over ``tensors``."""
    parts = [row_entropy_powers(t) for t in tensors]
    if not parts:
        return {float(r): math.nan for r in rates}
    counts, variances, powers = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {float(r): water_filling_snr(counts, variances, powers, float(r)) for r in rates}
