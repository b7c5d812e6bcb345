"""The peers the .dna codec is judged against, on the same weights and by the same figures.

Each peer encodes a tensor to real bytes, decodes them, and reports a `BaselineResult`:
bits per weight from those bytes, SNR, PSNR (max-abs normalisation), maximum error and
encode/decode seconds. ZipNN and NNCodec are optional; without them they are skipped.
"""

from weightdna.baselines.lossless import run_zipnn, run_zstd, zipnn_available
from weightdna.baselines.lowrank import full_rank, rank_for_rate, run_svd
from weightdna.baselines.nncodec import nncodec_available, qp_for_step, run_nncodec
from weightdna.baselines.pruning import keep_fraction_for_rate, run_pruning
from weightdna.baselines.result import BaselineResult, measure, pool, run_codec
from weightdna.baselines.rtn import RTN_BITS, run_rtn

__all__ = [
    "RTN_BITS",
    "BaselineResult",
    "full_rank",
    "keep_fraction_for_rate",
    "measure",
    "nncodec_available",
    "pool",
    "qp_for_step",
    "rank_for_rate",
    "run_codec",
    "run_nncodec",
    "run_pruning",
    "run_rtn",
    "run_svd",
    "run_zipnn",
    "run_zstd",
    "zipnn_available",
]
