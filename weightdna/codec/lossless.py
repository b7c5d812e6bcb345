"""Bit-exact storage of a tensor: a float one by its bit fields (format version 7,
`weightdna.codec.floatfields`) or, when asked for speed, in lanes (format version 10,
`weightdna.codec.lanes`), or its raw bytes, optionally split into byte planes, zstd; read
also a small one packed by its significant bits (format version 13, `weightdna.codec.packed`:
the container packs them in a file with the compact index)."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from weightdna.codec.dtypes import DTYPES, itemsize, tensor_from_bytes, tensor_le_array
from weightdna.codec.entries import LANES_VERSION
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError


def to_planes(data: bytes, width: int) -> bytes:
    """Regroup bytes so that byte k of every element comes together (plane k)."""
    if width == 1:
        return data
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width).T.tobytes()


def from_planes(data: bytes, width: int) -> bytes:
    """Inverse of `to_planes`."""
    if width == 1:
        return data
    return np.frombuffer(data, dtype=np.uint8).reshape(width, -1).T.tobytes()


# Byte-plane zstd at this level is the quick check of whether the fields coding (format
# version 7) is the smaller form of a float tensor; when it is not, the planes are coded at
# ZSTD_LEVEL as before and the smaller kept. Level 1, not 3: on weights' planes it is about
# 3 times faster and its output no larger (MiniLM fp32's word embeddings: 38.7 MB at level
# 1, 39.3 MB at 3), and the forms kept are the same on MiniLM and the digits models.
CHECK_LEVEL = 1
CHECK_SAMPLE, CHECK_PIECE, CHECK_MARGIN = 1 << 20, 1 << 16, 0.05
FAST_CHECK_SAMPLE, FAST_CHECK_PIECE = 1 << 16, 1 << 12
# Fewer elements than this are not worth the fields coding's tables.
FIELDS_MIN_ELEMENTS = 64
FIELDS_VERSION = 7


def _zstd_lossless(raw: bytes, width: int) -> tuple[dict, dict[str, bytes]]:
    plain = compress_bytes(raw)
    planes = compress_bytes(to_planes(raw, width)) if width > 1 else None
    # Exponent bytes of floats compress far better when grouped; random-looking integer
    # bytes may not, so keep whichever is smaller.
    if planes is not None and len(planes) < len(plain):
        return {"compression": "zstd", "byte_planes": True}, {"data": planes}
    return {"compression": "zstd", "byte_planes": False}, {"data": plain}


def encode_lossless(tensor: torch.Tensor, fast: bool = False) -> tuple[dict, dict[str, bytes]]:
    """Params and sections of a ``raw`` representation of ``tensor`` (exact, any dtype):
    a float32, bfloat16 or float16 tensor by its bit fields (`weightdna.codec.floatfields`)
    or, with ``fast``, in lanes (`weightdna.codec.lanes`), unless byte-plane zstd is
    smaller; any other by zstd, of its bytes or byte planes."""
    from weightdna.codec.dtypes import NAMES
    from weightdna.codec.floatfields import LAYOUTS, encode_fields

    raw = tensor_le_array(tensor)  # no copy (bytes-like: zstd and slices take it)
    width = tensor.element_size()
    dtype = NAMES[tensor.dtype]
    if dtype not in LAYOUTS or tensor.numel() < FIELDS_MIN_ELEMENTS:
        return _zstd_lossless(raw, width)
    if fast:
        from weightdna.codec.lanes import encode_lanes

        params, sections = encode_lanes(raw, dtype)
    else:
        params, sections = encode_fields(raw, dtype)
    size = sum(map(len, sections.values()))
    # zstd first on a sample (CHECK_SAMPLE bytes spread over the tensor, in whole
    # elements): only when it comes within CHECK_MARGIN of the fields coding there is the
    # whole tensor compressed, at CHECK_LEVEL, then (if smaller) at ZSTD_LEVEL. The fast
    # path samples less (FAST_CHECK_SAMPLE) and compresses the whole only when the sample
    # is smaller than the lanes coding's share.
    sample_bytes, piece, margin = ((FAST_CHECK_SAMPLE, FAST_CHECK_PIECE, 0.0) if fast
                                   else (CHECK_SAMPLE, CHECK_PIECE, CHECK_MARGIN))
    if len(raw) > 2 * sample_bytes:
        pieces = sample_bytes // piece
        starts = np.linspace(0, len(raw) // width - piece // width, pieces).astype(int)
        sample = b"".join(raw[a * width : a * width + piece] for a in starts)
        estimate = len(compress_bytes(to_planes(sample, width), CHECK_LEVEL))
        if estimate * len(raw) / len(sample) > size * (1 + margin):
            return params, sections
    if len(compress_bytes(to_planes(raw, width), CHECK_LEVEL)) < size:
        zparams, zsections = _zstd_lossless(raw, width)
        if len(zsections["data"]) < size:
            return zparams, zsections
    return params, sections


def check_lossless_params(params: object, where: str) -> bool:
    """Validate zstd ``raw`` params; returns whether byte planes are used."""
    if (
        not isinstance(params, dict)
        or set(params) != {"compression", "byte_planes"}
        or params["compression"] != "zstd"
        or not isinstance(params["byte_planes"], bool)
    ):
        raise CorruptFileError(
            f"{where}: raw params must be {{'compression': 'zstd', 'byte_planes': bool}}"
            " (or, from format version 7, the fields coding's; from 10, the lanes coding's)."
        )
    return params["byte_planes"]


def decode_lossless(
    params: dict, sections: dict[str, bytes], dtype: str, shape: tuple[int, ...], where: str,
    version: int = FIELDS_VERSION,
) -> torch.Tensor:
    """The exact tensor a ``raw`` representation holds (``version``: the file's format
    version; the fields coding exists from 7, the lanes coding from 10)."""
    coding = params.get("compression") if isinstance(params, dict) else None
    # (a hostile header's value may be any JSON: compared, never hashed)
    if coding == "packed":  # version 13, written by the container (`packed`)
        from weightdna.codec.packed import PACKED_VERSION, decode_packed

        if version < PACKED_VERSION:
            raise CorruptFileError(f"{where}: the packed coding needs format version "
                                   f"{PACKED_VERSION}.")
        return tensor_from_bytes(decode_packed(params, sections, dtype, shape, where), dtype,
                                 shape)
    since = (FIELDS_VERSION if coding == "fields" else LANES_VERSION if coding == "lanes"
             else None)
    if since is not None:
        if version < since:
            raise CorruptFileError(f"{where}: the {coding} coding needs format version "
                                   f"{since}.")
        if coding == "fields":
            from weightdna.codec.floatfields import decode_fields as decode
        else:
            from weightdna.codec.lanes import decode_lanes as decode

        raw = decode(params, sections, dtype, math.prod(shape), where)
        if sys.byteorder == "little" and raw.flags.writeable and raw.flags.c_contiguous:
            # the decoder's own fresh array, already in native order: no copy (one cost a
            # fifth of the decode time of MiniLM fp32, BENCHMARKS.md)
            return torch.from_numpy(raw).view(DTYPES[dtype]).reshape(shape)
        return tensor_from_bytes(raw, dtype, shape)
    byte_planes = check_lossless_params(params, where)
    if set(sections) != {"data"}:
        raise CorruptFileError(f"{where}: a raw tensor has exactly one section, 'data'.")
    width = itemsize(dtype)
    raw = decompress_bytes(sections["data"], math.prod(shape) * width, where)
    if byte_planes:
        raw = from_planes(raw, width)
    if dtype == "bool" and raw.translate(None, b"\x00\x01"):
        raise CorruptFileError(f"{where}: a bool tensor holds bytes other than 0 and 1.")
    return tensor_from_bytes(raw, dtype, shape)
