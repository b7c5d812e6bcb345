"""The safetensors file format: check a header before trusting it, and write a file.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``)
and then the tensors' bytes, offsets counted from the end of the header. Every length and
offset is checked here before the safetensors library maps the file, so that a truncated
or foreign file gets a message that says what is wrong rather than a Rust panic.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from weightdna.errors import ModelFileError
from weightdna.weights.model import TensorSource

# The safetensors dtype codes and the torch dtypes they hold.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES: dict[torch.dtype, str] = {dtype: code for code, dtype in DTYPES.items()}
# The reference writer's order of tensors in a file: by dtype, in this order, then by name
# (safetensors' `Dtype` enum, descending). Writing in it makes a restored file byte for byte
# the one `safetensors.torch.save_file` wrote.
WRITER_ORDER: dict[str, int] = {code: rank for rank, code in enumerate((
    "U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
    "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL"))}


def writer_order(specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]]) -> list[str]:
    """The names of {name: (dtype, shape)} in the order the reference writer stores them."""
    return sorted(specs, key=lambda name: (WRITER_ORDER[CODES[specs[name][0]]], name))

# The format's own limit on the header (safetensors refuses larger ones).
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor as the header declares it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int
    start: int = 0  # where its bytes begin in the file: 8 + header length + begin

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> tuple[list[HeaderEntry], dict[str, str]]:
    """Read and check the header of a safetensors file; return its entries and metadata."""
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path} is empty (0 bytes); it holds no weights.")
    if size < 8:
        raise ModelFileError(f"{path} is {size} bytes, too short to be a safetensors file.")
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ModelFileError(
                f"{path}: declared header length {n} does not fit in a file of {size} bytes; "
                "the file is truncated or is not a safetensors file."
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"{path}: the safetensors header is not valid JSON ({exc}); the file is corrupt "
            "or not a safetensors file."
        ) from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is not a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ModelFileError(f"{path}: __metadata__ must map strings to strings.")
    entries = [_entry(path, name, spec, 8 + n) for name, spec in header.items()]
    _check_layout(path, entries, data_bytes=size - 8 - n)
    return entries, dict(metadata)


def _entry(path: Path, name: str, spec: object, data_start: int) -> HeaderEntry:
    bad = f"{path}: header entry {name!r} is malformed"
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(f"{bad}: expected the keys dtype, shape and data_offsets.")
    dtype = DTYPES.get(spec["dtype"])
    if dtype is None:
        raise ModelFileError(f"{bad}: unknown dtype {spec['dtype']!r}.")
    shape, offsets = spec["shape"], spec["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ModelFileError(f"{bad}: shape {shape!r} is not a list of non-negative integers.")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise ModelFileError(f"{bad}: data_offsets {offsets!r} is not [begin, end].")
    expected = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != expected:
        raise ModelFileError(
            f"{bad}: it declares {offsets[1] - offsets[0]} bytes of data but shape {shape} "
            f"of {spec['dtype']} needs {expected}."
        )
    return HeaderEntry(name, dtype, tuple(shape), offsets[0], offsets[1],
                       data_start + offsets[0])


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_layout(path: Path, entries: list[HeaderEntry], data_bytes: int) -> None:
    # The format requires the tensors' byte ranges to tile the data region exactly.
    position = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != position:
            raise ModelFileError(
                f"{path}: tensor {e.name!r} starts at byte {e.begin} of the data but the "
                f"previous tensor ends at {position}; the header is corrupt."
            )
        position = e.end
    if position > data_bytes:
        raise ModelFileError(
            f"{path}: the header declares {position} bytes of tensor data but the file holds "
            f"{data_bytes}; the file is truncated (download or copy it again)."
        )
    if position < data_bytes:
        raise ModelFileError(
            f"{path}: {data_bytes - position} bytes follow the last tensor; the file is "
            "corrupt or not a safetensors file."
        )


# Bytes read at a time when a tensor is converted to another dtype as it is read.
CONVERT_CHUNK_BYTES = 1 << 20


def _read_into(f: BinaryIO, view: memoryview, path: Path, entry: HeaderEntry) -> None:
    done = 0
    while done < len(view):  # a raw read may return fewer bytes than asked
        got = f.readinto(view[done:])
        if not got:
            raise ModelFileError(f"{path} ends inside tensor {entry.name!r}; it was "
                                 "truncated since it was opened.")
        done += got


def read_tensor(path: Path, entry: HeaderEntry, file_bytes: int,
                dtype: torch.dtype | None = None,
                rows: tuple[int, int] | None = None) -> torch.Tensor:
    """The tensor ``entry`` describes, read from the file into a new tensor (no memory map:
    a mapped file's pages would stay resident, and count, after the tensor is dropped).

    ``file_bytes``: the file's size when its header was checked; a file that changed size
    since is refused rather than read at offsets that no longer mean anything.
    ``dtype``: convert to it as the bytes are read, CONVERT_CHUNK_BYTES at a time, so that
    the stored dtype's copy of a large tensor is never held beside the converted one.
    ``rows``: only the rows [start, stop) of the first dimension (clipped to it).
    """
    if rows is not None:
        first = entry.shape[0] if entry.shape else 1
        start, stop = max(0, min(rows[0], first)), max(0, min(rows[1], first))
        stop = max(start, stop)
        row_bytes = entry.nbytes // max(first, 1)
        entry = HeaderEntry(entry.name, entry.dtype, (stop - start, *entry.shape[1:]),
                            entry.begin + start * row_bytes, entry.begin + stop * row_bytes,
                            entry.start + start * row_bytes)
    if sys.byteorder != "little":
        raise ModelFileError("reading safetensors needs a little-endian machine.")
    convert = dtype is not None and dtype != entry.dtype
    try:
        with path.open("rb", buffering=0) as f:
            if (size := f.seek(0, 2)) != file_bytes:
                raise ModelFileError(f"{path} changed since it was opened ({file_bytes} bytes, "
                                     f"now {size}); open it again.")
            f.seek(entry.start)
            if not convert:
                buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
                _read_into(f, memoryview(buffer.numpy()), path, entry)
                return buffer.view(entry.dtype).reshape(entry.shape)
            out = torch.empty(entry.shape, dtype=dtype)
            flat = out.reshape(-1)
            width = entry.dtype.itemsize
            step = max(width, CONVERT_CHUNK_BYTES // width * width)
            chunk = torch.empty(min(step, entry.nbytes), dtype=torch.uint8)
            for start in range(0, entry.nbytes, step):
                part = chunk[: min(step, entry.nbytes - start)]
                _read_into(f, memoryview(part.numpy()), path, entry)
                flat[start // width : (start + part.numel()) // width] = part.view(entry.dtype)
            return out
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}.") from None


def header_bytes(specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: Mapping[str, str]) -> tuple[bytes, dict[str, int]]:
    """The file's start (length and JSON header) for tensors of these {name: (dtype,
    shape)}, in the reference writer's order, and each tensor's offset in the file."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    offsets = {}
    for name in writer_order(specs):
        dtype, shape = specs[name]
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": CODES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offsets[name] = offset
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces so the data starts on an 8-byte boundary, as the reference writer does.
    raw += b" " * (-len(raw) % 8)
    start = struct.pack("<Q", len(raw)) + raw
    return start, {name: len(start) + at for name, at in offsets.items()}


def write_safetensors(
    f: BinaryIO,
    tensors: Mapping[str, torch.Tensor | TensorSource],
    metadata: Mapping[str, str],
) -> None:
    """Write ``tensors`` (in the reference writer's order) to an open binary file.

    Each value is a tensor (CPU, contiguous) or a TensorSource, whose declared dtype and
    shape make the header and whose ``read()`` is called only when its bytes are written
    (and must return a CPU, contiguous tensor of that dtype and shape). Streams one tensor at
    a time, so memory stays bounded by the largest tensor, not the model.
    """
    specs = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
    f.write(header_bytes(specs, metadata)[0])
    for name in writer_order(specs):
        t = tensors[name]
        if isinstance(t, TensorSource):
            source, t = t, t.read()
            if t.dtype != source.dtype or tuple(t.shape) != source.shape:
                raise ModelFileError(f"{name} was declared {source.dtype} {list(source.shape)} "
                                     f"but is {t.dtype} {list(t.shape)}.")
        if t.numel():
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        del t  # before the next one is read
