"""What a compress keeps for the whole model, kept on disk instead of in memory.

A compress codes every tensor before it writes the file (the header, which precedes the
sections, names them all), and its rate control weighs every tensor's sample at once: held
in memory, both grow with the model (about 0.5 byte per weight at 4 bits/weight, and 4 MB
of float32 samples per matrix). A `Spill` keeps them in an unnamed temporary file beside
the output, and the driver holds only where each lies (`SpilledSections`, `SpilledArray`);
`weightdna.codec.container.write_dna_file` copies the sections into the file a block at a
time. Memory then follows the work in flight, not the model.
"""

from __future__ import annotations

import math
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightdna.atomic import output_error


class Spill:
    """An unnamed temporary file beside an output that holds what a compress keeps for the
    whole model until the file is written: the coded sections (`keep`) and the rate
    control's samples (`keep_array`), so that it holds their lengths and checksums, not
    their bytes. Appended to only; the file vanishes when closed, and with the process if
    it is killed (``O_TMPFILE``; elsewhere a name unlinked at once)."""

    COPY_BLOCK = 1 << 20

    def __init__(self, beside: str | os.PathLike) -> None:
        folder = Path(beside).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.file = tempfile.TemporaryFile(dir=folder)
        except OSError as exc:
            raise output_error(Path(beside), exc) from exc
        self.size = 0
        self.path = Path(beside)

    def keep(self, sections: Mapping[str, bytes]) -> SpilledSections:
        """``sections`` written at the file's end; what stands for them from now on."""
        ranges = {}
        for role, blob in sections.items():
            blob = bytes(blob) if not isinstance(blob, bytes) else blob
            ranges[str(role)] = (self._append(memoryview(blob)), len(blob), zlib.crc32(blob))
        return SpilledSections(self, ranges)

    def keep_array(self, array: np.ndarray) -> SpilledArray:
        """``array`` written at the file's end; what stands for it from now on."""
        array = np.ascontiguousarray(array)
        at = self._append(memoryview(array.reshape(-1)).cast("B"))
        return SpilledArray(self, at, array.dtype, array.shape)

    def _append(self, view: memoryview) -> int:
        """``view`` written at the file's end (a write may take part of it); its offset."""
        at = done = self.size
        try:
            while done < at + len(view):
                done += os.pwrite(self.file.fileno(), view[done - at :], done)
        except OSError as exc:
            raise output_error(self.path, exc) from exc
        self.size = done
        return at

    def read_into(self, view: memoryview, offset: int) -> None:
        """``len(view)`` bytes from ``offset`` into ``view``."""
        done = 0
        while done < len(view):
            got = os.preadv(self.file.fileno(), [view[done:]], offset + done)
            if not got:
                raise OSError(f"the spill file beside {self.path} ends early")
            done += got

    def read(self, offset: int, length: int) -> bytes:
        blob = bytearray(length)
        self.read_into(memoryview(blob), offset)
        return bytes(blob)

    def copy(self, offset: int, length: int, out: Any) -> None:
        """``length`` bytes from ``offset`` written to the file ``out``, a block at a time."""
        while length:
            blob = self.read(offset, min(length, self.COPY_BLOCK))
            out.write(blob)
            offset += len(blob)
            length -= len(blob)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpilledSections(Mapping):
    """One tensor's sections in a `Spill`: {role: bytes}, read when asked; their
    lengths and CRC-32s held here. Pickled (to a worker) as the plain dict of bytes."""

    def __init__(self, spill: Spill, ranges: dict[str, tuple[int, int, int]]) -> None:
        self.spill, self.ranges = spill, ranges

    def __getitem__(self, role: str) -> bytes:
        offset, length, _ = self.ranges[role]
        return self.spill.read(offset, length)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    @property
    def nbytes(self) -> int:
        return sum(length for _, length, _ in self.ranges.values())

    def __reduce__(self) -> tuple:
        return dict, (dict(self),)


def sections_bytes(sections: Mapping[str, bytes]) -> int:
    """The bytes of a tensor's sections (a spilled one's without reading them)."""
    if isinstance(sections, SpilledSections):
        return sections.nbytes
    return sum(len(b) for b in sections.values())


class SpilledArray:
    """An array in a `Spill`: its shape and dtype here, its values read (a fresh, writable
    copy) by ``np.asarray``; pickled as that array."""

    def __init__(self, spill: Spill, offset: int, dtype: np.dtype, shape: tuple[int, ...]
                 ) -> None:
        self.spill, self.offset, self.dtype, self.shape = spill, offset, dtype, shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        array = np.empty(self.shape, self.dtype)
        self.spill.read_into(memoryview(array.reshape(-1)).cast("B"), self.offset)
        return array if dtype is None else array.astype(dtype, copy=False)

    def __reduce__(self) -> tuple:
        return np.asarray(self).__reduce__()
