"""Atomic output: a file appears whole at its final path or not at all.

Every writer in the package (engine models, safetensors, .dna files, checkpoints, reports)
goes through :func:`atomic_output`; a command that writes several files into a folder (a
model folder from `weightdna decompress X.dna -o DIR/`) writes them through
:func:`atomic_folder`, so that they appear together or not at all. Standard library only,
so the NumPy engine may use it, and the CLI may check an output (:func:`check_writable`)
before loading anything heavy.

The temporary file is ``.NAME.wdna<PID>.XXXXXXXX.tmp`` beside the output. A writer killed
outright (SIGKILL, power loss) cannot remove its own; the next write into the same folder
removes every such file whose writer process no longer exists and that nobody has touched
for an hour (``STALE_SECONDS``), so a file another machine is still writing over a shared
folder is left alone. :func:`atomic_folder`'s staging folders are named and removed alike.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
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


@contextmanager
def atomic_folder(folder: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder; every file written beneath it appears in ``folder``
    under the same relative path when the block ends: all of them, or none.

    ``folder`` missing: the staging folder is made beside it and renamed to it (one step).
    ``folder`` existing: the staging folder is made in it (hidden, `remove_stale_temporaries`
    clears one a killed writer left) and each file is moved into place; an error meanwhile
    (a file that appeared, a full disk) moves every file already placed back out and puts
    back the files they replaced, so ``folder`` is left as it was. A file is replaced by a
    rename, never written over, so a file linked to another name (an input) is not changed.
    overwrite: when False a file that exists in ``folder`` raises OutputExistsError and
    nothing is moved. An error in the block, or while moving, removes the staging folder and
    the folders it made; OSErrors come out as OutputError (one line).
    Disk: the files of the block, and the files they replace until the last is moved.
    """
    folder = Path(folder)
    made = []  # folders made on the way to ``folder``, removed again on failure
    staging: Path | None = None
    try:
        made = _make_folders(folder.parent)
        fresh = not folder.exists()
        place = folder.parent if fresh else folder
        remove_stale_temporaries(place)
        staging = Path(tempfile.mkdtemp(prefix=_temp_prefix(folder), suffix=".tmp", dir=place))
    except OSError as exc:
        _remove_folders(made)
        raise output_error(folder, exc) from exc
    try:
        yield staging
        try:
            os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp's is private (0700)
            if fresh and _rename_folder(staging, folder):
                return
            _merge_folder(staging, folder, overwrite)
        except OSError as exc:
            if isinstance(exc, OutputError):
                raise
            raise output_error(folder, exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_folders(made)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _rename_folder(staging: Path, folder: Path) -> bool:
    """Rename ``staging`` to ``folder`` if it is still missing (or an empty folder: made
    meanwhile); False where another file or folder took the name."""
    try:
        os.rename(staging, folder)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            return False
        raise
    return True


def _merge_folder(staging: Path, folder: Path, overwrite: bool) -> None:
    """Move every file under ``staging`` to its place in ``folder``, all or none (see
    :func:`atomic_folder`); the replaced files wait in a second staging folder meanwhile."""
    files = sorted(p for p in staging.rglob("*") if p.is_symlink() or not p.is_dir())
    targets = [folder / p.relative_to(staging) for p in files]
    if not overwrite:
        for target in targets:
            if target.exists() or target.is_symlink():
                raise OutputExistsError(f"{target} exists; use --force (overwrite=True) to "
                                        "replace it.")
    replaced = Path(tempfile.mkdtemp(prefix=_temp_prefix(folder), suffix=".tmp", dir=folder))
    placed: list[tuple[Path, Path | None, bool]] = []  # (target, its old file, moved in)
    made: list[Path] = []
    try:
        for number, (source, target) in enumerate(zip(files, targets, strict=True)):
            made += _make_folders(target.parent)
            old = None
            if target.exists() or target.is_symlink():
                if target.is_dir() and not target.is_symlink():
                    raise OutputError(f"cannot write {target}: a folder stands there; remove "
                                      "it or choose another output folder.")
                old = replaced / str(number)
                os.rename(target, old)
            placed.append((target, old, False))
            if overwrite:
                os.rename(source, target)
            else:
                _move_without_clobbering(source, target)
            placed[-1] = (target, old, True)
    except BaseException:
        for target, old, moved_in in reversed(placed):
            try:
                if moved_in:
                    os.unlink(target)
                if old is not None:
                    os.rename(old, target)
            except OSError:
                continue  # best effort: the error that stopped the move is what is raised
        _remove_folders(made)
        raise
    finally:
        shutil.rmtree(replaced, ignore_errors=True)


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and the folders missing on its way; return those made, outermost
    first. A file where a folder should be raises the OSError of mkdir."""
    missing = []
    while not folder.is_dir() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return missing[::-1]


def _remove_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (made by :func:`_make_folders`), innermost first, each if empty."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            continue


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
        check_writable(path / ".probe", shown=path)
        return path
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --force (overwrite=True) to overwrite it.")
    check_writable(path)
    return path


def check_writable(path: str | os.PathLike[str],
                   shown: str | os.PathLike[str] | None = None) -> None:
    """Raise OutputError unless a file can be created at ``path`` now: its folder (or the
    nearest one that exists, for folders still to be made) accepts a new file. ``shown``:
    the output the error names (default ``path``; a folder output's, not its probe's).

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
        raise output_error(Path(shown) if shown is not None else path, exc) from exc


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
            if entry.is_dir(follow_symlinks=False):  # an atomic_folder's staging folder
                if now - _newest_change(Path(entry.path)) < STALE_SECONDS:
                    continue
                shutil.rmtree(entry.path)
            else:
                if now - entry.stat(follow_symlinks=False).st_mtime < STALE_SECONDS:
                    continue
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _newest_change(folder: Path) -> float:
    """The latest modification time of ``folder`` and of anything beneath it."""
    newest = folder.lstat().st_mtime
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return newest


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
