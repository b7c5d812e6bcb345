"""Energy in a transform domain: how few DCT-II or DFT coefficients hold most of a tensor's energy.

A windowed DFT basis looks random in coordinate space (row PCA needs half the directions,
neighbouring weights are uncorrelated), yet the DFT of each row has three non-zero
coefficients. Two statistics tell such tensors apart, each the fraction of the coefficients
(of all n per signal) that holds ``threshold`` of the energy:

* **compaction**: the energy of each coefficient index averaged over the signals, sorted;
  what a transform coder that keeps the same coefficients for every signal would keep
  (a smooth or low-pass tensor);
* **sparsity**: every coefficient of every signal pooled and sorted; what a coder that keeps
  each signal's own largest coefficients would keep (a DFT or DCT basis: one frequency per row).

The transforms are orthonormal, so the energy in the transform domain equals the energy of the
weights (Parseval). The real DFT of n samples is written as n real numbers: the DC term, the
cosine and sine parts of every frequency 1 … ⌈n/2⌉−1 (scaled by √2) and, for even n, the
Nyquist term.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import RandomState, as_generator, bootstrap_interval
from weightdna.errors import InvalidInputError

TRANSFORMS = ("dct", "dft")
# rows: each row is a signal (transform along the columns); columns: each column is one;
# window: each kh × kw window of a conv kernel (2-D DCT).
AXES = ("rows", "columns", "window")


def real_dft(X: np.ndarray) -> np.ndarray:
    """The orthonormal real DFT of each row of X (n real coefficients per row of n samples)."""
    n = X.shape[1]
    c = scipy.fft.rfft(X, axis=1, norm="ortho")
    last = n // 2 if n % 2 == 0 else n // 2 + 1  # frequencies with a cosine and a sine part
    middle = c[:, 1:last] * np.sqrt(2.0)
    parts = [c[:, :1].real, middle.real, middle.imag]
    if n % 2 == 0:
        parts.append(c[:, n // 2 : n // 2 + 1].real)
    return np.concatenate(parts, axis=1)


def coefficients(X: np.ndarray, transform: str, axis: str,
                 window: tuple[int, int] | None = None) -> np.ndarray:
    """The transform's coefficients of every signal of X, one signal a row.

    X: a matrix (axis "rows" or "columns"), or rows of kh·kw-long flattened windows
    (axis "window", window = (kh, kw); DCT only).
    """
    if transform not in TRANSFORMS:
        raise InvalidInputError(f"unknown transform {transform!r}; use one of {TRANSFORMS}")
    if axis not in AXES:
        raise InvalidInputError(f"unknown axis {axis!r}; use one of {AXES}")
    X = np.asarray(X, dtype=np.float64)
    if axis == "window":
        if window is None or transform != "dct":
            raise InvalidInputError("the window axis needs window=(kh, kw) and the DCT")
        kh, kw = window
        windows = X.reshape(-1, kh, kw)
        return scipy.fft.dctn(windows, axes=(1, 2), norm="ortho").reshape(len(windows), -1)
    signals = X if axis == "rows" else X.T
    if transform == "dct":
        return scipy.fft.dct(signals, type=2, axis=1, norm="ortho")
    return real_dft(signals)


class TransformEnergy(BaseEstimator):
    """Fractions of a transform's coefficients holding ``threshold`` of the energy.

    Attributes: compaction_ (fixed coefficients, energy averaged over the signals) and
    sparsity_ (every coefficient pooled), each a fraction of the n coefficients per signal,
    with bootstrap intervals over the signals compaction_interval_ and sparsity_interval_;
    profile_ (mean energy per coefficient index), n_signals_, n_coefficients_.
    """

    def __init__(self, transform: str = "dct", axis: str = "rows",
                 window: tuple[int, int] | None = None, threshold: float = 0.95,
                 n_bootstrap: int = 20, random_state: RandomState = 0):
        self.transform = transform
        self.axis = axis
        self.window = window
        self.threshold = threshold
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> TransformEnergy:
        """Transform every signal of X and measure both fractions."""
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidInputError(f"threshold must lie in (0, 1], got {self.threshold}")
        energy = coefficients(X, self.transform, self.axis, self.window) ** 2
        if energy.shape[1] < 2:
            raise InvalidInputError("signals of one sample have no transform to compact")
        total = energy.sum()
        if not np.isfinite(total) or total <= 0.0:
            raise InvalidInputError("the signals are all zeros: they have no energy to compact")
        rng = as_generator(self.random_state)
        self.n_signals_, self.n_coefficients_ = energy.shape
        self.profile_ = energy.mean(axis=0)
        self.compaction_ = _compaction(energy, np.ones(len(energy)), self.threshold)
        order = np.argsort(energy, axis=None)[::-1]
        self.sparsity_ = _sparsity(energy, order, np.ones(len(energy)), self.threshold)
        indices = np.arange(len(energy))
        self.compaction_interval_ = bootstrap_interval(
            indices, lambda s: [_compaction(energy, _counts(r, len(energy)), self.threshold)
                                for r in s],
            n_bootstrap=self.n_bootstrap, random_state=rng)
        self.sparsity_interval_ = bootstrap_interval(
            indices, lambda s: [_sparsity(energy, order, _counts(r, len(energy)), self.threshold)
                                for r in s],
            n_bootstrap=self.n_bootstrap, random_state=rng)
        return self


def _counts(resample: np.ndarray, n: int) -> np.ndarray:
    """How often each signal was drawn in one bootstrap resample (of indices)."""
    return np.bincount(resample.astype(np.int64), minlength=n).astype(np.float64)


def _compaction(energy: np.ndarray, weights: np.ndarray, threshold: float) -> float:
    """Fraction of coefficient indices whose weighted mean energy holds threshold of it."""
    profile = np.sort(weights @ energy)[::-1]
    total = profile.sum()
    if total <= 0.0:
        return float("nan")
    k = np.searchsorted(np.cumsum(profile), threshold * total - 1e-12 * total) + 1
    return float(min(k, profile.size) / profile.size)


def _sparsity(energy: np.ndarray, order: np.ndarray, weights: np.ndarray,
              threshold: float) -> float:
    """Fraction of all coefficients (signals weighted) holding threshold of the energy, the
    largest first; order sorts energy (flattened) from the largest."""
    n = energy.shape[1]
    w = weights[order // n]
    cumulative = np.cumsum(energy.ravel()[order] * w)
    total = cumulative[-1]
    if total <= 0.0:
        return float("nan")
    i = min(int(np.searchsorted(cumulative, threshold * total - 1e-12 * total)), order.size - 1)
    kept = np.cumsum(w)[i]
    return float(kept / (weights.sum() * n))
