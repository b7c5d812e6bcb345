"""Round-to-nearest per output channel: symmetric int8/int4/int2, the integers packed and
zstd-compressed, one fp16 scale per row stored beside them."""

from __future__ import annotations

import numpy as np
import torch

from weightdna.baselines.result import BaselineResult, run_codec
from weightdna.codec.quantize import as_rows
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import InvalidInputError

RTN_BITS = (8, 4, 2)
# The smallest positive normal fp16: a row's scale never rounds to zero.
_MIN_SCALE = float(np.finfo(np.float16).tiny)


def _levels(bits: int) -> int:
    if bits not in RTN_BITS:
        raise InvalidInputError(f"round-to-nearest takes bits in {RTN_BITS}, not {bits!r}")
    return (1 << (bits - 1)) - 1  # symmetric: int2 has the levels −1, 0, 1


def pack_fields(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers below 2^bits, ``8 // bits`` to a byte, first in the low bits."""
    per_byte = 8 // bits
    flat = values.astype(np.uint8).reshape(-1)
    padded = np.zeros(-(-flat.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: flat.size] = flat
    fields = padded.reshape(-1, per_byte)
    packed = np.zeros(fields.shape[0], dtype=np.uint8)
    for k in range(per_byte):
        packed |= fields[:, k] << np.uint8(k * bits)
    return packed.tobytes()


def unpack_fields(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_fields`: ``count`` integers."""
    per_byte = 8 // bits
    packed = np.frombuffer(data, dtype=np.uint8)
    mask = np.uint8((1 << bits) - 1)
    fields = np.stack([(packed >> np.uint8(k * bits)) & mask for k in range(per_byte)], axis=1)
    return fields.reshape(-1)[:count]


def encode_rtn(tensor: torch.Tensor, bits: int) -> bytes:
    """fp16 scales (one per row), then one zstd frame of the packed integers."""
    qmax = _levels(bits)
    rows = as_rows(tensor.to(torch.float64).numpy())
    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(rows.shape[0])
    scales = np.maximum(peak / qmax, _MIN_SCALE).astype(np.float16)
    # Quantise with the fp16 scales the decoder reads.
    q = np.rint(rows / scales.astype(np.float64)[:, None])
    q = np.clip(q, -qmax, qmax) + qmax
    return scales.astype("<f2").tobytes() + compress_bytes(pack_fields(q, bits))


def decode_rtn(data: bytes, bits: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Restore a tensor of ``shape`` and ``dtype`` from `encode_rtn`'s bytes."""
    qmax = _levels(bits)
    rows = shape[0] if len(shape) else 1
    numel = int(np.prod(shape))
    scales = np.frombuffer(data[: 2 * rows], dtype="<f2").astype(np.float64)
    packed_size = -(-numel // (8 // bits))
    q = unpack_fields(decompress_bytes(data[2 * rows :], packed_size, "rtn"), bits, numel)
    values = (q.astype(np.float64) - qmax).reshape(rows, -1) * scales[:, None]
    return torch.from_numpy(values.reshape(shape)).to(dtype)


def run_rtn(tensor: torch.Tensor | np.ndarray, bits: int) -> BaselineResult:
    """Round-to-nearest int``bits`` per output channel, measured."""
    return run_codec(
        "rtn",
        f"int{bits}",
        tensor,
        lambda x: encode_rtn(x, bits),
        lambda data, shape, dtype: decode_rtn(data, bits, shape, dtype),
    )
