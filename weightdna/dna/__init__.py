"""The DNA: a small coordinate network (a SIREN by default) fitted to a model's weights.

``siren`` and ``fourier`` hold the networks, ``fit`` fits one to values at coordinates,
``metrics`` measures reconstructions, and ``model`` fits whole models tensor by tensor,
group by group, or all at once, and saves and loads ``.dna.pt`` files.
"""

from weightdna._lazy import lazy_exports

# Imported on first use: a light submodule (a command's choices) is read without
# the rest, which imports torch.
_EXPORTS = {
    "DNANetwork": "model",
    "ErrorMetrics": "metrics",
    "ErrorTally": "metrics",
    "FitConfig": "fit",
    "FitProgress": "fit",
    "FitResult": "fit",
    "FourierFeatureMLP": "fourier",
    "GRANULARITIES": "model",
    "ModelDNA": "model",
    "ModelFitProgress": "model",
    "PSNR_NORMALISATIONS": "metrics",
    "ReluMLP": "fourier",
    "SineLayer": "siren",
    "Siren": "siren",
    "TARGET_NORMALISATIONS": "model",
    "TensorDNA": "model",
    "build_network": "fit",
    "count_parameters": "fit",
    "error_metrics": "metrics",
    "fit_dna": "fit",
    "fit_model": "model",
    "learning_rate": "fit",
    "load_checkpoint": "fit",
    "max_abs_error": "metrics",
    "normalisation_constants": "model",
    "predict": "fit",
    "psnr": "metrics",
    "relative_l2_error": "metrics",
    "resolve_device": "fit",
    "save_checkpoint": "fit",
    "select_tensors": "model",
    "siren_weight_bound": "siren",
    "snr": "metrics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
