"""Output paths of the commands, checked before any work starts."""

from __future__ import annotations

from pathlib import Path

from weightdna.atomic import check_writable
from weightdna.errors import OutputExistsError


def check_output(path: str | Path, force: bool) -> Path:
    """The output path, refusing to replace an existing file unless ``force``, and one that
    cannot be written (read-only folder, no permission): checked before the work, so a
    command that encodes for minutes does not fail only at its end."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a directory; give a file name")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force to overwrite it")
    check_writable(path)
    return path
