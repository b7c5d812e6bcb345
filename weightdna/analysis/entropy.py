"""Entropy of the weight values: histogram entropy and bits per weight at a fixed step."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.errors import InvalidInputError


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of the empirical distribution given by counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


class Entropy(BaseEstimator):
    """Histogram entropy of the weight values and their entropy when quantised at a fixed step.

    Point cloud: the values alone (all entries of W, flattened; positions are ignored).
    Histogram entropy: n_bins equal bins over [min, max]; n_bins="fd" (default) takes the bin
    width of the Freedman–Diaconis rule, 2·IQR·N^(−1/3) (numpy.histogram_bin_edges "fd"), an
    int fixes the number of bins. entropy_bits_ is the discrete entropy of the bin
    frequencies; differential_entropy_bits_ = entropy_bits_ + log₂(bin width) estimates h(X).
    Quantised entropy: q = round(w/Δ), the empirical entropy of the integers q in bits per
    weight — what an ideal order-0 entropy coder would spend at step Δ. step=None takes
    Δ = std(W)/16 (stored in step_), so the figure is comparable across tensors of any scale.

    Attributes: entropy_bits_, differential_entropy_bits_, n_bins_, bin_width_,
    quantized_entropy_bits_, step_, n_levels_ (distinct quantised values), n_values_.
    """

    def __init__(self, n_bins: int | str = "fd", step: float | None = None):
        self.n_bins = n_bins
        self.step = step

    def fit(self, W: np.ndarray, y: None = None) -> Entropy:
        """Compute both entropies of the values of W."""
        w = np.asarray(W, dtype=np.float64).ravel()
        if w.size < 2:
            raise InvalidInputError("W needs at least 2 values for an entropy")
        if not np.all(np.isfinite(w)):
            raise InvalidInputError("W contains NaN or infinite values; remove them first")
        fixed = isinstance(self.n_bins, int | np.integer) and self.n_bins >= 1
        if self.n_bins != "fd" and not fixed:
            raise InvalidInputError(f"n_bins must be 'fd' or a positive int, got {self.n_bins!r}")
        lo, hi = float(w.min()), float(w.max())
        if hi == lo:
            self.n_bins_, self.bin_width_ = 1, 0.0
            self.entropy_bits_ = 0.0
            self.differential_entropy_bits_ = float("-inf")
        else:
            edges = np.histogram_bin_edges(w, bins=self.n_bins)
            counts, _ = np.histogram(w, bins=edges)
            self.n_bins_ = int(counts.size)
            self.bin_width_ = float(edges[1] - edges[0])
            self.entropy_bits_ = _entropy_bits(counts)
            self.differential_entropy_bits_ = self.entropy_bits_ + float(np.log2(self.bin_width_))

        if self.step is None:
            std = float(w.std())
            step = std / 16.0 if std > 0 else 1.0  # constant weights: one level at any step
        else:
            step = float(self.step)
            if not step > 0:
                raise InvalidInputError(f"step must be positive, got {self.step}")
        levels = np.rint(w / step)
        levels -= levels.min()
        if levels.max() < 4 * w.size:
            # Counting by bincount avoids sorting tens of millions of values (np.unique).
            level_counts = np.bincount(levels.astype(np.int64))
            level_counts = level_counts[level_counts > 0]
        else:
            _, level_counts = np.unique(levels, return_counts=True)
        self.step_ = float(step)
        self.n_levels_ = int(level_counts.size)
        self.quantized_entropy_bits_ = _entropy_bits(level_counts)
        self.n_values_ = int(w.size)
        return self
