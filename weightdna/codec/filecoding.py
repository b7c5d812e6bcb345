"""How a stored file's bytes are coded from format version 12 (docs/FORMAT.md, "Stored
files"): a file's zstd frame may draw on the files before it (``prefix``), and a JSON
vocabulary in it may be written as lines (``vocab``); from version 20 a payload may be
coded by PPMd instead of zstd (``"compression": "ppmd"``).

A tokenizer.json holds its vocabulary as ``"token":0,"token2":1,…``; vocab.txt holds the
same tokens one a line. Coded alone, each costs its own bytes (MiniLM: 161,921 and 99,639 at
zstd level 19). Written as lines (the ``vocab`` transform: ``token\\ntoken2\\n…``, the ids
and quotes rebuilt on reading) and compressed with the files before it as a zstd raw-content
dictionary (``prefix``), the second copy costs almost nothing.

* **payload**: what a file's frame inflates to: the file itself, or with ``vocab`` the file
  with its run of ``"L_i"<colon>i`` items (``i`` = 0, 1, …, count − 1, written in decimal,
  joined by ``<comma>``) starting at byte ``at`` replaced by the lines ``L_i\\n``. A line
  holds no newline (a JSON string cannot), so the payload splits back unambiguously.
* **prefix**: the frame was compressed with the payloads of every earlier stored file,
  concatenated in order, as a raw-content dictionary.

* **ppmd** (version 20): the payload coded by PPMd variant H as 7-Zip writes it
  (`pyppmd.Ppmd7Encoder`, a model order and memory from a small allowed set), with the
  payload's CRC-32 in the entry. On MiniLM's tokenizer.json (its vocabulary as lines) 85,428
  bytes against zstd 19's 100,343 (BENCHMARKS.md). A PPMd payload draws on no other file;
  later files' ``prefix`` still draws on it.

Every frame of this coding carries zstd's content checksum, so that a payload rebuilt
from other files than it was written against is refused, not given back changed.

The writer uses each only where it makes the file smaller, and checks that every file
comes back byte for byte before it uses them (`code_files`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import zstandard

from weightdna.codec.fields import is_int
from weightdna.codec.zstdframes import decompress_bytes
from weightdna.errors import CorruptFileError, MissingDependencyError

# The stored files' zstd level where the version-12 coding is used (level 10 otherwise, as
# before): on MiniLM's 11 files 269,095 bytes against 299,033, 0.3 s (BENCHMARKS.md).
LEVEL = 19
# A vocabulary run shorter than this is left as it is.
VOCAB_MIN_ITEMS = 256
VOCAB_KEYS = {"at", "count", "colon", "comma", "bytes"}
MAX_SEPARATOR_CHARS = 64
# The dictionaries of all prefixed files together, at most (bounds a reader's work whatever
# the number of files: each dictionary is built once per file read).
MAX_PREFIX_BYTES = 1 << 30
# The writer gives zstd only the dictionary's last bytes: level 19's window is 8 MiB, and a
# raw-content dictionary is read back from its end, so the decoder (which has all of it)
# finds the same bytes at the same distances; loading more would only cost time.
DICTIONARY_TAIL = 1 << 23
_COLON = re.compile(r"[ \t\r\n]*:[ \t\r\n]*\Z")
_COMMA = re.compile(r"[ \t\r\n]*,[ \t\r\n]*\Z")
_STRING = re.compile(rb'"((?:[^"\\\n]|\\[^\n])*)"')
_FIRST = re.compile(rb'\{[ \t\r\n]*(")(?:[^"\\\n]|\\[^\n])*"([ \t\r\n]*:[ \t\r\n]*)0')
_SEPARATOR = re.compile(rb"[ \t\r\n]*,[ \t\r\n]*")
_NUMBER_GOES_ON = b"0123456789.eE"
# PPMd (version 20): the entry's ``ppmd`` params, the model orders and memory sizes a reader
# accepts (pyppmd allocates the memory whole), and the most payload bytes it decodes.
PPMD_KEYS = {"order", "memory", "crc"}
PPMD_ORDERS = range(2, 17)
PPMD_MEMORIES = tuple(1 << k for k in range(20, 29))  # 1 MiB to 256 MiB
PPMD_MAX_BYTES = 1 << 24
# The orders the writer tries (MiniLM's tokenizer.json: 85,732 / 85,428 / 85,563 / 85,667
# bytes at 4 / 5 / 6 / 8), and its memory: this many bytes per payload byte, as a power of
# two (the model needs about 18 on it: 4 MiB codes it as 256 MiB does, 2 MiB 1.5% larger).
PPMD_WRITER_ORDERS = (4, 5, 6, 8)
PPMD_MEMORY_PER_BYTE = 32
# A PPMd coding is used only where it saves more than its entry's extra header bytes.
PPMD_ENTRY_BYTES = 48


def find_vocab(data: bytes) -> tuple[dict, bytes] | None:
    """The longest run of ``"token":i`` items (i from 0) in ``data``, as (the ``vocab``
    params, the payload), or None when there is none of VOCAB_MIN_ITEMS items."""
    best = None
    for first in _FIRST.finditer(data):
        at, colon = first.start(1), first.group(2)
        pos = first.end()
        if data[pos : pos + 1] and data[pos] in _NUMBER_GOES_ON:
            continue
        comma_match = _SEPARATOR.match(data, pos)
        if comma_match is None:
            continue
        comma = comma_match.group(0)
        if len(colon) > MAX_SEPARATOR_CHARS or len(comma) > MAX_SEPARATOR_CHARS:
            continue
        lines = [_STRING.match(data, at).group(1)]
        while True:
            item = _STRING.match(data, pos + len(comma)) if data.startswith(comma, pos) else None
            if item is None:
                break
            digits = str(len(lines)).encode()
            after = item.end() + len(colon) + len(digits)
            if not (data.startswith(colon, item.end())
                    and data.startswith(digits, item.end() + len(colon))
                    and not (data[after : after + 1] and data[after] in _NUMBER_GOES_ON)):
                break
            lines.append(item.group(1))
            pos = after
        if len(lines) >= VOCAB_MIN_ITEMS and (best is None or len(lines) > len(best[3])):
            best = (at, pos, colon, lines, comma)
    if best is None:
        return None
    at, end, colon, lines, comma = best
    payload = b"".join((data[:at], *(line + b"\n" for line in lines), data[end:]))
    params = {"at": at, "count": len(lines), "colon": colon.decode("ascii"),
              "comma": comma.decode("ascii"), "bytes": len(payload)}
    return params, payload


def check_vocab(params: object, size: int, where: str) -> dict:
    """A file entry's ``vocab`` params, checked against the file's ``size``: the keys
    VOCAB_KEYS, integers with 0 ≤ at ≤ bytes ≤ size and count ≥ 1, colon and comma a ``:``
    or ``,`` with spaces, tabs or line ends around it (at most MAX_SEPARATOR_CHARS).
    Raises CorruptFileError."""
    if not (isinstance(params, dict) and set(params) == VOCAB_KEYS):
        raise CorruptFileError(f"{where}: vocab must have the keys {sorted(VOCAB_KEYS)}.")
    at, count, payload = params["at"], params["count"], params["bytes"]
    if not (is_int(at) and is_int(count) and is_int(payload)
            and 0 <= at <= payload <= size and count >= 1):
        raise CorruptFileError(f"{where}: vocab needs integers 0 ≤ at ≤ bytes ≤ the file's "
                               "bytes and count ≥ 1.")
    for key, pattern in (("colon", _COLON), ("comma", _COMMA)):
        value = params[key]
        if not (isinstance(value, str) and len(value) <= MAX_SEPARATOR_CHARS
                and pattern.match(value)):
            raise CorruptFileError(f"{where}: vocab's {key} must be a "
                                   f"'{':' if key == 'colon' else ','}' with only spaces, "
                                   f"tabs or line ends around it, at most "
                                   f"{MAX_SEPARATOR_CHARS} characters.")
    return params


def rebuild(payload: bytes, params: dict, size: int, where: str) -> bytes:
    """The file of ``payload`` and its checked ``vocab`` params; it must be exactly
    ``size`` bytes (never built past size + the longest item)."""
    at, count = params["at"], params["count"]
    colon, comma = params["colon"].encode("ascii"), params["comma"].encode("ascii")
    if count > len(payload) - at:  # each line at least its newline
        raise CorruptFileError(f"{where}: vocab's count exceeds the lines the data holds.")
    out = bytearray(payload[:at])
    pos = at
    for i in range(count):
        end = payload.find(b"\n", pos)
        if end < 0:
            raise CorruptFileError(f"{where}: the data holds fewer vocab lines than its count.")
        if i:
            out += comma
        out += b'"'
        out += payload[pos:end]
        out += b'"'
        out += colon
        out += str(i).encode()
        pos = end + 1
        if len(out) > size:
            break
    if len(out) + len(payload) - pos != size:
        raise CorruptFileError(f"{where}: the vocab does not rebuild to exactly the file's "
                               f"{size} bytes.")
    out += payload[pos:]
    return bytes(out)


def payload_bytes(entry: dict) -> int:
    """What a (checked) file entry's frame inflates to."""
    vocab = entry.get("vocab")
    return vocab["bytes"] if isinstance(vocab, dict) else entry["bytes"]


def _ppmd_pad(order: int, size: int) -> int:
    """Zero bytes put after a PPMd stream of ``size`` payload bytes before it is decoded, so
    that the decoder never runs out of input whatever the stream holds: each symbol visits
    at most order + 1 contexts, each taking at most 2 bytes (the range decoder's
    normalisation), and its start 5. (pyppmd crashes the process when a decode needs more
    input than it was given: BENCHMARKS.md.)"""
    return 2 * (order + 2) * size + 8


def ppmd_memory(params: dict, size: int, stream: int) -> int:
    """What decoding ``size`` payload bytes from a ``stream``-byte PPMd stream under checked
    ``ppmd`` params holds at most: the model's memory, the stream as read, the stream with
    its zero padding, pyppmd's copy of what it did not read and the copy it gives back, and
    the payload."""
    pad = _ppmd_pad(params["order"], size)
    return params["memory"] + 4 * stream + 3 * pad + 2 * size


def check_ppmd_stream(params: dict, size: int, stream: int, where: str) -> None:
    """Refuse a PPMd stream of ``stream`` bytes longer than its zero padding (checked
    ``ppmd`` params, ``size`` payload bytes): the decoder reads less than the padding and
    the reader requires the whole stream read, so it could only be refused after it was
    read and copied. Raises CorruptFileError."""
    if stream > _ppmd_pad(params["order"], size):
        raise CorruptFileError(f"{where}: its PPMd stream of {stream} bytes is longer than "
                               f"any stream of {size} payload bytes; the file is damaged.")


def check_ppmd(params: object, size: int, where: str) -> dict:
    """A file entry's ``ppmd`` params, checked against its payload's ``size``: the keys
    PPMD_KEYS, an order in PPMD_ORDERS, a memory in PPMD_MEMORIES, a crc from 0 to
    2^32 − 1, a payload of 1 to PPMD_MAX_BYTES bytes. Raises CorruptFileError."""
    if not (isinstance(params, dict) and set(params) == PPMD_KEYS):
        raise CorruptFileError(f"{where}: ppmd must have the keys {sorted(PPMD_KEYS)}.")
    order, memory, crc = params["order"], params["memory"], params["crc"]
    if not (is_int(order) and order in PPMD_ORDERS):
        raise CorruptFileError(f"{where}: ppmd's order must be an integer from "
                               f"{PPMD_ORDERS.start} to {PPMD_ORDERS.stop - 1}.")
    if not (is_int(memory) and memory in PPMD_MEMORIES):
        raise CorruptFileError(f"{where}: ppmd's memory must be a power of two from "
                               f"{PPMD_MEMORIES[0]} to {PPMD_MEMORIES[-1]} bytes.")
    if not (is_int(crc) and 0 <= crc < 1 << 32):
        raise CorruptFileError(f"{where}: ppmd's crc must be an integer from 0 to 2^32 − 1.")
    if not 1 <= size <= PPMD_MAX_BYTES:
        raise CorruptFileError(f"{where}: a PPMd payload must be 1 to {PPMD_MAX_BYTES} "
                               "bytes.")
    return params


def _pyppmd(where: str):
    """The pyppmd module, or a MissingDependencyError that says how to install it."""
    try:
        import pyppmd
    except ImportError:
        raise MissingDependencyError(
            f"{where} is coded by PPMd (.dna format version 20), which needs the package "
            "pyppmd: pip install pyppmd") from None
    return pyppmd


def ppmd_decode(stream: bytes, params: dict, size: int, where: str) -> bytes:
    """The ``size`` payload bytes of a PPMd stream under checked ``ppmd`` params: all of
    the stream read, nothing after it, the range decoder finished clean, the payload's
    CRC-32 as stated. Raises CorruptFileError."""
    pyppmd = _pyppmd(where)
    order = params["order"]
    # The range decoder starts on a zero byte and a code below 2^32 − 1 (pyppmd fails
    # without an exception otherwise).
    if len(stream) < 5 or stream[0] != 0 or stream[1:5] == b"\xff" * 4:
        raise CorruptFileError(f"{where}: the PPMd stream does not start as one does.")
    pad = _ppmd_pad(order, size)
    padded = bytearray(len(stream) + pad)
    padded[:len(stream)] = stream
    decoder = pyppmd.Ppmd7Decoder(order, params["memory"])
    try:
        payload = decoder.decode(padded, size)
        unread = len(decoder.unused_data)
        finished = decoder.eof
    except (ValueError, SystemError, pyppmd.PpmdError) as exc:  # pyppmd's words for it
        raise CorruptFileError(f"{where}: the PPMd stream is corrupt ({exc}).") from None
    del padded, decoder  # the padding, before the payload is checked
    if len(payload) != size or unread != pad or not finished:
        raise CorruptFileError(f"{where}: the PPMd stream does not hold exactly the "
                               f"{size} bytes of its payload.")
    if zlib.crc32(payload) != params["crc"]:
        raise CorruptFileError(f"{where}: the PPMd payload's CRC-32 does not match; the "
                               "file is damaged.")
    return payload


def _ppmd_code(payload: bytes) -> tuple[dict, bytes] | None:
    """The payload's smallest PPMd coding over PPMD_WRITER_ORDERS, as (params, stream),
    decoded back as the reader does; None without pyppmd or for a payload PPMd may not
    code."""
    if not 1 <= len(payload) <= PPMD_MAX_BYTES:
        return None
    try:
        import pyppmd
    except ImportError:
        return None
    memory = max(PPMD_MEMORIES[0], min(PPMD_MEMORIES[-1], 1 << max(
        0, PPMD_MEMORY_PER_BYTE * len(payload) - 1).bit_length()))
    best = None
    for order in PPMD_WRITER_ORDERS:
        encoder = pyppmd.Ppmd7Encoder(order, memory)
        stream = encoder.encode(payload) + encoder.flush()
        if best is None or len(stream) < len(best[1]):
            best = ({"order": order, "memory": memory, "crc": zlib.crc32(payload)}, stream)
    try:  # as the reader will read it (never seen to fail; if it did, zstd is used)
        if ppmd_decode(best[1], best[0], len(payload), "the writer's PPMd") == payload:
            return best
    except CorruptFileError:
        pass
    return None


def decode(frame: bytes, entry: dict, dictionary: bytes | None, where: str) -> tuple[bytes, bytes]:
    """(payload, file) of a checked entry's frame; ``dictionary``: the earlier files'
    payloads where the entry has ``prefix``."""
    if entry["compression"] == "ppmd":
        payload = ppmd_decode(frame, entry["ppmd"], payload_bytes(entry), where)
    else:
        payload = decompress_bytes(frame, payload_bytes(entry), where, dictionary)
    vocab = entry.get("vocab")
    if vocab is None:
        return payload, payload
    return payload, rebuild(payload, vocab, entry["bytes"], where)


def _frame(data: bytes, dictionary: bytes | None = None) -> bytes:
    """``data`` as one zstd frame at LEVEL with its content checksum (4 bytes: a frame
    read with other files before it than it was written with fails it), drawn on
    ``dictionary`` (raw content) if given."""
    if dictionary is None:
        return zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compress(data)
    params = zstandard.ZstdCompressionParameters.from_level(
        LEVEL, source_size=len(data) + len(dictionary), write_checksum=True)
    return zstandard.ZstdCompressor(
        dict_data=zstandard.ZstdCompressionDict(dictionary,
                                                dict_type=zstandard.DICT_TYPE_RAWCONTENT),
        compression_params=params).compress(data)


def code_files(files: Sequence[tuple[dict, bytes]],
               ppmd: bool = True) -> list[tuple[dict, bytes]] | None:
    """The files (each its entry without sections, and its content) coded as versions 12
    and 20 code them: at LEVEL, a vocabulary as lines where one is found, each file against
    the earlier files' payloads where that is smaller (within MAX_PREFIX_BYTES), or, with
    ``ppmd``, its payload by PPMd where that is smaller still by more than
    PPMD_ENTRY_BYTES. None where none of ``vocab``, ``prefix`` and PPMd is used (the
    caller keeps the plain coding). Each file is decoded back and compared before it is
    used."""
    coded: list[tuple[dict, bytes]] = []
    joined = bytearray()
    work = 0
    used = False
    for entry, data in files:
        entry = dict(entry)
        payload = data
        found = find_vocab(data)
        if found is not None:
            entry["vocab"], payload = found
        frame = _frame(payload)
        if joined and work + len(joined) <= MAX_PREFIX_BYTES:
            drawn = _frame(payload, bytes(joined[-DICTIONARY_TAIL:]))
            if len(drawn) < len(frame):
                frame, entry["prefix"] = drawn, True
        by_ppmd = _ppmd_code(payload) if ppmd else None
        if by_ppmd is not None and len(by_ppmd[1]) + PPMD_ENTRY_BYTES < len(frame):
            entry.pop("prefix", None)
            entry["compression"], (entry["ppmd"], frame) = "ppmd", by_ppmd
        if entry.get("prefix"):
            work += len(joined)
        where = f"file {entry['path']!r}"
        if "vocab" in entry:
            check_vocab(entry["vocab"], len(data), where)
        back = decode(frame, entry, bytes(joined) if entry.get("prefix") else None, where)
        if back != (payload, data):  # cannot happen; the plain coding is safe
            return None
        used = used or any(key in entry for key in ("vocab", "prefix", "ppmd"))
        coded.append((entry, frame))
        joined += payload
    return coded if used else None
