"""Atomic output: a file appears whole at its final path or not at all.

Every writer in the package (engine models, safetensors, .dna files, checkpoints, reports)
goes through :func:`atomic_output`. Standard library only, so the NumPy engine may use it,
and the CLI may check an output (:func:`check_writable`) before loading anything heavy.

The temporary file is ``.NAME.wdna<PID>.XXXXXXXX.tmp`` beside the output. A writer killed
outright (SIGKILL, power loss) cannot remove its own; the next write into the same folder
removes every such file whose writer process no longer exists and that nobody has touched
for an hour (``STALE_SECONDS``), so a file another machine is still writing over a shared
folder is left alone.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from weightdna.errors import InvalidInputError, OutputError, OutputExistsError

# Read once: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)

STALE_SECONDS = 3600
_TEMP_NAME = re.compile(r"^\..+\.wdna(\d+)\.[A-Za-z0-9_]+\.tmp$")
# Errors of the disk rather than of the code: raised by a write anywhere in the body.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


@contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = True,
                  durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file beside ``path``; on success fsync it and move it into place.

    overwrite: when False an existing ``path`` raises OutputExistsError, checked again at
    the moment of the move (a hard link fails if the name exists), so nothing is clobbered.
    durable: False moves it into place without the fsync: a killed process leaves it whole
    (the page cache outlives the process), a machine that crashes may leave it empty or
    cut, so only for a file whose reader detects that and makes it again (a compress's
    work folder: `weightdna.codec.resume`).
    On any error the temporary file is removed and ``path`` is left as it was. A folder that
    cannot be written, a full disk or a missing permission raise OutputError (one line).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path} exists; use --force (overwrite=True) to replace it.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp",
                                        dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from exc
    tmp = Path(tmp_name)
    try:
        try:
            # Closing flushes what a failed write left in the buffer and fails the same way,
            # so the whole block is watched, not only the body.
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
        except OSError as exc:
            if exc.errno in _DISK_ERRNOS and exc.filename is None:
                raise output_error(path, exc) from exc
            raise
        try:
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.chmod(tmp, 0o666 & ~_UMASK)
            if overwrite:
                os.replace(tmp, path)
            else:
                _move_without_clobbering(tmp, path)
        except OSError as exc:
            raise output_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


# The form of an output that is a folder: a name ending in a slash, or an existing folder.
FOLDER = "/"


def output_form(path: str | os.PathLike[str], forms: Mapping[str, str]) -> str:
    """The form an output name asks for: the key of ``forms`` that matches it, a suffix
    (``".safetensors"``; case-insensitive, the longest first, so ``".dna.pt"`` before
    ``".pt"``) or :data:`FOLDER` for a name ending in a slash or naming an existing folder.

    forms: {suffix or FOLDER: what is written in that form}, listed in the error that any
    other name gets (InvalidInputError).
    """
    text = os.fspath(path)
    is_folder = text.endswith(("/", os.sep)) or Path(text).is_dir()
    if is_folder and FOLDER in forms:
        return FOLDER
    if not is_folder:
        name = Path(text).name.lower()
        for suffix in sorted((f for f in forms if f != FOLDER), key=len, reverse=True):
            if name.endswith(suffix.lower()) and len(name) > len(suffix):
                return suffix
    accepted = "; ".join(f"{'DIR/' if form == FOLDER else 'NAME' + form} ({what})"
                         for form, what in forms.items())
    if is_folder:
        raise InvalidInputError(f"{text} is a directory (a folder), but this output is a file: "
                                f"give a name of the form {accepted}.")
    raise InvalidInputError(f"cannot tell what to write to {text!r}: an output name must be one "
                            f"of {accepted}.")


def check_output(path: str | os.PathLike[str], overwrite: bool,
                 forms: Mapping[str, str] | None = None) -> Path:
    """The output path, checked before any work starts, so that a command that works for
    minutes does not fail only at its end: its name has one of the ``forms``
    (:func:`output_form`; None: any file name, not a folder); it does not exist (a folder:
    holds nothing) unless ``overwrite``; and it can be written (read-only folder, no
    permission: OutputError). Missing folders on the way are not an error: every writer
    creates them (:func:`atomic_output`)."""
    form = output_form(path, forms if forms is not None else {"": "a file"})
    path = Path(path)
    if form == FOLDER:
        if path.exists() and not path.is_dir():
            raise OutputExistsError(f"{path} is a file; give a folder, or a file name with "
                                    "a suffix.")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise OutputExistsError(f"the folder {path} is not empty; pass --force "
                                    "(overwrite=True) to write into it.")
        check_writable(path / ".probe")
        return path
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --force (overwrite=True) to overwrite it.")
    check_writable(path)
    return path


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise OutputError unless a file can be created at ``path`` now: its folder (or the
    nearest one that exists, for folders still to be made) accepts a new file.

    Creating one is the only reliable test (os.access ignores read-only mounts for some
    file systems and says yes to root everywhere); the probe is removed at once.
    """
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise output_error(path, exc) from exc


def output_error(path: Path, exc: OSError) -> OutputError:
    """The one-line error for an OSError met while writing ``path``: what failed and what to
    do about it."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free some space or write elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose an output in a folder you can write to"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        advice = "a file stands where a folder of the output path should be; choose another path"
    else:
        advice = "check the output path"
    # The file that failed, unless it is the output, its folder or our temporary beside it.
    failed = Path(exc.filename) if exc.filename else None
    where = "" if failed in (None, path, path.parent) or failed.parent == path.parent else (
        f" ({failed})")
    return OutputError(f"cannot write {path}: {reason}{where}; {advice}.")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of writers that died in ``folder`` (see the module's
    docstring for the rule); return them. Errors are ignored: cleaning is a courtesy."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or _running(int(match.group(1))):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_SECONDS:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.wdna{os.getpid()}."


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process, alive
        return True
    return True


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
