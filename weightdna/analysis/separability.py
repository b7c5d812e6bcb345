"""Separability: how few Kronecker products A ⊗ B sum to a matrix (Van Loan's rearrangement).

A matrix W (m × n) with factor shapes A: m1 × n1 and B: m2 × n2 (m = m1·m2, n = n1·n2) is
rearranged into R (m1·n1 × m2·n2), whose row (i1, j1) is the block W[i1·m2:(i1+1)·m2,
j1·n2:(j1+1)·n2] flattened (Van Loan and Pitsianis 1993). W = Σᵣ Aᵣ ⊗ Bᵣ with r terms exactly
when R has rank r, and the best r-term approximation comes from R's SVD. A conv kernel
out × in × kh × kw laid out as out × (in·kh·kw) has two natural factor shapes: (out, in),
whose R is (out·in) × (kh·kw), channels against space; and (out, 1), whose R is the layout
itself, output channels against the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import check_points
from weightdna.errors import InvalidInputError

FactorShape = tuple[int, int]


def kronecker_rearrange(W: np.ndarray, m1: int, n1: int) -> np.ndarray:
    """Van Loan's R of W for A: m1 × n1 (B: m/m1 × n/n1): rank r ⇔ W is a sum of r A ⊗ B."""
    m, n = W.shape
    if m % m1 or n % n1:
        raise InvalidInputError(f"factor shape {m1}×{n1} does not divide the {m}×{n} matrix")
    m2, n2 = m // m1, n // n1
    return W.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def divisors_near_root(n: int, count: int = 2) -> list[int]:
    """Up to ``count`` divisors d of n with 1 < d < n, nearest to √n on a log scale."""
    divisors = [d for d in range(2, n) if n % d == 0]
    return sorted(divisors, key=lambda d: (abs(math.log(d / math.sqrt(n))), d))[:count]


def factor_shapes(shape: Sequence[int], per_axis: int = 2) -> list[FactorShape]:
    """The factor shapes (m1, n1) tried for a tensor of ``shape`` in its matrix layout:
    divisors of both sides near their square roots, and for a conv kernel (out, in) and
    (out, 1)."""
    m, n = shape[0], math.prod(shape[1:])
    shapes = [(a, b) for a in divisors_near_root(m, per_axis)
              for b in divisors_near_root(n, per_axis)]
    if len(shape) == 4 and shape[2] * shape[3] > 1:
        shapes += [(shape[0], shape[1]), (shape[0], 1)]
    return list(dict.fromkeys(shapes))


def kronecker_cost(rank: int, m: int, n: int, m1: int, n1: int) -> float:
    """Numbers in rank terms A ⊗ B, as a fraction of the m·n weights."""
    return rank * (m1 * n1 + (m // m1) * (n // n1)) / (m * n)


class KroneckerRank(BaseEstimator):
    """The Kronecker rank holding ``threshold`` of the energy, at the factor shape where the
    factors cost the fewest numbers.

    Attributes: factor_shape_ ((m1, n1) of A), rank_ (terms holding threshold of the energy
    at that shape), rank_fraction_ (rank_ over the most terms R allows), cost_ (numbers in
    rank_ terms over m·n, uncapped: above 1 the factors cost more than the weights),
    spectrum_ (σ² of R, descending), costs_ (factor shape → cost, every shape tried).
    """

    def __init__(self, shapes: Sequence[FactorShape] | None = None, threshold: float = 0.95):
        self.shapes = shapes
        self.threshold = threshold

    def fit(self, X: np.ndarray, y: None = None) -> KroneckerRank:
        """Rearrange X at every factor shape and keep the cheapest."""
        X = check_points(X, min_points=2)
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidInputError(f"threshold must lie in (0, 1], got {self.threshold}")
        m, n = X.shape
        shapes = list(self.shapes) if self.shapes is not None else factor_shapes(X.shape)
        shapes = [s for s in shapes if m % s[0] == 0 and n % s[1] == 0]
        if not shapes:
            raise InvalidInputError(f"no factor shape divides the {m}×{n} matrix (a prime "
                                    "number of rows and of columns has no Kronecker factors)")
        self.costs_ = {}
        best = None
        for m1, n1 in shapes:
            spectrum = _spectrum(kronecker_rearrange(X, m1, n1))
            rank = _rank_holding(spectrum, self.threshold)
            cost = kronecker_cost(rank, m, n, m1, n1)
            self.costs_[(m1, n1)] = cost
            if best is None or cost < best[0]:
                best = (cost, (m1, n1), rank, spectrum)
        self.cost_, self.factor_shape_, self.rank_, self.spectrum_ = best
        self.rank_fraction_ = self.rank_ / self.spectrum_.size
        return self


def _spectrum(R: np.ndarray) -> np.ndarray:
    """σ² of R, descending, from the smaller Gram matrix (as PCAEnergy does)."""
    gram = R.T @ R if R.shape[0] >= R.shape[1] else R @ R.T
    return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)


def _rank_holding(spectrum: np.ndarray, threshold: float) -> int:
    total = spectrum.sum()
    if total <= 0.0:
        raise InvalidInputError("the matrix is all zeros: it has no Kronecker rank")
    energy = np.cumsum(spectrum) / total
    return int(min(np.searchsorted(energy, threshold - 1e-12) + 1, spectrum.size))
