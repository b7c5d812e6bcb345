"""How a tensor's role decides its coding: only weights are quantised at the target's rate.

A step that suits a model's weight matrices is far too coarse for the tensors that scale or
shift them: a batch-norm variance of 1e-4 rounds to 0 beside weights of order 1, a
LayerNorm gain of 1.0 ± 0.01 loses its deviations, an upsampling scale ``[1, 1, 2, 2]``
becomes ``[0, 0, 0, 0]``. These tensors hold a tiny share of a real model's values, so
they are stored with every element within a relative error of 2⁻¹¹ (``MANTISSA_BITS``
kept of the float's mantissa), or exactly:

* ``exact``: integer tensors, buffers and constants, empty tensors, and float tensors
  whose values are all whole numbers (shapes, indices, scales such as 2.0) of a
  ``relative`` role;
* ``relative``: normalisation statistics, every element within a relative error of 2⁻¹¹
  of itself (``MANTISSA_BITS`` kept of the float's mantissa): a running variance of 1e-4
  beside one of 1e8 keeps its value;
* ``bounded``: biases, normalisation gains and shifts, and tensors of any other role that
  is not a matrix, kernel or embedding with fewer than SMALL_TENSOR values or fewer than
  2 dimensions, quantised with every element within 2⁻¹⁰ of the tensor's max |w|
  (``PEAK_FRACTION``; 7–10 bits per value where the mantissa costs 20–30, which matters in
  small models), unless a few values are far larger than the rest (max |w| above
  ``SPREAD_LIMIT`` × the median): then that bound would round the rest to 0 (a conv
  bias whose channel was scaled 10⁴× with its norm), and they are coded as ``relative``;
* ``rate``: the rest, coded by the rate control (`weightdna.codec.ratecontrol`).

NNCodec makes the same split (everything but weight matrices and kernels at a separate,
very fine step), which is why it does not fall into these traps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from weightdna.codec.dtypes import finite_mask
from weightdna.codec.tensor import encode_tensor
from weightdna.weights import TensorInfo

RATE_ROLES = frozenset({"matrix", "conv", "embedding"})
BOUNDED_ROLES = frozenset({"bias", "norm"})
PEAK_FRACTION = 2.0**-10
SPREAD_LIMIT = 32.0
SMALL_TENSOR = 4096
# Mantissa bits kept: every element within 2^-(MANTISSA_BITS+1) of its value, relative
# (4.9e-4 for 10 bits, below the 1e-3 promised); float16 and bfloat16 hold 10 and 7, so
# they are stored exactly.
MANTISSA_BITS = 10


def coding(info: TensorInfo) -> str:
    """``"exact"``, ``"relative"``, ``"bounded"`` or ``"rate"``: how a tensor of this role
    is stored (module docstring)."""
    floating = getattr(torch, info.dtype).is_floating_point
    if not floating or info.numel == 0 or info.role in ("buffer", "constant"):
        return "exact"
    if info.role == "statistic":
        return "relative"
    if info.role in BOUNDED_ROLES or info.role not in RATE_ROLES and (
            info.numel < SMALL_TENSOR or info.ndim <= 1):
        return "bounded"
    return "rate"


_WORDS = {np.dtype(np.float32): (np.uint32, 23), np.dtype(np.float64): (np.uint64, 52)}


def round_mantissa(values: np.ndarray, bits: int = MANTISSA_BITS) -> np.ndarray:
    """float32 or float64 ``values`` rounded to ``bits`` mantissa bits (nearest, ties to
    even), a new array; NaN, ±Inf and values whose rounding would overflow are kept."""
    words_type, mantissa = _WORDS[values.dtype]
    words = np.ascontiguousarray(values).view(words_type).copy()
    drop = words_type(mantissa - bits)
    one = words_type(1)
    half = (one << (drop - one)) - one
    odd = (words >> drop) & one
    rounded = (words + half + odd) & ~((one << drop) - one)
    keep = np.isfinite(values) & np.isfinite(rounded.view(values.dtype))
    words[keep] = rounded[keep]
    return words.view(values.dtype)


def encode_relative(tensor: torch.Tensor, name: str) -> tuple[dict, dict[str, bytes]]:
    """Store ``tensor`` exactly if its values are whole numbers or its dtype holds no more
    than MANTISSA_BITS of mantissa, else rounded to MANTISSA_BITS (every element within
    a relative error of 2⁻¹¹) and stored exactly as rounded; the entry's stats are the
    error against ``tensor``."""
    if tensor.dtype not in (torch.float32, torch.float64) or _whole_numbers(tensor):
        return encode_tensor(tensor, name=name, lossless=True)
    values = tensor.numpy()
    rounded = round_mantissa(values)
    entry, sections = encode_tensor(torch.from_numpy(rounded), name=name, lossless=True)
    finite = np.isfinite(values)
    original = values[finite].astype(np.float64)
    error = rounded[finite].astype(np.float64) - original
    noise, signal = float(np.dot(error, error)), float(np.dot(original, original))
    entry["stats"] = {
        "max_abs_error": float(np.abs(error).max(initial=0.0)),
        "snr_db": 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None,
        "mse": noise / max(error.size, 1),
    }
    return entry, sections


def encode_bounded(tensor: torch.Tensor, name: str) -> tuple[dict, dict[str, bytes]]:
    """Store ``tensor`` with every element within PEAK_FRACTION of its max |w| (exactly if
    its values are whole numbers, or if that takes fewer bytes), or as `encode_relative`
    if its max |w| exceeds SPREAD_LIMIT × its median non-zero |w|."""
    magnitudes = tensor[torch.from_numpy(finite_mask(tensor))].abs()
    peak = float(magnitudes.max()) if magnitudes.numel() else 0.0
    if not peak > 0 or _whole_numbers(tensor):
        return encode_tensor(tensor, name=name, lossless=True)
    if peak > SPREAD_LIMIT * float(magnitudes[magnitudes > 0].median()):
        return encode_relative(tensor, name)
    exact = encode_tensor(tensor, name=name, lossless=True)
    coded = encode_tensor(tensor, name=name, max_abs_error=PEAK_FRACTION * peak)
    if sum(map(len, coded[1].values())) < sum(map(len, exact[1].values())):
        return coded
    return exact


def _whole_numbers(tensor: torch.Tensor) -> bool:
    values = tensor[torch.from_numpy(finite_mask(tensor))]
    return bool(values.numel()) and bool(torch.equal(values, torch.round(values)))
