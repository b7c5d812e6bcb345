"""Estimators of the structure of weight tensors, scikit-learn style: fit(X) → self, results in *_.

Each estimator's docstring says which point cloud it sees: the rows of a matrix as points
(PCAEnergy, LocalDimension, CorrelationDimension, MLEDimension, TwoNN — pass W.T for columns),
the graph of (coordinates, value) (LipschitzConstant, LocalLinearity), or the values alone
(Entropy).

The structure lenses look for exact structure those miss: TransformEnergy (DCT/DFT
compaction and sparsity), KroneckerRank (separability), WindowRoughness (smooth conv
kernels) and RowMatch (rows repeated across tensors); ``lenses`` runs them beside three
nulls, and ``structure_map`` ranks the tensors by what they find (rules in ``structure``).

``analyze_weights`` runs them all on a model beside the null baselines, and
``judge_claims`` gives each of the seed's claims a verdict (rules in ``claims``).
"""

from weightdna._lazy import lazy_exports

# Imported on first use: a light submodule (a command's choices) is read without
# the rest, which imports torch.
_EXPORTS = {
    "AnalysisSettings": "run",
    "CLAIMS": "claims",
    "ClaimVerdict": "claims",
    "CorrelationDimension": "correlation_dimension",
    "DNAProbe": "complexity",
    "Entropy": "entropy",
    "KroneckerRank": "separability",
    "LipschitzConstant": "lipschitz",
    "LocalDimension": "local_dimension",
    "LocalLinearity": "linearity",
    "MLEDimension": "likelihood",
    "Measure": "measure",
    "ModelAnalysis": "run",
    "PCAEnergy": "pca",
    "RowMatch": "similarity",
    "TensorAnalysis": "run",
    "TransformEnergy": "transform",
    "TwoNN": "twonn",
    "WindowRoughness": "smoothness",
    "analyze_weights": "run",
    "bootstrap_interval": "sampling",
    "gaussian_like": "baselines",
    "judge": "claims",
    "judge_claims": "claims",
    "null_baselines": "baselines",
    "probe_dna": "complexity",
    "row_shuffled_like": "baselines",
    "shuffled_like": "baselines",
    "structure_map": "structure",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
