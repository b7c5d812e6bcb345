"""The codec's named choices, in a module that imports nothing: a command's --help lists them
without loading the codec (`weightdna.codec.ratecontrol` explains each)."""

TARGET_KINDS = ("bits_per_weight", "snr", "psnr", "max_abs_error", "lossless")
CANDIDATES = ("quantized", "lowrank", "dna", "separable", "transform", "factored",
              "reference")
OBJECTIVES = ("layer", "relative", "mse")
# What measures each tensor's output sensitivity (`weightdna.evaluate.sensitivity`).
SENSITIVITY_MODES = ("none", "auto", "synthetic")

# What each output name of `compress` and `decompress` writes (`weightdna.atomic.output_form`;
# "/" is a folder).
COMPRESS_FORMS = {".dna": "a .dna file"}
DECOMPRESS_FORMS = {
    ".safetensors": "safetensors",
    ".pt": "a torch state dict, for torch.load(weights_only=True)",
    ".pth": "the same",
    "/": "a folder: the weights, sharded as the source was, and the model's stored files "
         "(config, tokenizer): a Hugging Face model folder",
    ".onnx": "ONNX, for a model compressed from ONNX",
}
