"""The .dna container: a fixed prefix, a zlib-compressed JSON header, byte sections
(docs/FORMAT.md).

The reader trusts nothing: every length, offset, type and checksum is checked, and every
size against the file and a memory limit, before anything is allocated for it.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from weightdna.atomic import atomic_output
from weightdna.codec import filecoding, packed
from weightdna.codec.dtypes import FLOAT_NAMES
from weightdna.codec.entries import (  # noqa: F401 - the format's names, read from here too
    COMPACT_INDEX_VERSION,
    DECODE_BLOCK_BYTES,
    DECODE_BLOCK_ELEMENTS,
    DEFAULT_MAX_MEMORY,
    ENTRY_KEYS,
    FILE_CODING_KEYS,
    FILE_CODING_VERSION,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_NAME_CHARS,
    MAX_SECTIONS_PER_TENSOR,
    NAME_PREFIXES_VERSION,
    OPTIONAL_ENTRY_KEYS,
    PPMD_VERSION,
    READABLE_VERSIONS,
    REPRESENTATIONS,
    STATS_KEYS,
    VERSION,
    check_entry,
    decode_memory,
    file_version,
)
from weightdna.codec.fields import cut_digits, is_int, load_json
from weightdna.codec.lossless import decode_lossless
from weightdna.codec.spill import Spill, SpilledSections
from weightdna.codec.tensor import decode_tensor
from weightdna.errors import (
    CorruptFileError,
    InvalidInputError,
    MissingDependencyError,
    ModelFileError,
    OutputExistsError,
)

MAGIC = b"\x89DNA\r\n\x1a\n"
FILES_VERSION = 6  # the first version with stored files
# The header's zlib preset dictionary (version 4): a sample header of the format's keys,
# representations, symbol models, the engine's architecture metadata and BERT's tensor
# names, made from synthetic tensors. Frozen: every file from version 4 names it by its Adler-32.
HEADER_DICTIONARY_FILE = "header_dictionary.json"
HEADER_DICTIONARY_ADLER32 = 0x14BF748F
# magic, version, stored (compressed) header length, inflated header length, CRC-32 of the
# stored header bytes
PREFIX = struct.Struct("<8sIIII")
MAX_HEADER_BYTES = 64 << 20  # bounds the stored and the inflated header alike
HEADER_ZLIB_LEVEL = 9
MAX_TENSORS = 1 << 20
# A stored file (version 6): its path in the model's folder, its size, how it is stored.
FILE_KEYS = {"path", "bytes", "compression", "sections"}
FILE_KINDS = ("file", "onnx-graph")
MAX_FILES = 4096
MAX_FILE_BYTES = 1 << 30
MAX_PATH_CHARS = 1024
MAX_PATH_PART_BYTES = 255
# The compact index (COMPACT_INDEX_VERSION): consecutive tensors share one CRC-32 up to
# this many bytes of sections (a tensor over it has its own), so that reading one tensor
# reads and checks at most this much beside it. Such a file also packs its small raw
# tensors by their significant bits (`weightdna.codec.packed`: no zstd frame, no rounded
# zero bits). Written where the file has at least COMPACT_INDEX_MIN_TENSORS tensors and
# the two save at least COMPACT_INDEX_MIN_SAVING of the file (a small model of many small
# tensors: rapidocr's angle classifier's index at 3 bits per weight was 24% of its file),
# the older index (an offset and CRC-32 per section) elsewhere, byte for byte as before.
CHECKSUM_GROUP_BYTES = 1 << 16
# A tensor's informational stats (what `weightdna info` shows), cut towards zero to this
# many significant digits (`fields.cut_digits`): full float precision would be most of a
# small model's compressed header, and the figures only inform.
STATS_DIGITS = 4
# The compact index's stats: a lossy tensor's snr_db alone, to this many significant digits
# (22 dB, 9.3 dB; an exact tensor's none): with max_abs_error and snr_db to 3 digits they
# were 1.4 KB of rapidocr's angle classifier's 50 KB file at 3 bits per weight, and
# `compress`'s report gives every figure (BENCHMARKS.md, "Small models' overhead").
COMPACT_STATS_DIGITS = 2
COMPACT_INDEX_MIN_TENSORS = 32
COMPACT_INDEX_MIN_SAVING = 0.005
# Parsed JSON takes many times its text: "{}," is 3 bytes of text and a 64-byte dict.
HEADER_MEMORY_FACTOR = 32


def check_file_entry(entry: object, max_memory: int = DEFAULT_MAX_MEMORY,
                     version: int = VERSION) -> str:
    """Validate one stored file's entry (version 6; ``prefix`` and ``vocab`` from
    FILE_CODING_VERSION, ``"compression": "ppmd"`` and its ``ppmd`` params from
    PPMD_VERSION); returns its path. Raises CorruptFileError. Where its prefix lies
    (earlier files) is checked by the reader, which knows them.

    The path must be relative and stay inside the folder it is written to: parts separated
    by "/", none empty, ".", ".." or longer than 255 bytes, no backslash, no control
    character, no part that starts with "." (hidden files are never stored)."""
    if not isinstance(entry, dict):
        raise CorruptFileError("a file entry must be a JSON object.")
    keys = set(entry)
    optional = {"kind", *(FILE_CODING_KEYS if version >= FILE_CODING_VERSION else ()),
                *(("ppmd",) if version >= PPMD_VERSION else ())}
    if not FILE_KEYS <= keys or not keys <= FILE_KEYS | optional:
        raise CorruptFileError(f"a file entry must have the keys {sorted(FILE_KEYS)} (and "
                               f"optionally {', '.join(map(repr, sorted(optional)))}), found "
                               f"{sorted(map(str, keys))}.")
    path = entry["path"]
    check_relative_path(path)
    where = f"file {path!r}"
    if entry.get("kind", "file") not in FILE_KINDS:
        raise CorruptFileError(f"{where}: unknown kind {entry['kind']!r} (this reader knows "
                               f"{', '.join(FILE_KINDS)}).")
    size = entry["bytes"]
    if not is_int(size) or not 0 <= size <= MAX_FILE_BYTES:
        raise CorruptFileError(f"{where}: bytes must be an integer from 0 to {MAX_FILE_BYTES}.")
    if size > max_memory:
        raise CorruptFileError(f"{where}: its {size} bytes exceed the memory limit of "
                               f"{max_memory}; raise max_memory if the file is trusted.")
    compressions = ("zstd", "ppmd") if version >= PPMD_VERSION else ("zstd",)
    if entry["compression"] not in compressions:
        raise CorruptFileError(f"{where}: compression must be "
                               f"{' or '.join(map(repr, compressions))}.")
    if not isinstance(entry["sections"], dict) or set(entry["sections"]) != {"data"}:
        raise CorruptFileError(f"{where}: sections must hold exactly 'data'.")
    if "prefix" in entry and entry["prefix"] is not True:
        raise CorruptFileError(f"{where}: prefix must be true where it is given.")
    if "vocab" in entry:
        filecoding.check_vocab(entry["vocab"], size, where)
    if (entry["compression"] == "ppmd") != ("ppmd" in entry):
        raise CorruptFileError(f"{where}: ppmd params go with compression 'ppmd', and only "
                               "with it.")
    if "ppmd" in entry:
        if "prefix" in entry:
            raise CorruptFileError(f"{where}: a PPMd payload has no prefix.")
        payload = filecoding.payload_bytes(entry)
        filecoding.check_ppmd(entry["ppmd"], payload, where)
    return path


def _check_ppmd_section(entry: dict, length: int, max_memory: int) -> None:
    """A checked PPMd file entry's stream of ``length`` bytes: no longer than its decoder
    can read, and what its decoding holds (`filecoding.ppmd_memory`) with twice the file's
    size within ``max_memory``. Raises CorruptFileError."""
    where = f"file {entry['path']!r}"
    payload = filecoding.payload_bytes(entry)
    filecoding.check_ppmd_stream(entry["ppmd"], payload, length, where)
    if filecoding.ppmd_memory(entry["ppmd"], payload, length) + 2 * entry["bytes"] > max_memory:
        raise CorruptFileError(f"{where}: decoding its PPMd payload needs more than the "
                               f"memory limit of {max_memory}; raise max_memory if the "
                               "file is trusted.")


def check_relative_path(path: object) -> None:
    """Raise CorruptFileError unless ``path`` is a safe relative path (`check_file_entry`)."""
    if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_CHARS:
        raise CorruptFileError(f"a file path must be a string of 1 to {MAX_PATH_CHARS} chars.")
    parts = path.split("/")
    for part in parts:
        if (not part or part in (".", "..") or part.startswith(".") or "\\" in part
                or any(ord(c) < 32 or ord(c) == 127 for c in part)
                or len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_PART_BYTES):
            raise CorruptFileError(
                f"the file path {path!r} is not a plain relative path (parts separated by "
                "'/', none empty, '.', '..', hidden, over 255 bytes or with a backslash or "
                "control character).")


@dataclass
class DnaFile:
    """A validated .dna file: its header; section bytes are read (and checksummed) on demand."""

    path: Path
    version: int
    metadata: dict[str, str]
    entries: list[dict[str, Any]]
    header_bytes: int
    file_bytes: int
    files: list[dict[str, Any]] = field(default_factory=list)  # version 6: stored files
    # The compact index (version 13): each checksum group's (offset, length, CRC-32, first
    # tensor, tensor count), and each tensor's group; both empty for the older index.
    groups: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    group_of: list[int] = field(default_factory=list)
    # The last group read, checked (its index and bytes): tensors decoded in order read
    # each group once.
    _last_group: tuple[int, bytes] | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        """Tensor names in file order."""
        return [e["name"] for e in self.entries]

    def index(self, name: str) -> int:
        """Position of the tensor called ``name``."""
        for i, entry in enumerate(self.entries):
            if entry["name"] == name:
                return i
        raise InvalidInputError(f"no tensor {name!r} in {self.path}.")

    def stored_file(self, path: str) -> bytes:
        """The content of the stored file at ``path`` (version 6), checked and inflated
        (with a ``prefix``, version 12: every file before it too, for their payloads)."""
        for j, entry in enumerate(self.files):
            if entry["path"] == path:
                if not entry.get("prefix"):
                    return self._stored(entry, None)[1]
                return next(c for e, c in self.stored_files(j + 1) if e is entry)
        raise InvalidInputError(f"no file {path!r} is stored in {self.path}.")

    def stored_files(self, count: int | None = None) -> Iterator[tuple[dict, bytes]]:
        """(entry, content) of the first ``count`` stored files (all by default), in order,
        each read, checked and inflated once. The payloads are kept while a later file's
        ``prefix`` needs them (the reader checked that they fit ``max_memory``)."""
        files = self.files[:count]
        last_prefix = max((j for j, e in enumerate(files) if e.get("prefix")), default=-1)
        joined = bytearray()
        for j, entry in enumerate(files):
            payload, content = self._stored(
                entry, bytes(joined) if entry.get("prefix") else None)
            if j < last_prefix:
                joined += payload
            yield entry, content

    def _stored(self, entry: dict, dictionary: bytes | None) -> tuple[bytes, bytes]:
        """(payload, content) of a stored file (`weightdna.codec.filecoding`)."""
        where = f"file {entry['path']!r}"
        offset, length, crc = entry["sections"]["data"]
        blob = self._read_range(offset, length, crc, where)
        return filecoding.decode(blob, entry, dictionary or None, f"{self.path}: {where}")

    def _read_range(self, offset: int, length: int, crc: int, what: str) -> bytes:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size != self.file_bytes:
                    raise CorruptFileError(f"{self.path} changed since it was opened.")
                f.seek(self.header_bytes + offset)
                blob = f.read(length)
        except OSError as exc:
            raise ModelFileError(f"cannot read {self.path}: {exc.strerror or exc}.") from exc
        if len(blob) != length or zlib.crc32(blob) != crc:
            raise CorruptFileError(f"{self.path}: {what}: the checksum does not match; the "
                                   "file is damaged.")
        return blob

    def section_bytes(self, name: str) -> int:
        """Bytes the tensor's sections take on disk."""
        return sum(length for _, length, _ in self.entries[self.index(name)]["sections"].values())

    def read_sections(self, name: str) -> dict[str, bytes]:
        """The tensor's sections, read from the file and checked against their CRC-32 (with
        a compact index, its group's: the group is read whole, at most
        CHECKSUM_GROUP_BYTES with other tensors, and kept until another is read)."""
        i = self.index(name)
        entry = self.entries[i]
        if self.groups:
            g = self.group_of[i]
            offset, length, crc, first, count = self.groups[g]
            if self._last_group is not None and self._last_group[0] == g:
                blob = self._last_group[1]
            else:
                blob = self._read_range(offset, length, crc, _group_what(
                    self.entries, g, len(self.groups), first, count))
                self._last_group = (g, blob)
            return {role: blob[at - offset: at - offset + size]
                    for role, (at, size, _) in entry["sections"].items()}
        parts = {}
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size != self.file_bytes:
                    raise CorruptFileError(f"{self.path} changed since it was opened.")
                for role, (offset, length, crc) in entry["sections"].items():
                    f.seek(self.header_bytes + offset)
                    blob = f.read(length)
                    if len(blob) != length or zlib.crc32(blob) != crc:
                        raise CorruptFileError(_checksum_message(self.path, name, role))
                    parts[role] = blob
        except OSError as exc:
            raise ModelFileError(f"cannot read {self.path}: {exc.strerror or exc}.") from exc
        return parts

    def tensor(self, name: str, max_memory: int = DEFAULT_MAX_MEMORY,
               block: int | None = None) -> torch.Tensor:
        """Decode the tensor called ``name`` (a reference's referenced tensor first);
        ``block``: only that row block's rows (`weightdna.codec.tensor.decode_tensor`)."""
        i = self.index(name)
        entry = self.entries[i]
        referenced = None
        if entry.get("representation") == "reference+residual":
            referenced = self.tensor(self.referenced(i), max_memory)
        try:
            return decode_tensor(entry, self.read_sections(name), max_memory, self.version,
                                 referenced, block)
        except CorruptFileError as exc:  # the decoder names the tensor; the file, and what to do
            said = str(exc).rstrip()
            text = said if said.startswith(str(self.path)) else f"{self.path}: {said}"
            if "damaged" not in said.removeprefix(str(self.path)):
                text += " The file is damaged: copy it again, or compress the model again."
            raise CorruptFileError(text) from None

    def referenced(self, i: int) -> str:
        """The name of the tensor entry ``i`` (a ``reference+residual``) refers to, checked:
        an earlier tensor of the same shape and a floating-point dtype, not itself a
        reference (so a decode reads at most one other tensor, and no cycle can form)."""
        entry = self.entries[i]
        where = f"tensor {entry.get('name')!r}"
        if self.version < 8:
            raise CorruptFileError(f"{where}: the reference+residual representation is new "
                                   f"in version 8; this file is version {self.version}.")
        params = entry.get("params")
        target = params.get("reference") if isinstance(params, dict) else None
        name = target.get("name") if isinstance(target, dict) else None
        earlier = [e for e in self.entries[:i] if e["name"] == name]
        if not earlier:
            raise CorruptFileError(f"{where}: a reference must name an earlier tensor of the "
                                   "file.")
        other = earlier[0]
        if (other["representation"] == "reference+residual" or other["shape"] != entry["shape"]
                or other["dtype"] not in FLOAT_NAMES):
            raise CorruptFileError(f"{where}: the tensor it refers to, {name!r}, must be a "
                                   "floating-point tensor of the same shape that is not "
                                   "itself a reference.")
        return name


def _check_prefix(path: str, index: int, earlier: int, own: int, prefixes: int,
                  max_memory: int) -> None:
    """A stored file's ``prefix`` (version 12): not the first file; what reading it holds
    within ``max_memory``: its dictionary (the ``earlier`` files' payloads) twice (kept,
    and the copy zstd is given) and ``own`` (its payload and twice its content: a
    vocab's file is built, then copied out); the dictionaries so far with it within
    filecoding.MAX_PREFIX_BYTES."""
    where = f"file {path!r}"
    if index == 0:
        raise CorruptFileError(f"{where}: the first file has no earlier files for a prefix.")
    if 2 * earlier + own > max_memory:
        raise CorruptFileError(f"{where}: with the {earlier} bytes of the files before it "
                               f"it needs more than the memory limit of {max_memory}; raise "
                               "max_memory if the file is trusted.")
    if prefixes + earlier > filecoding.MAX_PREFIX_BYTES:
        raise CorruptFileError(f"{where}: the files' prefixes together exceed "
                               f"{filecoding.MAX_PREFIX_BYTES} bytes.")


def _section_what(name: str, role: str) -> str:
    return f"tensor {name!r}, section {role!r}"


def _checksum_message(path: Path, name: str, role: str) -> str:
    return f"{path}: {_section_what(name, role)}: the checksum does not match; the file is damaged."


def _group_what(entries: list[dict], group: int, groups: int, first: int, count: int) -> str:
    """What a checksum group of the compact index holds, for its messages."""
    names = repr(entries[first]["name"]) if count == 1 else (
        f"{entries[first]['name']!r} to {entries[first + count - 1]['name']!r}")
    plural = "s" if count > 1 else ""
    return f"checksum group {group + 1} of {groups} (the sections of tensor{plural} {names})"


def _header_json(entries: list[dict], metadata: Mapping[str, str], files: list[dict],
                 checksums: list[list[int]] | None = None,
                 prefixes: list[int] | None = None) -> bytes:
    header: dict[str, Any] = {"metadata": dict(metadata), "tensors": entries}
    if prefixes is not None:
        header["prefixes"] = prefixes
    if checksums is not None:
        header["checksums"] = checksums
    if files:
        header["files"] = files
    try:
        text = json.dumps(header, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the header cannot be written as JSON: {exc}") from exc
    return text.encode("utf-8")


def write_dna_file(
    path: str | os.PathLike,
    header_entries: Sequence[Mapping[str, Any]],
    sections: Sequence[Mapping[str, bytes]],
    *,
    metadata: Mapping[str, str] | None = None,
    files: Sequence[tuple[Mapping[str, Any], bytes]] = (),
    overwrite: bool = False,
) -> int:
    """Write a .dna file atomically; returns its size in bytes.

    ``header_entries[i]`` (from `encode_tensor`) and ``sections[i]`` describe tensor i
    (a mapping of bytes, or `spill.SpilledSections`: copied from their spill file a block
    at a time). ``files``: the model's other files, each (entry without sections, its zstd frame)
    (`weightdna.codec.bundle`). Missing folders of ``path`` are created.
    Raises OutputExistsError if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path} exists; pass overwrite=True (--force) to replace it.")
    chunks = _layout(header_entries, sections, metadata, files)
    with atomic_output(path, overwrite=overwrite) as f:
        for chunk in chunks:
            if isinstance(chunk, bytes):
                f.write(chunk)
            else:
                spill, offset, length = chunk
                spill.copy(offset, length, f)
    return sum(_chunk_bytes(c) for c in chunks)


def dna_file_size(
    header_entries: Sequence[Mapping[str, Any]],
    sections: Sequence[Mapping[str, bytes]],
    *,
    metadata: Mapping[str, str] | None = None,
    files: Sequence[tuple[Mapping[str, Any], bytes]] = (),
) -> int:
    """The exact size in bytes `write_dna_file` would write, without writing."""
    return sum(_chunk_bytes(c) for c in _layout(header_entries, sections, metadata, files))


# A piece of the file: bytes, or (spill, offset, length) of a spilled section.
_Chunk = bytes | tuple[Spill, int, int]


def _chunk_bytes(chunk: _Chunk) -> int:
    return len(chunk) if isinstance(chunk, bytes) else chunk[2]


def _layout(
    header_entries: Sequence[Mapping[str, Any]],
    sections: Sequence[Mapping[str, bytes]],
    metadata: Mapping[str, str] | None,
    files: Sequence[tuple[Mapping[str, Any], bytes]] = (),
) -> list[_Chunk]:
    """The file's pieces, in order: prefix and header, then every section (validated)."""
    if len(header_entries) != len(sections):
        raise InvalidInputError("give one sections mapping per header entry.")
    if len(header_entries) > MAX_TENSORS:
        raise InvalidInputError(f"a .dna file holds at most {MAX_TENSORS} tensors.")
    metadata = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InvalidInputError("metadata must map strings to strings.")

    entries, blobs, stored, data_bytes = _place(header_entries, sections, files)
    header = _header_json(entries, metadata, stored)
    if len(header) > MAX_HEADER_BYTES:
        raise InvalidInputError(f"the header ({len(header)} bytes) exceeds {MAX_HEADER_BYTES}.")
    block = header_block(header, file_version(entries, stored))
    if len(entries) < max(COMPACT_INDEX_MIN_TENSORS, 1):
        return [block, *blobs]
    # The same file with the compact index and its small raw tensors packed (version 13).
    repacked = [_packed(entry, parts) for entry, parts in zip(header_entries, sections,
                                                               strict=True)]
    entries, packed_blobs, stored, packed_bytes = _place(
        [e for e, _ in repacked], [p for _, p in repacked], files)
    compact = _compact_block(entries, metadata, stored)
    size = len(block) + data_bytes
    if compact is not None and size - len(compact) - packed_bytes >= (
            COMPACT_INDEX_MIN_SAVING * size):
        return [compact, *packed_blobs]
    return [block, *blobs]


def _packed(entry: Mapping[str, Any], parts: Mapping[str, bytes]
            ) -> tuple[Mapping[str, Any], Mapping[str, bytes]]:
    """A small ``raw`` tensor (at most packed.MAX_ELEMENTS values) packed by its
    significant bits (`weightdna.codec.packed`) where that saves more than its params
    cost (a spilled one read from its spill: it is small); any other as it is."""
    params = entry.get("params")
    if (entry.get("representation") != "raw"
            or not isinstance(params, dict) or params.get("compression") == "packed"
            or math.prod(entry["shape"]) > packed.MAX_ELEMENTS):
        return entry, parts
    try:
        raw = decode_lossless(params, dict(parts), entry["dtype"], tuple(entry["shape"]),
                              f"tensor {entry['name']!r}", VERSION)
    except CorruptFileError as exc:
        raise InvalidInputError(f"cannot write this entry: {exc}") from exc
    coded = packed.encode_packed(raw, entry["dtype"])
    if coded is None or (len(coded[1]["data"]) + packed.PARAMS_BYTES
                         >= sum(len(blob) for blob in parts.values())):
        return entry, parts
    return {**entry, "params": coded[0]}, coded[1]


def _place(header_entries: Sequence[Mapping[str, Any]], sections: Sequence[Mapping[str, bytes]],
           files: Sequence[tuple[Mapping[str, Any], bytes]]
           ) -> tuple[list[dict], list[_Chunk], list[dict], int]:
    """(tensor entries with their sections' [offset, length, crc32], the pieces of the
    data area in order, stored-file entries, the data area's bytes), validated."""
    entries: list[dict] = []
    blobs: list[_Chunk] = []
    names: set[str] = set()
    offset = 0
    for entry, parts in zip(header_entries, sections, strict=True):
        entry = {k: v for k, v in entry.items() if k != "sections"}
        try:
            name, _, _ = check_entry(entry, max_memory=1 << 62)
        except CorruptFileError as exc:
            raise InvalidInputError(f"cannot write this entry: {exc}") from exc
        if name in names:
            raise InvalidInputError(f"two tensors are called {name!r}.")
        names.add(name)
        if len(parts) > MAX_SECTIONS_PER_TENSOR:
            raise InvalidInputError(
                f"tensor {name!r} has more than {MAX_SECTIONS_PER_TENSOR} sections."
            )
        ranges = {}
        if isinstance(parts, SpilledSections):
            for role, (at, length, crc) in parts.ranges.items():
                ranges[role] = [offset, length, crc]
                blobs.append((parts.spill, at, length))
                offset += length
        else:
            for role, blob in parts.items():
                blob = bytes(blob)
                ranges[str(role)] = [offset, len(blob), zlib.crc32(blob)]
                blobs.append(blob)
                offset += len(blob)
        entry["sections"] = ranges
        if isinstance(entry.get("stats"), dict):
            entry["stats"] = {k: cut_digits(v, STATS_DIGITS) for k, v in entry["stats"].items()}
        entries.append(entry)

    if len(files) > MAX_FILES:
        raise InvalidInputError(f"a .dna file holds at most {MAX_FILES} files.")
    stored: list[dict] = []
    paths: set[str] = set()
    for entry, blob in files:
        entry = {**entry, "sections": {"data": [offset, len(blob), zlib.crc32(blob)]}}
        try:
            file_path = check_file_entry(entry, max_memory=1 << 62)
        except CorruptFileError as exc:
            raise InvalidInputError(f"cannot store this file: {exc}") from exc
        if file_path in paths:
            raise InvalidInputError(f"two files are called {file_path!r}.")
        paths.add(file_path)
        stored.append(entry)
        blobs.append(bytes(blob))
        offset += len(blob)
    return entries, blobs, stored, offset


def _compact_block(entries: list[dict], metadata: Mapping[str, str],
                   stored: list[dict]) -> bytes | None:
    """The prefix and header of the same file with the compact index (version 13), its
    names front-coded (``prefixes``, version 14) where that is shorter, or None where the
    header would be too long.
    Each tensor's sections are given by their lengths, in file order; ``checksums`` holds
    [tensor count, CRC-32] per group of consecutive tensors (CHECKSUM_GROUP_BYTES); its
    stats are a lossy tensor's snr_db alone, cut to COMPACT_STATS_DIGITS."""
    checksums: list[list[int]] = []
    compact, count, size, crc = [], 0, 0, 0
    for entry in entries:
        ranges = list(entry["sections"].values())
        held = sum(length for _, length, _ in ranges)
        if count and size + held > CHECKSUM_GROUP_BYTES:
            checksums.append([count, crc])
            count = size = crc = 0
        for _, length, part in ranges:
            crc = crc32_combine(crc, part, length)
        count, size = count + 1, size + held
        compact.append({k: v for k, v in entry.items() if k != "stats"})
        compact[-1]["sections"] = {role: spec[1] for role, spec in entry["sections"].items()}
        snr = entry["stats"].get("snr_db") if isinstance(entry.get("stats"), dict) else None
        if snr is not None:
            compact[-1]["stats"] = {"snr_db": cut_digits(snr, COMPACT_STATS_DIGITS)}
    checksums.append([count, crc])
    header = _header_json(compact, metadata, stored, checksums)
    if len(header) > MAX_HEADER_BYTES:
        return None
    block = header_block(header, file_version(compact, stored, compact_index=True))
    # Front-coded names (version 14) where they make the header smaller.
    prefixes, previous, coded = [], "", []
    for entry in compact:
        k = len(os.path.commonprefix([previous, entry["name"]]))
        prefixes.append(k)
        coded.append({**entry, "name": entry["name"][k:]})
        previous = entry["name"]
    text = _header_json(coded, metadata, stored, checksums, prefixes)
    if len(text) > MAX_HEADER_BYTES:
        return block
    front = header_block(text, file_version(coded, stored, name_prefixes=True))
    return front if len(front) < len(block) else block


_CRC_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a × b modulo the CRC-32 polynomial (reflected bit order, as zlib's crc32.c)."""
    m, p = 1 << 31, 0
    while m:
        if a & m:
            p ^= b
            if not a & (m - 1):
                break
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return p


def _x2n_table() -> list[int]:
    table, p = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return table


_X2N = _x2n_table()


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from A's (``crc1``), B's (``crc2``) and B's length (zlib's
    crc32_combine), without B's bytes: a spilled section is known by its CRC alone."""
    p, k, n = 1 << 31, 3, length2  # x^(8 n): n bytes
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


@cache
def header_dictionary() -> bytes:
    """The header's preset dictionary (the bytes of ``HEADER_DICTIONARY_FILE``)."""
    data = resources.files("weightdna.codec").joinpath(HEADER_DICTIONARY_FILE).read_bytes()
    if zlib.adler32(data) != HEADER_DICTIONARY_ADLER32:
        raise MissingDependencyError(
            f"weightdna/codec/{HEADER_DICTIONARY_FILE} was changed; every .dna file from "
            "version 4 needs it as released. Reinstall weightdna.")
    return data


def header_block(text: bytes, version: int = VERSION) -> bytes:
    """The prefix and the stored header for the JSON ``text``: zlib-compressed (a per-tensor
    JSON entry is mostly repeated keys, and small models pay for it per weight), from
    version 4 with the preset dictionary (which holds those keys: a digits model's header
    shrinks from about 850 to 400 bytes)."""
    deflater = (zlib.compressobj(HEADER_ZLIB_LEVEL, zdict=header_dictionary()) if version >= 4
                else zlib.compressobj(HEADER_ZLIB_LEVEL))
    stored = deflater.compress(text) + deflater.flush()
    return PREFIX.pack(MAGIC, version, len(stored), len(text), zlib.crc32(stored)) + stored


def _inflate_header(stored: bytes, expected: int, version: int) -> bytes:
    """The header text of ``stored``, which must inflate to exactly ``expected`` bytes;
    never inflates more than ``expected + 1``. From version 4 the zlib stream must name
    the preset dictionary (FDICT set, DICTID its Adler-32, RFC 1950)."""
    if version >= 4:
        if (len(stored) < 6 or not stored[1] & 0x20
                or struct.unpack(">I", stored[2:6])[0] != HEADER_DICTIONARY_ADLER32):
            raise CorruptFileError("the header's zlib stream does not name the format's preset "
                                   "dictionary; the file is damaged.")
        inflater = zlib.decompressobj(zdict=header_dictionary())
    else:
        inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(stored, expected + 1)
    except zlib.error as exc:
        raise CorruptFileError(f"the header's zlib data is damaged ({exc}).") from exc
    if len(text) != expected or not inflater.eof or inflater.unused_data:
        raise CorruptFileError(
            f"the header does not inflate to exactly the {expected} bytes its prefix declares."
        )
    return text


def _verify_checksums(f: Any, path: Path, checks: list[tuple[int, int, int, str]]) -> None:
    """CRC-32 of every checked range (offset, length, CRC-32, what it holds), read in file
    order one chunk at a time."""
    for _, length, expected, what in sorted(checks):  # contiguous: f is at each one's start
        crc, left = 0, length
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise CorruptFileError(f"{path}: the file changed while it was read.")
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
        if crc != expected:
            raise CorruptFileError(f"{path}: {what}: the checksum does not match; the file "
                                   "is damaged.")


def _parse_header(raw: bytes, version: int = VERSION) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"the header is not UTF-8 ({exc.reason}).") from exc
    header = load_json(text, "the header")
    keys = {"metadata", "tensors"}
    if version >= FILES_VERSION and isinstance(header, dict) and "files" in header:
        keys.add("files")
    if version >= COMPACT_INDEX_VERSION and isinstance(header, dict) and "checksums" in header:
        keys.add("checksums")
    if version >= NAME_PREFIXES_VERSION and isinstance(header, dict) and "prefixes" in header:
        keys.add("prefixes")
    if not isinstance(header, dict) or set(header) != keys:
        raise CorruptFileError(
            "the header must be an object with keys metadata and tensors"
            + (" (and files, checksums, prefixes)." if version >= NAME_PREFIXES_VERSION
               else " (and files, checksums)." if version >= COMPACT_INDEX_VERSION
               else " (and files)." if version >= FILES_VERSION else ".")
            + "".join(f" {what} is new in version {new}; this file is version {version}."
                      for key, what, new in (
                          ("checksums", "The compact index (checksums)", COMPACT_INDEX_VERSION),
                          ("prefixes", "Front-coded names (prefixes)", NAME_PREFIXES_VERSION))
                      if isinstance(header, dict) and key in header and version < new))
    files = header.setdefault("files", [])
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise CorruptFileError(f"header files must be a list of at most {MAX_FILES}.")
    metadata, tensors = header["metadata"], header["tensors"]
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptFileError("header metadata must map strings to strings.")
    if not isinstance(tensors, list) or len(tensors) > MAX_TENSORS:
        raise CorruptFileError(f"header tensors must be a list of at most {MAX_TENSORS}.")
    if "prefixes" in header:
        _front_decode(header.pop("prefixes"), tensors)
    return header


def _front_decode(prefixes: object, entries: list) -> None:
    """Give each entry its whole name (version 14): ``prefixes[i]`` characters of entry
    i − 1's whole name, then the characters entry i's ``name`` holds. Checked: one
    integer a tensor, the first 0, each at most the length of the name before it, and
    every whole name within MAX_NAME_CHARS before it is built."""
    if not (isinstance(prefixes, list) and len(prefixes) == len(entries)):
        raise CorruptFileError(f"prefixes must be a list of one integer a tensor "
                               f"({len(entries)}).")
    previous = ""
    for i, (k, entry) in enumerate(zip(prefixes, entries, strict=True)):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not (is_int(k) and 0 <= k <= len(previous) and isinstance(name, str)
                and k + len(name) <= MAX_NAME_CHARS):
            raise CorruptFileError(
                f"tensor {i + 1}: its name's prefix must be an integer from 0 to the length "
                f"of the name before it ({len(previous)}), with its name a string, together "
                f"at most {MAX_NAME_CHARS} characters.")
        entry["name"] = previous = previous[:k] + name


def _compact_ranges(entry: dict, cursor: int, data_size: int) -> dict[str, list]:
    """A tensor's sections in the compact index (their lengths, laid out from ``cursor`` in
    order) as [offset, length, None]: its group's CRC-32 checks them."""
    where = f"tensor {entry['name']!r}"
    result = {}
    for role, length in _sections_object(entry, where).items():
        if not is_int(length) or length < 0:
            raise CorruptFileError(f"{where}: section {role!r} must be its length in bytes, "
                                   "a non-negative integer, in a file with a compact index.")
        _check_end(where, role, cursor + length, data_size)
        result[role] = [cursor, length, None]
        cursor += length
    return result


def _checksum_groups(checksums: object, entries: list[dict], max_memory: int
                     ) -> tuple[list[tuple[int, int, int, int, int]], list[int]]:
    """The compact index's groups, checked: [tensor count, CRC-32] each, at least one
    tensor a group, covering every tensor once in order; each group's bytes within
    ``max_memory`` (a tensor's read holds its group). Returns the groups as (offset, length,
    CRC-32, first tensor, count) and each tensor's group."""
    if not isinstance(checksums, list) or len(checksums) > max(len(entries), 1):
        raise CorruptFileError("checksums must be a list of at most one group a tensor.")
    groups, group_of, first, offset = [], [], 0, 0
    for g, spec in enumerate(checksums):
        if not (isinstance(spec, list) and len(spec) == 2 and all(map(is_int, spec))
                and 1 <= spec[0] <= len(entries) - first and 0 <= spec[1] < 1 << 32):
            raise CorruptFileError(
                f"checksum group {g + 1} must be [tensor count, crc32], with 1 to "
                f"{len(entries) - first} tensors (those the groups before it leave).")
        count, crc = spec
        # The compact index lays the tensors' sections out in order from 0: a group begins
        # where the one before it ends.
        length = sum(length for entry in entries[first:first + count]
                     for _, length, _ in entry["sections"].values())
        if count > 1 and length > CHECKSUM_GROUP_BYTES:  # a read of one tensor is bounded
            raise CorruptFileError(
                f"checksum group {g + 1}: {count} tensors of {length} bytes; a group of more "
                f"than one tensor holds at most {CHECKSUM_GROUP_BYTES} bytes.")
        if length > max_memory:
            raise CorruptFileError(
                f"checksum group {g + 1}: its {length} bytes exceed the memory limit of "
                f"{max_memory}; raise max_memory if the file is trusted.")
        groups.append((offset, length, crc, first, count))
        group_of += [g] * count
        first += count
        offset += length
    if first != len(entries):
        raise CorruptFileError(f"the checksum groups cover {first} of the {len(entries)} "
                               "tensors; each must be in one.")
    return groups, group_of


def _section_ranges(entry: dict, data_size: int) -> dict[str, tuple[int, int, int]]:
    where = f"tensor {entry['name']!r}" if "name" in entry else f"file {entry['path']!r}"
    result = {}
    for role, spec in _sections_object(entry, where).items():
        if not (isinstance(spec, list) and len(spec) == 3 and all(map(is_int, spec))):
            raise CorruptFileError(f"{where}: section {role!r} must be [offset, length, crc32].")
        offset, length, crc = spec
        if offset < 0 or length < 0 or not 0 <= crc < 1 << 32:
            raise CorruptFileError(f"{where}: section {role!r} has a negative or invalid field.")
        _check_end(where, role, offset + length, data_size)
        result[role] = (offset, length, crc)
    return result


def _sections_object(entry: dict, where: str) -> dict:
    """An entry's ``sections``, checked to be an object of at most MAX_SECTIONS_PER_TENSOR."""
    sections = entry.get("sections")
    if not isinstance(sections, dict) or len(sections) > MAX_SECTIONS_PER_TENSOR:
        raise CorruptFileError(
            f"{where}: sections must be an object of at most {MAX_SECTIONS_PER_TENSOR} entries."
        )
    return sections


def _check_end(where: str, role: str, end: int, data_size: int) -> None:
    if end > data_size:
        raise CorruptFileError(
            f"{where}: section {role!r} ends at {end}, past the end of the data ({data_size} "
            "bytes); the file is truncated or damaged."
        )


def read_dna_file(
    path: str | os.PathLike, max_memory: int = DEFAULT_MAX_MEMORY, verify: bool = True
) -> DnaFile:
    """Read and validate a .dna file's header and layout, without decoding it.

    ``verify`` also streams through every section to check its CRC-32 now (memory: one
    chunk); sections are checked again whenever they are read. Raises ModelFileError
    (CorruptFileError for a damaged or malformed file).
    """
    path = Path(path)
    try:
        # A FIFO or device would block or never end: only regular files are read.
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise ModelFileError(f"{path} is not a regular file.")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _read(f, path, size, max_memory, verify)
    except IsADirectoryError as exc:
        raise ModelFileError(f"{path} is a folder, not a .dna file.") from exc
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path} does not exist.") from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}.") from exc


def _read(f: Any, path: Path, size: int, max_memory: int, verify: bool) -> DnaFile:
    start = f.read(12)
    if len(start) < 12 or start[:8] != MAGIC:
        what = "is empty (0 bytes)" if size == 0 else (
            "is not a .dna file (its first bytes are not the magic)")
        raise ModelFileError(f"{path} {what}; give a file written by `weightdna compress`.")
    (version,) = struct.unpack("<I", start[8:])
    if version not in READABLE_VERSIONS:
        newer = " by a newer weightdna" if version > VERSION else ""
        raise ModelFileError(
            f"{path} is .dna format version {version}, written{newer}; this reader knows "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}."
        )
    prefix = start + f.read(PREFIX.size - 12)
    if len(prefix) < PREFIX.size:
        raise CorruptFileError(f"{path}: the file ends inside its prefix.")
    _, _, header_len, inflated_len, header_crc = PREFIX.unpack(prefix)
    if not 1 <= header_len <= MAX_HEADER_BYTES or PREFIX.size + header_len > size:
        raise CorruptFileError(
            f"{path}: header length {header_len} is out of bounds (limit {MAX_HEADER_BYTES}, "
            f"file {size} bytes); the file is truncated or damaged."
        )
    if not 1 <= inflated_len <= MAX_HEADER_BYTES:
        raise CorruptFileError(
            f"{path}: the inflated header length {inflated_len} is out of bounds "
            f"(1 to {MAX_HEADER_BYTES}); the file is damaged."
        )
    if HEADER_MEMORY_FACTOR * inflated_len > max_memory:
        raise CorruptFileError(
            f"{path}: parsing a header of {inflated_len} bytes could need "
            f"{HEADER_MEMORY_FACTOR * inflated_len} bytes, over the memory limit of "
            f"{max_memory}."
        )
    raw = f.read(header_len)
    if len(raw) != header_len:
        raise CorruptFileError(f"{path}: the file ends inside the header.")
    if zlib.crc32(raw) != header_crc:
        raise CorruptFileError(f"{path}: the header checksum does not match; the file is damaged.")
    try:
        header = _parse_header(_inflate_header(raw, inflated_len, version), version)
        data_size = size - PREFIX.size - header_len
        entries, files = header["tensors"], header["files"]
        compact = "checksums" in header
        names: set[str] = set()
        layout: list[tuple[int, int, int, str]] = []
        checks: list[tuple[int, int, int, str]] = []  # (offset, length, crc, what)
        cursor = 0
        for i, entry in enumerate(entries):
            name, _, _ = check_entry(entry, max_memory)
            if name in names:
                raise CorruptFileError(f"two tensors are called {name!r}.")
            names.add(name)
            if compact:
                entry["sections"] = _compact_ranges(entry, cursor, data_size)
                cursor += sum(length for _, length, _ in entry["sections"].values())
            ranges = entry["sections"] if compact else _section_ranges(entry, data_size)
            for role, (offset, length, crc) in ranges.items():
                layout.append((offset, length, i, role))
                if not compact:
                    checks.append((offset, length, crc, _section_what(name, role)))
        groups, group_of = (_checksum_groups(header["checksums"], entries, max_memory)
                            if compact else ([], []))
        checks += [(offset, length, crc, _group_what(entries, g, len(groups), first, count))
                   for g, (offset, length, crc, first, count) in enumerate(groups)]
        paths: set[str] = set()
        earlier = prefixes = 0  # payload bytes of the files so far; of the prefixes
        for j, entry in enumerate(files):
            path_in_model = check_file_entry(entry, max_memory, version)
            if path_in_model in paths:
                raise CorruptFileError(f"two files are called {path_in_model!r}.")
            paths.add(path_in_model)
            payload = filecoding.payload_bytes(entry)
            if entry.get("prefix"):
                _check_prefix(path_in_model, j, earlier, payload + 2 * entry["bytes"],
                              prefixes, max_memory)
                prefixes += earlier
            earlier += payload
            for role, (offset, length, crc) in _section_ranges(entry, data_size).items():
                if length > max_memory:
                    raise CorruptFileError(
                        f"file {path_in_model!r}: its {length} bytes exceed the memory limit "
                        f"of {max_memory}; raise max_memory if the file is trusted.")
                if "ppmd" in entry:
                    _check_ppmd_section(entry, length, max_memory)
                layout.append((offset, length, len(entries) + j, role))
                checks.append((offset, length, crc, f"file {path_in_model!r}"))
        owners = entries + files
        layout.sort()
        cursor = 0
        for offset, length, i, role in layout:
            if offset != cursor:
                what = "a gap before" if offset > cursor else "an overlap at"
                owner = (f"tensor {owners[i]['name']!r}" if i < len(entries)
                         else f"file {owners[i]['path']!r}")
                raise CorruptFileError(
                    f"there is {what} section {role!r} of {owner} "
                    f"(offset {offset}, expected {cursor})."
                )
            cursor += length
        if cursor != data_size:
            raise CorruptFileError(
                f"the sections cover {cursor} bytes but the data area holds {data_size}; "
                "the file is truncated or has trailing bytes."
            )
        for entry in entries:
            held = sum(length for _, length, _ in entry["sections"].values())
            if held > max_memory:
                raise CorruptFileError(
                    f"tensor {entry['name']!r}: its {held} bytes of sections exceed the memory "
                    f"limit of {max_memory}; raise max_memory if the file is trusted."
                )
    except CorruptFileError as exc:
        raise CorruptFileError(f"{path}: {exc}") from exc

    if verify:
        _verify_checksums(f, path, checks)
    return DnaFile(
        path=path,
        version=version,
        metadata=header["metadata"],
        entries=entries,
        header_bytes=PREFIX.size + header_len,
        file_bytes=size,
        files=files,
        groups=groups,
        group_of=group_of,
    )
