"""What `analyze_weights` can be asked, and what the seed's claims are, in a module that
imports nothing heavy: `weightdna analyze --help` shows both without loading the estimators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Said wherever the claims are shown (analyze's help and table, the report).
ABOUT_SEED = (
    "The seed is the set of documents weightdna was started from. They claim that trained "
    "weights have structure random weights lack (few principal components, a low intrinsic "
    "dimension, smoothness between neighbouring coordinates, low entropy) and that a small "
    "coordinate network (the DNA) reproduces them at a high ratio. Each claim is tested on "
    "these weights beside the same statistic on the weights shuffled and on Gaussian weights: "
    "it holds, fails, or is inconclusive."
)


@dataclass
class AnalysisSettings:
    """Knobs of ``analyze_weights``; the defaults analyse all-MiniLM-L6-v2 in minutes."""

    max_rows: int = 2000
    seed: int = 0
    n_neighbors: int = 100
    local_points: int = 200
    correlation_points: int = 1000
    knn_points: int = 1000
    dna_tensors: int = 4
    dna_max_values: int = 32768
    dna_steps: int = 500
    dna_ratio: float = 22.0
    dna_holdout: float = 0.2
    # The structure lenses (weightdna.analysis.lenses): weights per block, rows per tensor
    # for the cross-tensor row match.
    lens_values: int = 65536
    # False: the lenses and the structure map only, none of the seed's estimators (faster;
    # the claims are then not measured).
    seed_claims: bool = True
    match_rows: int = 512

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return dict(self.__dict__)
