"""Magnitude pruning: keep the largest |w|, store a bitmask and their fp16 values, zstd."""

from __future__ import annotations

import math

import numpy as np
import torch

from weightdna.baselines.result import BaselineResult, run_codec
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import InvalidInputError


def keep_fraction_for_rate(bits_per_weight: float) -> float:
    """The fraction f kept so that 16·f + H(f) (values plus an ideal mask) ≈ the rate."""
    if bits_per_weight >= 17:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(50):
        f = (lo + hi) / 2
        entropy = -f * math.log2(f) - (1 - f) * math.log2(1 - f) if 0 < f < 1 else 0.0
        lo, hi = (f, hi) if 16 * f + entropy < bits_per_weight else (lo, f)
    return lo


def encode_pruned(tensor: torch.Tensor, keep: float) -> bytes:
    """The kept count (uint64), then one zstd frame: the packed mask and the kept fp16 values."""
    if not 0.0 < keep <= 1.0:
        raise InvalidInputError(f"the kept fraction must lie in (0, 1], not {keep}")
    flat = tensor.to(torch.float32).numpy().reshape(-1)
    count = min(flat.size, max(1, round(keep * flat.size)))
    mask = np.zeros(flat.size, dtype=bool)
    mask[np.argpartition(np.abs(flat), flat.size - count)[flat.size - count :]] = True
    payload = np.packbits(mask).tobytes() + flat[mask].astype("<f2").tobytes()
    return np.uint64(count).astype("<u8").tobytes() + compress_bytes(payload)


def decode_pruned(data: bytes, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Restore a tensor of ``shape`` and ``dtype`` from `encode_pruned`'s bytes."""
    numel = math.prod(shape)
    mask_bytes = -(-numel // 8)
    count = int(np.frombuffer(data[:8], dtype="<u8")[0])
    raw = decompress_bytes(data[8:], mask_bytes + 2 * count, "pruning")
    mask = np.unpackbits(np.frombuffer(raw[:mask_bytes], dtype=np.uint8))[:numel].astype(bool)
    values = np.zeros(numel, dtype=np.float32)
    values[mask] = np.frombuffer(raw[mask_bytes:], dtype="<f2").astype(np.float32)
    return torch.from_numpy(values.reshape(shape)).to(dtype)


def run_pruning(
    tensor: torch.Tensor | np.ndarray, keep: float, setting: str | None = None
) -> BaselineResult:
    """Keep the fraction ``keep`` of the largest-magnitude weights, measured."""
    return run_codec(
        "pruning",
        setting or f"keep {keep:.3f}",
        tensor,
        lambda x: encode_pruned(x, keep),
        decode_pruned,
    )
