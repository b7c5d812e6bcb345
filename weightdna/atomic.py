"""Atomic output: a file appears whole at its final path or not at all.

Every writer in the package (engine models, safetensors, .dna files, checkpoints, reports)
goes through :func:`atomic_output`. Standard library only, so the NumPy engine may use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from weightdna.errors import OutputExistsError

# Read once: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file beside ``path``; on success fsync it and move it into place.

    overwrite: when False an existing ``path`` raises OutputExistsError, checked again at
    the moment of the move (a hard link fails if the name exists), so nothing is clobbered.
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path} exists; use --force (overwrite=True) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_without_clobbering(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _move_without_clobbering(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # unlike rename, fails if path appeared meanwhile: no race
    except FileExistsError as exc:
        raise OutputExistsError(
            f"{path} exists; use --force (overwrite=True) to replace it."
        ) from exc
    except OSError:  # a file system without hard links
        if path.exists():
            raise OutputExistsError(
                f"{path} exists; use --force (overwrite=True) to replace it."
            ) from None
        os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text through :func:`atomic_output` (replacing an existing file)."""
    with atomic_output(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def save_figure_atomic(fig: object, path: str | os.PathLike[str], dpi: int) -> Path:
    """Save a matplotlib Figure as PNG through :func:`atomic_output`."""
    with atomic_output(path) as handle:
        fig.savefig(handle, format="png", dpi=dpi)  # type: ignore[attr-defined]
    return Path(path)
