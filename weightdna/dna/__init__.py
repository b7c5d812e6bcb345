"""The DNA: a small coordinate network (a SIREN by default) fitted to a model's weights.

``siren`` and ``fourier`` hold the networks, ``fit`` fits one to values at coordinates,
``metrics`` measures reconstructions, and ``model`` fits whole models tensor by tensor,
group by group, or all at once, and saves and loads ``.dna.pt`` files.
"""

from weightdna.dna.fit import (
    FitConfig,
    FitProgress,
    FitResult,
    build_network,
    count_parameters,
    fit_dna,
    learning_rate,
    load_checkpoint,
    predict,
    resolve_device,
    save_checkpoint,
)
from weightdna.dna.fourier import FourierFeatureMLP, ReluMLP
from weightdna.dna.metrics import (
    PSNR_NORMALISATIONS,
    ErrorMetrics,
    ErrorTally,
    error_metrics,
    max_abs_error,
    psnr,
    relative_l2_error,
    snr,
)
from weightdna.dna.model import (
    GRANULARITIES,
    TARGET_NORMALISATIONS,
    DNANetwork,
    ModelDNA,
    ModelFitProgress,
    TensorDNA,
    fit_model,
    normalisation_constants,
    select_tensors,
)
from weightdna.dna.siren import SineLayer, Siren, siren_weight_bound

__all__ = [
    "GRANULARITIES",
    "TARGET_NORMALISATIONS",
    "DNANetwork",
    "ModelDNA",
    "ModelFitProgress",
    "TensorDNA",
    "fit_model",
    "normalisation_constants",
    "select_tensors",
    "PSNR_NORMALISATIONS",
    "ErrorMetrics",
    "ErrorTally",
    "FitConfig",
    "FitProgress",
    "FitResult",
    "FourierFeatureMLP",
    "ReluMLP",
    "SineLayer",
    "Siren",
    "build_network",
    "count_parameters",
    "error_metrics",
    "fit_dna",
    "learning_rate",
    "load_checkpoint",
    "max_abs_error",
    "predict",
    "psnr",
    "relative_l2_error",
    "resolve_device",
    "save_checkpoint",
    "siren_weight_bound",
    "snr",
]
