"""Correlation dimension (Grassberger–Procaccia): the slope of log C(r) against log r."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import RandomState, as_generator, check_points, sample_indices
from weightdna.errors import InvalidInputError


class CorrelationDimension(BaseEstimator):
    """Grassberger–Procaccia correlation dimension, fitted on the plateau of the local slopes.

    Point cloud: the rows of X (n_points, n_features); pass W.T to use columns as points.
    On a seeded sample of up to max_points rows, C(r) = #{i<j : ‖xᵢ−xⱼ‖ < r} / (N(N−1)/2)
    (the seed's (1/N²)Σ without the i=j terms) is evaluated at n_radii log-spaced radii from
    the distance below which min_pairs pairs lie (small-r noise: too few pairs) to the
    quantile max_fraction of all distances (large-r saturation). Local slopes are
    Δlog C/Δlog r between consecutive radii. The plateau is the longest run of at least
    min_plateau consecutive slopes all within ±plateau_tolerance of the run's median (ties: the
    run at smaller r, since the dimension is the r → 0 limit); dimension_ is the least-squares
    slope of log C on log r over the radii that run spans. reliable_ is False when no such run
    exists or when dimension_ exceeds the Eckmann–Ruelle limit 2·log₁₀N.

    Attributes: dimension_, r_range_ (r of the plateau's ends), log_r_, log_C_, local_slopes_,
    slope_log_r_ (mid-points of the slopes), plateau_ (slice into local_slopes_),
    plateau_found_, eckmann_ruelle_limit_, reliable_, sample_size_, interval_ (bootstrap over
    points, on the same r-range; None when n_bootstrap is 0).
    """

    def __init__(
        self,
        n_radii: int = 32,
        max_points: int | None = 2000,
        min_pairs: int | None = None,
        max_fraction: float = 0.5,
        plateau_tolerance: float = 0.10,
        min_plateau: int = 4,
        n_bootstrap: int = 50,
        confidence: float = 0.95,
        random_state: RandomState = 0,
    ):
        self.n_radii = n_radii
        self.max_points = max_points
        self.min_pairs = min_pairs
        self.max_fraction = max_fraction
        self.plateau_tolerance = plateau_tolerance
        self.min_plateau = min_plateau
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> CorrelationDimension:
        """Compute C(r), its local slopes and the slope on their plateau."""
        X = check_points(X, min_points=10)
        if self.n_radii < self.min_plateau + 1:
            raise InvalidInputError(
                f"n_radii ({self.n_radii}) must exceed min_plateau ({self.min_plateau})"
            )
        sample = sample_indices(X.shape[0], self.max_points, self.random_state)
        Xs = X[sample]
        n = len(sample)
        d = pdist(Xs)
        n_pairs = d.size
        d_sorted = np.sort(d)
        positive = d_sorted[d_sorted > 0]
        if positive.size < 2 * self.min_plateau:
            raise InvalidInputError("X has too few distinct points for a correlation dimension")
        # Default lower end: as many pairs as points, so that C is counted from ≥ N pairs.
        min_pairs = n if self.min_pairs is None else self.min_pairs
        r_lo = positive[min(max(min_pairs, 1), positive.size) - 1]
        r_hi = d_sorted[int(self.max_fraction * (n_pairs - 1))]
        if not r_hi > r_lo:
            raise InvalidInputError("the distances span no range of r; use more points")
        radii = np.geomspace(r_lo, r_hi, self.n_radii)
        counts = np.searchsorted(d_sorted, radii, side="left")
        # r_lo itself is a distance; count pairs strictly below r but make the first count ≥ 1.
        counts = np.maximum(counts, 1)
        log_r = np.log(radii)
        log_c = np.log(counts / n_pairs)
        slopes = np.diff(log_c) / np.diff(log_r)
        start, stop, found = _plateau(slopes, self.plateau_tolerance, self.min_plateau)
        fit = slice(start, stop + 1)  # slopes start..stop-1 join radii start..stop
        dimension = float(np.polyfit(log_r[fit], log_c[fit], 1)[0])

        self.sample_indices_ = sample
        self.sample_size_ = n
        self.log_r_ = log_r
        self.log_C_ = log_c
        self.local_slopes_ = slopes
        self.slope_log_r_ = (log_r[:-1] + log_r[1:]) / 2
        self.plateau_ = slice(start, stop)
        self.plateau_found_ = found
        self.r_range_ = (float(radii[start]), float(radii[stop]))
        self.dimension_ = dimension
        self.eckmann_ruelle_limit_ = float(2.0 * np.log10(n))
        self.reliable_ = bool(found and dimension <= self.eckmann_ruelle_limit_)
        self.interval_ = self._bootstrap(d, n, radii[fit]) if self.n_bootstrap > 0 else None
        return self

    def _bootstrap(self, d: np.ndarray, n: int, radii: np.ndarray) -> tuple[float, float]:
        """Percentile interval of the slope when the points are resampled with replacement.

        A resample gives point i a multiplicity wᵢ; pair (i, j) then counts wᵢwⱼ times, and a
        point's copies are never paired with each other (they would add zero distances).
        """
        rng = as_generator(self.random_state)
        i, j = np.triu_indices(n, k=1)
        # Only pairs closer than the largest fitted radius change C on the fitted range; the
        # total weight of all pairs is known without them: ((Σw)² − Σw²) / 2.
        near = d < radii[-1]
        order = np.argsort(d[near], kind="stable")
        i, j = i[near][order], j[near][order]
        ends = np.searchsorted(d[near][order], radii, side="left")
        log_r = np.log(radii)
        slopes = np.full(self.n_bootstrap, np.nan)
        for b in range(self.n_bootstrap):
            w = rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64)
            cum = np.concatenate(([0.0], np.cumsum(w[i] * w[j])))
            c = cum[ends] / ((n * n - np.sum(w * w)) / 2.0)
            ok = c > 0
            if ok.sum() >= 2:
                slopes[b] = np.polyfit(log_r[ok], np.log(c[ok]), 1)[0]
        alpha = (1.0 - self.confidence) / 2.0
        lo, hi = np.nanquantile(slopes, [alpha, 1.0 - alpha])
        return (float(lo), float(hi))


def _plateau(slopes: np.ndarray, tolerance: float, min_length: int) -> tuple[int, int, bool]:
    """Longest run [start, stop) of slopes all within ±tolerance of the run's median.

    Falls back to the run of min_length slopes with the smallest relative spread (found=False).
    """
    n = slopes.size
    best: tuple[int, int] | None = None
    for start in range(n):
        for stop in range(n, start + min_length - 1, -1):
            if best is not None and stop - start <= best[1] - best[0]:
                break
            run = slopes[start:stop]
            med = np.median(run)
            if med > 0 and np.all(np.abs(run - med) <= tolerance * med):
                best = (start, stop)
                break
    if best is not None:
        return best[0], best[1], True
    length = min(min_length, n)
    spreads = [
        np.ptp(slopes[s : s + length]) / max(abs(np.median(slopes[s : s + length])), 1e-12)
        for s in range(n - length + 1)
    ]
    start = int(np.argmin(spreads))
    return start, start + length, False
