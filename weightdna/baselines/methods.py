"""The rate–distortion sweep's method names, in a module that imports nothing:
`weightdna bench --help` lists them without loading the codecs (`weightdna.baselines.sweep`)."""

DNA_CODEC = "weightdna"
DNA_STEP = "weightdna-step"
# The quantisers users pick today (`weightdna.baselines.quantizers`), by family: each runs
# every setting it has (gguf: Q8_0…Q4_0; bnb: NF4/FP4 ± nested; hqq: 8/4/3/2 bits; quanto:
# int8/4/2), and the Python package it needs.
QUANTIZER_FAMILIES = {"gguf": "gguf", "bnb": "bitsandbytes", "hqq": "hqq",
                      "quanto": "optimum.quanto"}
METHODS = (DNA_CODEC, DNA_STEP, "nncodec", *QUANTIZER_FAMILIES, "rtn", "svd", "pruning", "zstd",
           "zipnn")
