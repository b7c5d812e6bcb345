"""The DNA fitter's named choices, in a module that imports nothing: `weightdna fit --help`
lists them without loading torch (`weightdna.dna.fit`, `.metrics` and `.model` explain each)."""

ARCHITECTURES = ("siren", "fourier", "relu")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("float32", "bfloat16")
PSNR_NORMALISATIONS = ("maxabs", "range")
GRANULARITIES = ("tensor", "group", "model")
TARGET_NORMALISATIONS = ("standard", "maxabs", "none")
