"""Cross-tensor similarity: rows of one tensor repeated in another, up to scale and order.

A tied or repeated block stores rows another tensor already holds, each perhaps scaled, in
any order. For each query row q of one tensor, the residual 1 − cos²(q, r) to the reference
row r it is most parallel to is the share of q's energy left once q is coded as a multiple
of r. The statistic is its mean over the query rows: 0 for a copy (up to scale and a row
permutation), ≈ 1 − 2·ln(2N)/n for random rows of length n against N reference rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from weightdna.analysis.sampling import RandomState, as_generator, bootstrap_interval
from weightdna.errors import InvalidInputError

# cos² above this: the same row up to scale (float32 rounding leaves ~1e-7 of the energy).
SAME_ROW = 1.0 - 1e-5


def unit_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero rows of X scaled to unit length, and their indices in X."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    keep = np.flatnonzero(norms > 0)
    return X[keep] / norms[keep, None], keep


class RowMatch(BaseEstimator):
    """Mean residual 1 − cos² of each row of X against its most parallel row of a reference.

    fit(X, reference, x_index, reference_index, exclude_same): the rows' indices in their
    tensors (default 0, 1, …); exclude_same=True when X and reference are rows of one tensor,
    so that no row is matched to itself. Attributes: residual_, interval_ (bootstrap over
    the query rows), matched_ (fraction of query rows equal to a reference row up to scale),
    in_place_ (fraction of those matched at their own index: an exact copy up to scale
    rather than a permutation), n_queries_.
    """

    def __init__(self, n_bootstrap: int = 20, random_state: RandomState = 0):
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state

    def fit(self, X: np.ndarray, reference: np.ndarray, x_index: np.ndarray | None = None,
            reference_index: np.ndarray | None = None, exclude_same: bool = False) -> RowMatch:
        """Match every row of X to the reference's rows."""
        queries, q_keep = unit_rows(X)
        refs, r_keep = unit_rows(reference)
        q_index = q_keep if x_index is None else np.asarray(x_index)[q_keep]
        r_index = r_keep if reference_index is None else np.asarray(reference_index)[r_keep]
        if queries.shape[1] != refs.shape[1]:
            raise InvalidInputError(f"rows of length {queries.shape[1]} cannot be matched to "
                                    f"rows of length {refs.shape[1]}")
        if len(queries) == 0 or len(refs) == 0:
            raise InvalidInputError("every row is zero: there is no direction to match")
        cos2 = (queries @ refs.T) ** 2
        if exclude_same:
            cos2[q_index[:, None] == r_index[None, :]] = -1.0
        best = cos2.argmax(axis=1)
        best_cos2 = np.clip(cos2[np.arange(len(queries)), best], 0.0, 1.0)
        residual = 1.0 - best_cos2
        matched = best_cos2 >= SAME_ROW
        self.n_queries_ = len(queries)
        self.residual_ = float(residual.mean())
        self.interval_ = bootstrap_interval(residual, n_bootstrap=self.n_bootstrap,
                                            random_state=as_generator(self.random_state))
        self.matched_ = float(matched.mean())
        in_place = q_index[matched] == r_index[best[matched]]
        self.in_place_ = float(in_place.mean()) if matched.any() else 0.0
        return self
