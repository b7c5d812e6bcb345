"""PCA energy: how many singular directions hold a given share of a matrix's energy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import check_points
from weightdna.errors import InvalidInputError


class PCAEnergy(BaseEstimator):
    """Smallest k whose top-k singular values hold each threshold of the energy Σσ².

    Point cloud: the rows of X (n_points, n_features); the spectrum is the same for X.T.
    Energy follows the seed: energy = cumsum(σ²) / Σσ² of the SVD of X itself (center=False);
    center=True subtracts the column means first (classical PCA, as scikit-dimension does).
    k/D uses D = min(n_points, n_features), the number of singular values.

    Attributes: singular_values_, spectrum_ (σ², descending), energy_ (cumulative fraction),
    k_ and k_fraction_ (dicts threshold → k and k/D), n_components_ (D).
    """

    def __init__(self, thresholds: Sequence[float] = (0.90, 0.95, 0.99), center: bool = False):
        self.thresholds = thresholds
        self.center = center

    def fit(self, X: np.ndarray, y: None = None) -> PCAEnergy:
        """Compute the spectrum of X and the k reaching each energy threshold."""
        X = check_points(X, min_points=1)
        for t in self.thresholds:
            if not 0.0 < t <= 1.0:
                raise InvalidInputError(f"energy thresholds must lie in (0, 1], got {t}")
        if self.center:
            X = X - X.mean(axis=0)
        # σ² are the eigenvalues of the smaller Gram matrix: for a 30522 × 384 embedding table
        # that is a 384 × 384 eigenproblem, ~10× faster than the SVD. Rounding moves each σ² by
        # ~1e-16·σ₁², far below what an energy fraction can notice.
        gram = X.T @ X if X.shape[0] >= X.shape[1] else X @ X.T
        spectrum = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)
        s = np.sqrt(spectrum)
        total = spectrum.sum()
        if total == 0.0:
            raise InvalidInputError("X is all zeros (after centring); its energy has no spectrum")
        energy = np.cumsum(spectrum) / total
        self.singular_values_ = s
        self.spectrum_ = spectrum
        self.energy_ = energy
        self.n_components_ = int(s.size)
        # A tiny tolerance so that a threshold hit exactly is not missed to rounding in cumsum.
        first = np.searchsorted(energy, np.asarray(self.thresholds, dtype=float) - 1e-12)
        self.k_ = {
            float(t): int(min(i + 1, s.size)) for t, i in zip(self.thresholds, first, strict=True)
        }
        self.k_fraction_ = {t: k / s.size for t, k in self.k_.items()}
        return self
