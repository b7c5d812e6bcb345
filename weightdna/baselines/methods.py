"""The rate–distortion sweep's method names, in a module that imports nothing:
`weightdna bench --help` lists them without loading the codecs (`weightdna.baselines.sweep`)."""

DNA_CODEC = "weightdna"
DNA_STEP = "weightdna-step"
METHODS = (DNA_CODEC, DNA_STEP, "nncodec", "rtn", "svd", "pruning", "zstd", "zipnn")
