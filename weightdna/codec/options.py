"""The codec's named choices, in a module that imports nothing: a command's --help lists them
without loading the codec (`weightdna.codec.ratecontrol` explains each)."""

TARGET_KINDS = ("bits_per_weight", "snr", "psnr", "max_abs_error", "lossless")
CANDIDATES = ("quantized", "lowrank", "dna")
OBJECTIVES = ("layer", "relative", "mse")
# What measures each tensor's output sensitivity (`weightdna.evaluate.sensitivity`).
SENSITIVITY_MODES = ("none", "auto", "synthetic")
