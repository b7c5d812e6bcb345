"""Lossless peers: zstd on the raw bytes, and ZipNN (an optional extra)."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import torch

from weightdna.baselines.result import BaselineResult, run_codec
from weightdna.codec.dtypes import NAMES, as_torch, tensor_bytes, tensor_from_bytes
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import MissingDependencyError

ZSTD_LEVEL = 19
# ZipNN's byte grouping knows these float dtypes; others fall back to plain zstd inside it.
_ZIPNN_DTYPES = {"float32", "float16", "bfloat16"}


def run_zstd(tensor: torch.Tensor | np.ndarray, level: int = ZSTD_LEVEL) -> BaselineResult:
    """zstd at ``level`` on the tensor's own bytes; bit-exact."""

    def decode(data: bytes, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        raw = decompress_bytes(data, math.prod(shape) * dtype.itemsize, "zstd")
        return tensor_from_bytes(raw, NAMES[dtype], shape)

    def encode(x: torch.Tensor) -> bytes:
        return compress_bytes(tensor_bytes(x), level)

    return run_codec("zstd", f"level {level}", tensor, encode, decode, lossless=True)


def zipnn_available() -> bool:
    """Whether the optional ``zipnn`` package is installed."""
    return importlib.util.find_spec("zipnn") is not None


def run_zipnn(tensor: torch.Tensor | np.ndarray) -> BaselineResult:
    """ZipNN (exponent byte grouping + Huffman/zstd) on the tensor's bytes; bit-exact."""
    if not zipnn_available():
        raise MissingDependencyError("ZipNN is not installed: pip install zipnn")
    with warnings.catch_warnings():  # its import scripts a torch function, which torch deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        import zipnn

    kind = NAMES[as_torch(tensor).dtype]
    kind = kind if kind in _ZIPNN_DTYPES else "uint8"

    def encode(x: torch.Tensor) -> bytes:
        # ZipNN reorders its input buffer in place: hand it a copy.
        buffer = bytearray(tensor_bytes(x))
        return bytes(
            zipnn.ZipNN(input_format="byte", bytearray_dtype=kind, threads=1).compress(buffer)
        )

    def decode(data: bytes, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        raw = zipnn.ZipNN(input_format="byte", bytearray_dtype=kind, threads=1).decompress(data)
        return tensor_from_bytes(bytes(raw), NAMES[dtype], shape)

    return run_codec("zipnn", "lossless", tensor, encode, decode, lossless=True)
