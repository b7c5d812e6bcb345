"""k nearest neighbours of sampled query points among all points (shared by the kNN estimators)."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def query_neighbors(
    X: np.ndarray, query: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the n_neighbors nearest points of X to each X[query], self excluded.

    Asks for one neighbour more and drops the query point itself, so that the neighbours of a
    sampled point come from the whole cloud, as scikit-dimension's kneighbors() does.
    """
    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(X)
    dist, idx = nn.kneighbors(X[query])
    # The point itself is normally first; with duplicate points it may sit elsewhere in the list.
    is_self = idx == query[:, None]
    keep = ~is_self
    # Rows where the point was not returned (more than n_neighbors exact duplicates): drop the last.
    missing = ~is_self.any(axis=1)
    keep[missing, -1] = False
    dist = dist[keep].reshape(len(query), n_neighbors)
    idx = idx[keep].reshape(len(query), n_neighbors)
    return dist, idx
