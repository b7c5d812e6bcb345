"""How a tensor's role decides its coding: only weights are quantised at the target's rate.

A step that suits a model's weight matrices is far too coarse for the tensors that scale or
shift them: a batch-norm variance of 1e-4 rounds to 0 beside weights of order 1, a
LayerNorm gain of 1.0 ± 0.01 loses its deviations, an upsampling scale ``[1, 1, 2, 2]``
becomes ``[0, 0, 0, 0]``. These tensors hold a tiny share of a real model's values, so
they are stored with every element within a relative error of 2⁻¹⁰ (``MANTISSA_BITS``
kept of the float's mantissa: under the 1e-3 promised), or exactly:

* ``exact``: integer tensors, buffers and constants, empty tensors, and float tensors
  whose values are all whole numbers (shapes, indices, scales such as 2.0) of a
  ``relative`` role;
* ``relative``: normalisation statistics, every element within a relative error of 2⁻¹⁰
  (9.8e-4) of itself (``MANTISSA_BITS`` kept of the float's mantissa; a subnormal float,
  whose mantissa holds fewer significant bits, is kept exactly): a running variance of
  1e-4 beside one of 1e8 keeps its value;
* ``bounded``: biases, normalisation gains and shifts, and tensors of any other role that
  is not a matrix, kernel or embedding with fewer than SMALL_TENSOR values or fewer than
  2 dimensions, quantised with every element within 2⁻¹⁰ of the tensor's max |w|
  (``PEAK_FRACTION``; 7–10 bits per value where the mantissa costs 20–30, which matters in
  small models), unless a few values are far larger than the rest (max |w| above
  ``SPREAD_LIMIT`` × the median): then that bound would round the rest to 0 (a conv
  bias whose channel was scaled 10⁴× with its norm), and they are coded as ``relative``
  with ``SPREAD_MANTISSA_BITS`` (every element within 2⁻¹¹ of itself, as before
  2026-12-05: MiniLM has five such LayerNorm biases, and its file stays byte for byte
  as it was);
* ``rate``: the rest, coded by the rate control (`weightdna.codec.ratecontrol`).

NNCodec makes the same split (everything but weight matrices and kernels at a separate,
very fine step), which is why it does not fall into these traps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from weightdna.codec.dtypes import finite_mask
from weightdna.codec.fields import cut_digits
from weightdna.codec.tensor import encode_tensor
from weightdna.weights import TensorInfo

RATE_ROLES = frozenset({"matrix", "conv", "embedding"})
BOUNDED_ROLES = frozenset({"bias", "norm"})
PEAK_FRACTION = 2.0**-10
SPREAD_LIMIT = 32.0
SMALL_TENSOR = 4096
# A model of many small tensors (`short_steps`): its bounded tensors' bounds, and so their
# steps, to this many significant digits (a 17-digit step was 6 bytes of the deflated
# header a tensor; BENCHMARKS.md, "Small models' overhead").
SHORT_STEP_MIN_TENSORS = 32
SHORT_STEP_MEAN_VALUES = 16384
SHORT_STEP_DIGITS = 3
# Mantissa bits kept: every element within 2^-(MANTISSA_BITS+1) of its value, relative
# (9.8e-4 for 9 bits, below the 1e-3 promised; 10 bits, 4.9e-4, until 2026-12-05: the
# bit it saves a value went to a small model's kernels, BENCHMARKS.md "Small models'
# overhead"); float16 and bfloat16 tensors are stored exactly (`encode_relative`).
MANTISSA_BITS = 9
SPREAD_MANTISSA_BITS = 10


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
    even), a new array, each within 2^-(bits+1) of itself, relative; NaN, ±Inf,
    subnormals (their mantissa's leading zeros would make the error relative to the
    smallest normal, not to the value) and values whose rounding would overflow are
    kept."""
    words_type, mantissa = _WORDS[values.dtype]
    words = np.ascontiguousarray(values).view(words_type).copy()
    drop = words_type(mantissa - bits)
    one = words_type(1)
    half = (one << (drop - one)) - one
    odd = (words >> drop) & one
    rounded = (words + half + odd) & ~((one << drop) - one)
    normal = np.abs(values) >= np.finfo(values.dtype).tiny
    keep = normal & np.isfinite(values) & np.isfinite(rounded.view(values.dtype))
    words[keep] = rounded[keep]
    return words.view(values.dtype)


def encode_relative(tensor: torch.Tensor, name: str, bits: int = MANTISSA_BITS
                    ) -> tuple[dict, dict[str, bytes]]:
    """Store ``tensor`` exactly if its values are whole numbers or it is not float32 or
    float64 (float16 and bfloat16 hold 10 and 7 mantissa bits), else rounded to ``bits``
    mantissa bits (every element within a relative error of 2^-(bits+1): 2⁻¹⁰ for
    MANTISSA_BITS) and stored exactly as rounded; the entry's stats are the error against
    ``tensor``."""
    if tensor.dtype not in (torch.float32, torch.float64) or _whole_numbers(tensor):
        return encode_tensor(tensor, name=name, lossless=True)
    values = tensor.numpy()
    rounded = round_mantissa(values, bits)
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


def short_steps(infos: Sequence[TensorInfo]) -> bool:
    """Whether a model's bounded tensors take short steps (`encode_bounded`): a model of
    many small tensors (at least SHORT_STEP_MIN_TENSORS, SHORT_STEP_MEAN_VALUES values
    each on average), whose header is a share of its file (rapidocr's angle classifier,
    308 tensors of 434 values on average; not MiniLM, 104 of 218K, nor the digits models'
    6 and 10 tensors, whose files stay byte for byte as they were)."""
    return (len(infos) >= SHORT_STEP_MIN_TENSORS
            and sum(info.numel for info in infos) <= SHORT_STEP_MEAN_VALUES * len(infos))


def encode_bounded(tensor: torch.Tensor, name: str, short_step: bool = False
                   ) -> tuple[dict, dict[str, bytes]]:
    """Store ``tensor`` with every element within PEAK_FRACTION of its max |w| (exactly if
    its values are whole numbers, or if that takes fewer bytes), or as `encode_relative`
    if its max |w| exceeds SPREAD_LIMIT × its median non-zero |w|. With ``short_step``
    the bound is cut towards zero to SHORT_STEP_DIGITS significant digits (at most 1%
    tighter), and so the step it asks for (twice the bound: 0.01042, not
    0.010423092171549797) takes a few bytes of the header, not 19."""
    magnitudes = tensor[torch.from_numpy(finite_mask(tensor))].abs()
    peak = float(magnitudes.max()) if magnitudes.numel() else 0.0
    if not peak > 0 or _whole_numbers(tensor):
        return encode_tensor(tensor, name=name, lossless=True)
    if peak > SPREAD_LIMIT * float(magnitudes[magnitudes > 0].median()):
        return encode_relative(tensor, name, SPREAD_MANTISSA_BITS)
    exact = encode_tensor(tensor, name=name, lossless=True)
    bound = PEAK_FRACTION * peak
    if short_step:
        bound = cut_digits(bound, SHORT_STEP_DIGITS)
    coded = encode_tensor(tensor, name=name, max_abs_error=bound)
    if sum(map(len, coded[1].values())) < sum(map(len, exact[1].values())):
        return coded
    return exact


def _whole_numbers(tensor: torch.Tensor) -> bool:
    values = tensor[torch.from_numpy(finite_mask(tensor))]
    return bool(values.numel()) and bool(torch.equal(values, torch.round(values)))
