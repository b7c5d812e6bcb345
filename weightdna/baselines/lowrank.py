"""Low-rank approximation: a truncated SVD, its two factors stored as fp16 and zstd."""

from __future__ import annotations

import math

import numpy as np
import torch

from weightdna.baselines.result import BaselineResult, run_codec
from weightdna.codec.quantize import as_rows
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import InvalidInputError

FACTOR_BITS = 16


def rank_for_rate(shape: tuple[int, ...], bits_per_weight: float) -> int:
    """The rank whose fp16 factors cost about ``bits_per_weight`` (before zstd), at least 1."""
    m, n = as_rows(np.empty(shape, dtype=np.uint8)).shape
    rank = round(bits_per_weight * m * n / (FACTOR_BITS * (m + n)))
    return int(min(max(rank, 1), min(m, n)))


def encode_svd(tensor: torch.Tensor, rank: int) -> bytes:
    """One zstd frame of A (rows × rank) then B (rank × columns), fp16, with W ≈ A·B."""
    rows = as_rows(tensor.to(torch.float64).numpy())
    if not 1 <= rank <= min(rows.shape):
        raise InvalidInputError(f"rank must lie in 1..{min(rows.shape)}, not {rank}")
    u, s, vt = np.linalg.svd(rows, full_matrices=False)
    # √s on each side keeps both factors' magnitudes within fp16's range.
    root = np.sqrt(s[:rank])
    a = (u[:, :rank] * root).astype("<f2")
    b = (vt[:rank] * root[:, None]).astype("<f2")
    return compress_bytes(a.tobytes() + b.tobytes())


def decode_svd(data: bytes, rank: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Restore a tensor of ``shape`` and ``dtype`` from `encode_svd`'s bytes."""
    m, n = as_rows(np.empty(shape, dtype=np.uint8)).shape
    raw = decompress_bytes(data, 2 * rank * (m + n), "svd")
    factors = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    a = factors[: m * rank].reshape(m, rank)
    b = factors[m * rank :].reshape(rank, n)
    return torch.from_numpy(a @ b).reshape(shape).to(dtype)


def run_svd(
    tensor: torch.Tensor | np.ndarray, rank: int, setting: str | None = None
) -> BaselineResult:
    """Rank-``rank`` SVD (the first axis against the rest), measured."""
    return run_codec(
        "svd",
        setting or f"rank {rank}",
        tensor,
        lambda x: encode_svd(x, rank),
        lambda data, shape, dtype: decode_svd(data, rank, shape, dtype),
    )


def full_rank(shape: tuple[int, ...]) -> int:
    """min(rows, columns) of the tensor seen as a matrix."""
    return min(as_rows(np.empty(shape, dtype=np.uint8)).shape) if math.prod(shape) else 0
