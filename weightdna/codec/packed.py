"""Bit-exact storage of a small tensor by its significant bits (format version 13,
``"compression": "packed"``): no zstd frame, no tables.

A small model holds many tensors of a few values (BatchNorm statistics of 8–200 channels,
scalar constants, shape constants): stored as a zstd frame each pays about 9 bytes of frame
beside its values, and a float32 rounded to 9 mantissa bits (`weightdna.codec.roles`)
keeps its 14 zero bits. Here each value is ``sign`` (one bit, where the tensor has both
signs) then ``bits`` bits of ``u``, written back to back, most significant bit first, the
last byte padded with zero bits:

* a floating-point tensor: its words as unsigned integers of the dtype's width W; the
  value's magnitude word (its word without the sign bit) is ``(base + u) << shift``, below
  2^(W−1); the sign bit is the stored one (or 0 for every value when ``sign`` is false);
* an integer tensor (int8 to int64, not bool): the value is ``base + u``, within the
  dtype's range; ``shift`` is 0 and ``sign`` false.

Only tensors of at most MAX_ELEMENTS values are packed, so decoding works on Python
integers. The writer packs a ``raw`` tensor where this is smaller than its other coding, in
a file with the compact index (`weightdna.codec.container`), and `weightdna.codec.lossless`
reads it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from weightdna.codec.dtypes import FLOAT_NAMES, itemsize, tensor_bytes
from weightdna.codec.entries import COMPACT_INDEX_VERSION
from weightdna.errors import CorruptFileError

PACKED_VERSION = COMPACT_INDEX_VERSION
MAX_ELEMENTS = 1024
KEYS = {"compression", "base", "bits", "shift", "sign"}
# What the params cost in the deflated header beyond zstd's (measured on rapidocr's angle
# classifier: about 6 bytes a tensor): packing is kept only when it saves more.
PARAMS_BYTES = 6
_INTS = {"int8", "int16", "int32", "int64", "uint8"}


def _words(tensor: torch.Tensor, dtype: str) -> list[int]:
    """The tensor's values as Python ints: a float's word (unsigned), an integer's value."""
    raw = np.frombuffer(tensor_bytes(tensor), dtype=np.dtype(f"<u{itemsize(dtype)}"))
    if dtype in FLOAT_NAMES:
        return [int(w) for w in raw]
    return [int(v) for v in tensor.reshape(-1).tolist()]


def encode_packed(tensor: torch.Tensor, dtype: str) -> tuple[dict, dict[str, bytes]] | None:
    """Params and the ``data`` section of ``tensor`` packed, or None where it cannot be
    (a bool or empty tensor, more than MAX_ELEMENTS values)."""
    numel = tensor.numel()
    if not 0 < numel <= MAX_ELEMENTS or dtype not in FLOAT_NAMES and dtype not in _INTS:
        return None
    words = _words(tensor, dtype)
    if dtype in FLOAT_NAMES:
        top = 8 * itemsize(dtype) - 1
        signs = [w >> top for w in words]
        magnitudes = [w & ((1 << top) - 1) for w in words]
        shift = min(((m & -m).bit_length() - 1 if m else top) for m in magnitudes)
        values = [m >> shift for m in magnitudes]
        sign = 0 < sum(signs) < numel
        if not sign and signs[0]:  # every value negative: the sign is in params
            return None
    else:
        signs, values, shift, sign = [0] * numel, words, 0, False
    base = min(values)
    bits = (max(values) - base).bit_length()
    acc, width = 0, bits + sign
    for s, v in zip(signs, values, strict=True):
        acc = (acc << width) | (s << bits if sign else 0) | (v - base)
    total = width * numel
    pad = -total % 8
    data = (acc << pad).to_bytes((total + pad) // 8, "big")
    params = {"compression": "packed", "base": base, "bits": bits, "shift": shift,
              "sign": sign}
    return params, {"data": data}


def decode_packed(params: dict, sections: dict[str, bytes], dtype: str,
                  shape: tuple[int, ...], where: str) -> bytes:
    """The bytes (little-endian) of a packed tensor, every field checked (module
    docstring)."""
    numel = math.prod(shape)
    if set(params) != KEYS:
        raise CorruptFileError(f"{where}: packed params must have the keys {sorted(KEYS)}.")
    base, bits, shift, sign = (params[k] for k in ("base", "bits", "shift", "sign"))
    floating = dtype in FLOAT_NAMES
    if not floating and dtype not in _INTS:
        raise CorruptFileError(f"{where}: a {dtype} tensor cannot be packed.")
    width_bits = 8 * itemsize(dtype)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (base, bits, shift))
    if (not ints or not isinstance(sign, bool) or not 0 <= bits <= width_bits
            or not 0 <= shift < width_bits or not floating and (shift or sign)
            or floating and base < 0 or abs(base) >= 1 << width_bits):
        raise CorruptFileError(
            f"{where}: packed params must be integers: 0 ≤ bits ≤ {width_bits}, 0 ≤ shift < "
            f"{width_bits} (0 for integers), base within ±2^{width_bits} (≥ 0 for floats), "
            "and sign a bool (false for integers).")
    if not 0 < numel <= MAX_ELEMENTS:
        raise CorruptFileError(f"{where}: a packed tensor holds 1 to {MAX_ELEMENTS} values.")
    if set(sections) != {"data"}:
        raise CorruptFileError(f"{where}: a raw tensor has exactly one section, 'data'.")
    data = sections["data"]
    width = bits + sign
    total = width * numel
    if len(data) != (total + 7) // 8:
        raise CorruptFileError(f"{where}: packed data must be {(total + 7) // 8} bytes "
                               f"({numel} values of {width} bits), not {len(data)}.")
    acc = int.from_bytes(data, "big")
    pad = 8 * len(data) - total
    if acc & ((1 << pad) - 1):
        raise CorruptFileError(f"{where}: packed data's padding bits are not zero.")
    acc >>= pad
    mask = (1 << bits) - 1
    fields = [(acc >> (width * (numel - 1 - i))) for i in range(numel)]
    if floating:
        top = width_bits - 1
        words = []
        for f in fields:
            magnitude = ((f & mask) + base) << shift
            if magnitude >> top:
                raise CorruptFileError(f"{where}: a packed value does not fit a {dtype}.")
            words.append(magnitude | ((f >> bits) & 1 if sign else 0) << top)
        return np.array(words, dtype=np.dtype(f"<u{itemsize(dtype)}")).tobytes()
    values = [base + (f & mask) for f in fields]
    info = np.iinfo(np.dtype(dtype))
    if min(values) < info.min or max(values) > info.max:
        raise CorruptFileError(f"{where}: a packed value is outside the range of {dtype}.")
    return np.array(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
