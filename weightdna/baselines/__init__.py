"""The peers the .dna codec is judged against, on the same weights and by the same figures.

Each peer encodes a tensor to real bytes, decodes them, and reports a `BaselineResult`:
bits per weight from those bytes, SNR, PSNR (max-abs normalisation), maximum error and
encode/decode seconds. ZipNN and NNCodec are optional; without them they are skipped.
"""

from weightdna._lazy import lazy_exports

# Imported on first use: a light submodule (a command's choices) is read without
# the rest, which imports torch.
_EXPORTS = {
    "BaselineResult": "result",
    "RTN_BITS": "rtn",
    "full_rank": "lowrank",
    "keep_fraction_for_rate": "pruning",
    "measure": "result",
    "nncodec_available": "nncodec",
    "pool": "result",
    "qp_for_step": "nncodec",
    "rank_for_rate": "lowrank",
    "run_codec": "result",
    "run_nncodec": "nncodec",
    "run_pruning": "pruning",
    "run_rtn": "rtn",
    "run_svd": "lowrank",
    "run_zipnn": "lossless",
    "run_zstd": "lossless",
    "zipnn_available": "lossless",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
