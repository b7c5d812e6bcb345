"""A DNA at a fixed compression ratio: its PSNR, its generalisation gap, and K(W) ≤ |DNA| + |error|.

The seed claims a DNA 22 times smaller than the weights reaches PSNR > 35 dB, that a DNA
fitted on part of the coordinates predicts the rest (E_gen ≈ E_train), and bounds the
weights' complexity by the DNA's bits plus the coded residual's. ``probe_dna`` measures
all three on one matrix: it fits a SIREN whose parameter count is about numel / ratio on
the matrix's (row, column) coordinates, holding a fraction of them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from weightdna.analysis.measure import Measure
from weightdna.analysis.sampling import RandomState, as_generator, bootstrap_interval
from weightdna.codec import encode_tensor
from weightdna.coords import axis_coordinate
from weightdna.dna import FitConfig, build_network, count_parameters, fit_dna
from weightdna.dna.metrics import decibels
from weightdna.dna.model import normalisation_constants

PSNR_NORMALISATION = "maxabs"
# Bits of one DNA parameter (stored as float32) and of the two normalisation constants.
PARAMETER_BITS = 32
NORMALISATION_BITS = 2 * 64


@dataclass(frozen=True)
class DNAProbe:
    """What a DNA of ``parameters`` parameters did on ``weights`` values.

    psnr_db/snr_db: on the training coordinates (MAX = max|w| of the matrix); holdout_*: on
    the held-out ones; gap_ratio: holdout MSE / training MSE. Bits: the DNA (float32
    parameters + normalisation), the residual coded to ``max_abs_error`` by the codec's
    ``encode_tensor`` (sections only, header excluded), and the weights coded directly
    to the same accuracy, for comparison.
    """

    weights: int
    parameters: int
    width: int
    depth: int
    steps: int
    ratio: float
    psnr_db: Measure
    snr_db: Measure
    holdout_psnr_db: Measure
    holdout_snr_db: Measure
    gap_ratio: float
    max_abs_error: float
    dna_bits: int
    residual_bits: int
    direct_bits: int
    seconds: float

    @property
    def bound_bits(self) -> int:
        """K(W) ≤ |DNA| + |error|, in bits."""
        return self.dna_bits + self.residual_bits

    def as_dict(self) -> dict[str, object]:
        """Plain JSON values."""
        out: dict[str, object] = {}
        for key, value in self.__dict__.items():
            out[key] = value.as_dict() if isinstance(value, Measure) else value
        out["bound_bits"] = self.bound_bits
        out["bound_bits_per_weight"] = self.bound_bits / self.weights
        out["direct_bits_per_weight"] = self.direct_bits / self.weights
        out["psnr_normalisation"] = PSNR_NORMALISATION
        return out


def width_for_ratio(numel: int, ratio: float, depth: int = 3, in_features: int = 2) -> int:
    """The SIREN width whose parameter count is closest to numel / ratio (at least 2)."""
    target = numel / ratio
    best, best_gap = 2, math.inf
    for width in range(2, 1025):
        count = count_parameters(build_network(FitConfig(width=width, depth=depth), in_features))
        if abs(count - target) < best_gap:
            best, best_gap = width, abs(count - target)
        if count > target:
            break
    return best


def probe_dna(
    W: np.ndarray,
    row_offset: int = 0,
    total_rows: int | None = None,
    *,
    ratio: float = 22.0,
    steps: int = 500,
    depth: int = 3,
    holdout: float = 0.2,
    max_abs_error_fraction: float = 0.01,
    seed: int = 0,
    random_state: RandomState = 0,
) -> DNAProbe:
    """Fit a SIREN of about W.size / ratio parameters to W (m × n) and measure it.

    W may be a block of rows of a larger matrix: row_offset and total_rows place it, so
    the coordinates are the matrix's own φ (x = row, y = column). The residual is coded so
    that every weight is restored within max_abs_error_fraction · max|W|.
    """
    W = np.asarray(W, dtype=np.float64)
    m, n = W.shape
    total_rows = m if total_rows is None else total_rows
    rows, cols = np.divmod(np.arange(W.size), n)
    coords = np.stack(
        [axis_coordinate(rows + row_offset, total_rows), axis_coordinate(cols, n)], axis=1
    )
    values = W.ravel()
    offset, scale = normalisation_constants(values, "standard")
    width = width_for_ratio(W.size, ratio, depth)
    config = FitConfig(
        width=width, depth=depth, steps=steps, holdout=holdout, seed=seed, device="cpu",
        eval_every=max(1, steps),
    )
    # One thread: the networks are small, and a second thread spinning on a busy 2-core
    # machine was measured 100× slower per matrix product.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit_dna(coords, (values - offset) / scale, config)
    finally:
        torch.set_num_threads(threads)
    prediction = result.prediction.astype(np.float64) * scale + offset
    train = ~result.holdout_mask
    peak = float(np.max(np.abs(values)))
    rng = as_generator(random_state)
    psnr, snr = _decibel_measures(values[train], prediction[train], peak, rng)
    held = result.holdout_mask
    hold_psnr, hold_snr = _decibel_measures(values[held], prediction[held], peak, rng)
    train_mse = float(np.mean((values[train] - prediction[train]) ** 2))
    hold_mse = float(np.mean((values[held] - prediction[held]) ** 2)) if held.any() else math.nan

    target = max_abs_error_fraction * peak if peak > 0 else 1e-12
    residual = (values - prediction).reshape(W.shape).astype(np.float32)
    parameters = result.parameter_count
    return DNAProbe(
        weights=int(W.size),
        parameters=parameters,
        width=width,
        depth=depth,
        steps=result.steps_run,
        ratio=W.size / parameters,
        psnr_db=psnr,
        snr_db=snr,
        holdout_psnr_db=hold_psnr,
        holdout_snr_db=hold_snr,
        gap_ratio=hold_mse / train_mse if train_mse > 0 else math.nan,
        max_abs_error=target,
        dna_bits=PARAMETER_BITS * parameters + NORMALISATION_BITS,
        residual_bits=coded_bits(residual, target),
        direct_bits=coded_bits(W.astype(np.float32), target),
        seconds=result.seconds,
    )


def coded_bits(values: np.ndarray, max_abs_error: float) -> int:
    """Bits of the codec's sections for values restored within max_abs_error."""
    _, sections = encode_tensor(values, max_abs_error=max_abs_error)
    return 8 * sum(len(s) for s in sections.values())


def _decibel_measures(
    values: np.ndarray, prediction: np.ndarray, peak: float, rng: np.random.Generator
) -> tuple[Measure, Measure]:
    """PSNR (MAX = peak) and SNR in dB, each with a bootstrap interval over the points."""
    if values.size == 0:
        nan = Measure(math.nan)
        return nan, nan
    sq_err = (values - prediction) ** 2
    mse = float(sq_err.mean())
    signal = float(np.mean(values**2))
    lo, hi = bootstrap_interval(sq_err, n_bootstrap=100, random_state=rng)
    # A larger MSE is a smaller ratio: the interval's ends swap.
    psnr = Measure(decibels(peak**2, mse), decibels(peak**2, hi), decibels(peak**2, lo))
    snr = Measure(decibels(signal, mse), decibels(signal, hi), decibels(signal, lo))
    return psnr, snr

