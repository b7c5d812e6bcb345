"""Estimators of the structure of weight tensors, scikit-learn style: fit(X) → self, results in *_.

Each estimator's docstring says which point cloud it sees: the rows of a matrix as points
(PCAEnergy, LocalDimension, CorrelationDimension, MLEDimension, TwoNN — pass W.T for columns),
the graph of (coordinates, value) (LipschitzConstant, LocalLinearity), or the values alone
(Entropy).

``analyze_weights`` runs them all on a model beside the null baselines, and
``judge_claims`` gives each of the seed's claims a verdict (rules in ``claims``).
"""

from weightdna.analysis.baselines import gaussian_like, null_baselines, shuffled_like
from weightdna.analysis.claims import CLAIMS, ClaimVerdict, judge, judge_claims
from weightdna.analysis.complexity import DNAProbe, probe_dna
from weightdna.analysis.correlation_dimension import CorrelationDimension
from weightdna.analysis.entropy import Entropy
from weightdna.analysis.likelihood import MLEDimension
from weightdna.analysis.linearity import LocalLinearity
from weightdna.analysis.lipschitz import LipschitzConstant
from weightdna.analysis.local_dimension import LocalDimension
from weightdna.analysis.measure import Measure
from weightdna.analysis.pca import PCAEnergy
from weightdna.analysis.run import AnalysisSettings, ModelAnalysis, TensorAnalysis, analyze_weights
from weightdna.analysis.sampling import bootstrap_interval
from weightdna.analysis.twonn import TwoNN

__all__ = [
    "CLAIMS",
    "AnalysisSettings",
    "ClaimVerdict",
    "CorrelationDimension",
    "DNAProbe",
    "Measure",
    "ModelAnalysis",
    "TensorAnalysis",
    "Entropy",
    "LipschitzConstant",
    "LocalDimension",
    "LocalLinearity",
    "MLEDimension",
    "PCAEnergy",
    "TwoNN",
    "analyze_weights",
    "bootstrap_interval",
    "gaussian_like",
    "judge",
    "judge_claims",
    "null_baselines",
    "probe_dna",
    "shuffled_like",
]
