"""zstd frames as the .dna format uses them: one frame per section, decoded with bounded
memory."""

from __future__ import annotations

import io

import zstandard

from weightdna.errors import CorruptFileError

ZSTD_LEVEL = 10
# Bounds the decoder's window (and so its memory) whatever a frame header claims.
MAX_WINDOW = 1 << 27
# A frame is decoded in one call (not streamed) only when it is to hold at most this many
# times its own size, plus ONE_SHOT_MIN bytes.
ONE_SHOT_RATIO, ONE_SHOT_MIN = 8, 1 << 16


def compress_bytes(data: bytes, level: int = ZSTD_LEVEL) -> bytes:
    """One zstd frame holding ``data``."""
    return zstandard.ZstdCompressor(level=level).compress(data)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_frame_size(data: bytes) -> int | None:
    """The length of the zstd frame at the start of ``data`` from its header and block
    headers (RFC 8878, section 3.1.1), or None when they do not describe one that fits."""
    if data[:4] != ZSTD_MAGIC or len(data) < 5:
        return None
    descriptor = data[4]
    single_segment = descriptor >> 5 & 1
    size = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    size += (single_segment, 2, 4, 8)[descriptor >> 6]
    while True:
        if size + 3 > len(data):
            return None
        header = int.from_bytes(data[size : size + 3], "little")
        kind, length = header >> 1 & 3, header >> 3
        if kind == 3:  # reserved
            return None
        size += 3 + (1 if kind == 1 else length)
        if header & 1:  # the last block
            break
    size += 4 * (descriptor >> 2 & 1)  # the content checksum
    return size if size <= len(data) else None


def decompress_bytes(data: bytes, expected: int, what: str,
                     dictionary: bytes | None = None) -> bytes:
    """Decompress one zstd frame that must hold exactly ``expected`` bytes and be all of
    ``data`` (docs/FORMAT.md: no skippable frame, nothing after it, an empty tensor's frame
    too).

    Reads at most ``expected + 1`` bytes through a streaming reader, so a frame that claims
    (or holds) more cannot make us allocate more; in one call instead (4 times faster on
    lanes' low bits, BENCHMARKS.md issue 15, 2026-12-05) when the frame's header states
    its content size as ``expected`` and ``expected`` is at most ONE_SHOT_RATIO times the
    frame's size (so a small forged frame cannot make us allocate much). ``dictionary``:
    the raw-content dictionary the frame was compressed with (a stored file's ``prefix``,
    version 12).
    """
    if zstd_frame_size(data) != len(data):
        raise CorruptFileError(f"{what}: the section is not exactly one zstd frame.")
    try:
        dctx = zstandard.ZstdDecompressor(
            max_window_size=MAX_WINDOW,
            dict_data=None if dictionary is None else zstandard.ZstdCompressionDict(
                dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT))
        if expected <= ONE_SHOT_RATIO * len(data) + ONE_SHOT_MIN and \
                zstandard.get_frame_parameters(data).content_size == expected:
            # zstd checks the frame's output against its stated size
            out = dctx.decompress(data, max_output_size=expected)
            if len(out) != expected:
                raise CorruptFileError(f"{what}: the zstd data holds {len(out)} bytes; "
                                       f"expected {expected}.")
            return out
        with dctx.stream_reader(io.BytesIO(data), read_across_frames=False) as reader:
            out = bytearray()
            while len(out) <= expected:
                chunk = reader.read(min(expected + 1 - len(out), 1 << 24))
                if not chunk:
                    break
                out += chunk
    except zstandard.ZstdError as exc:
        raise CorruptFileError(f"{what}: the zstd data is damaged ({exc}).") from exc
    if len(out) != expected:
        raise CorruptFileError(
            f"{what}: the zstd data holds {'more than ' if len(out) > expected else ''}"
            f"{len(out)} bytes; expected {expected}."
        )
    return bytes(out)
