"""A compress that can be killed and resumed: its tasks' results kept in a work folder.

Beside the output ``model.dna`` a resumable compress keeps ``model.dna.work/``: a manifest
(the source file's path, size and modification time, and the settings) and one file per
finished task (a tensor's first pass, analysis, coding at a chosen step, or per-tensor
coding), named by a digest of the task and its arguments. ``--resume`` runs the same
compress again; every task whose result is in the folder is read back instead of run, so
only what is missing is done, and the file is byte-identical to an unbroken run's (the
same results, used in the same order). The folder is removed when the output is written,
and also after a refused request (a user's error: nothing to resume); a killed run
leaves it.

Results are stored without pickle: a JSON tree in which arrays and bytes are named, the
arrays in the same ``.npz`` (``allow_pickle=False``), and dataclasses only of the few
types listed here, rebuilt field by field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from weightdna.atomic import atomic_output, write_text_atomic
from weightdna.codec.prediction import Prediction
from weightdna.codec.ratecontrol import Candidate, Choice, Factored, Target, TensorCandidates
from weightdna.codec.workers import Runner, Task
from weightdna.errors import InvalidInputError
from weightdna.weights import ModelWeights, TensorInfo

MANIFEST = "manifest.json"
# The tasks whose results are kept (`weightdna.codec.compress`): the work; not the
# samples taken again between rounds, nor the zeroed shares of the report.
KEPT_TASKS = frozenset({"_first_pass", "_analyse", "_encode", "_meet_one", "_measure_rows",
                        "_analyse_rows", "_prepare_rows", "_encode_rows"})
FORMAT = 3  # 2: `_encode` returns its zeroed share beside the coding; 3: `_encode_rows`
# returns its rows' symbols entropy-coded (format version 16)
# The dataclasses a result may hold, rebuilt by name (nothing else is ever constructed).
_TYPES = {cls.__name__: cls for cls in (TensorCandidates, Candidate, Prediction, TensorInfo,
                                        Choice, Target, Factored)}


def work_folder(output: Path) -> Path:
    """Where the compress of ``output`` keeps its finished tasks."""
    return output.with_name(output.name + ".work")


def _pack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, its arrays and bytes moved to ``arrays``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):  # np.float64 too
        return {"float": repr(float(value))}  # nan and inf too; repr round-trips exactly
    if isinstance(value, np.ndarray | bytes | bytearray):
        key = f"a{len(arrays)}"
        arrays[key] = (np.frombuffer(bytes(value), dtype=np.uint8)
                       if not isinstance(value, np.ndarray) else value)
        return {"array" if isinstance(value, np.ndarray) else "bytes": key}
    if isinstance(value, np.generic):
        return _pack(value.item(), arrays)
    if isinstance(value, list | tuple):
        return {"list" if isinstance(value, list) else "tuple":
                [_pack(v, arrays) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("only string keys are stored")
        return {"dict": {k: _pack(v, arrays) for k, v in value.items()}}
    if dataclasses.is_dataclass(value):  # rebuilt only if one of _TYPES
        return {"type": type(value).__name__,
                "fields": {f.name: _pack(getattr(value, f.name), arrays)
                           for f in dataclasses.fields(value)}}
    raise TypeError(f"cannot store a {type(value).__name__}")


def _unpack(tree: Any, arrays: Any) -> Any:
    if tree is None or isinstance(tree, bool | int | str):
        return tree
    kind, body = next(iter(tree.items()))
    if kind == "float":
        return float(body)
    if kind == "array":
        return arrays[body]
    if kind == "bytes":
        return arrays[body].tobytes()
    if kind in ("list", "tuple"):
        items = [_unpack(v, arrays) for v in body]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _unpack(v, arrays) for k, v in body.items()}
    if "type" in tree:
        kind, body = "type", tree["type"]
    if kind == "type":
        cls = _TYPES.get(body) if isinstance(body, str) else None
        if cls is None:
            raise ValueError("unknown type")
        fields = {k: _unpack(v, arrays) for k, v in tree["fields"].items()}
        return cls(**fields)
    raise ValueError(f"unknown node {kind!r}")


def _digest(task: Task, args: tuple) -> str:
    """A name for the task and its arguments (the same for the same work)."""
    arrays: dict[str, np.ndarray] = {}
    tree = json.dumps([task.__module__, task.__qualname__, _pack(args, arrays)],
                      sort_keys=True).encode()
    h = hashlib.sha256(tree)
    for key in sorted(arrays, key=lambda k: int(k[1:])):
        array = np.ascontiguousarray(arrays[key])
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()[:40]


class WorkFolder:
    """The finished tasks of one compress (see the module docstring)."""

    def __init__(self, output: Path, weights: ModelWeights, settings: dict,
                 resume: bool) -> None:
        self.path = work_folder(output)
        source = Path(weights.path)
        # A folder's files, less hidden ones (an output written into it leaves its
        # temporary file there while it is written).
        stat = [source.stat()] if source.is_file() else [p.stat() for p in sorted(
            source.iterdir()) if p.is_file() and not p.name.startswith(".")
            and p != output] if source.is_dir() else []
        self.manifest = {
            "format": FORMAT,
            "source": str(source.resolve()) if source.exists() else str(source),
            "source_files": [[s.st_size, s.st_mtime_ns] for s in stat],
            "settings": settings,
        }
        manifest = self.path / MANIFEST
        if resume:
            if not manifest.is_file():
                raise InvalidInputError(
                    f"nothing to resume: {self.path} does not exist (no unfinished compress "
                    f"of {output}); run without --resume.")
            try:
                found = json.loads(manifest.read_text())
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"{manifest} is unreadable ({exc}); run without "
                                        "--resume to start over.") from None
            if found != json.loads(json.dumps(self.manifest)):
                raise InvalidInputError(
                    f"{self.path} is from a compress of another source or with other "
                    "settings (or the source changed since); run with the same model and "
                    "options, or without --resume to start over.")
            return
        if self.path.exists():
            if not manifest.is_file():
                raise InvalidInputError(f"{self.path} exists and is not a compress's work "
                                        "folder; move it away.")
            shutil.rmtree(self.path)  # an unfinished run's, not asked to resume: start over
        self.path.mkdir(parents=True)
        write_text_atomic(manifest, json.dumps(self.manifest, indent=1))

    def has(self, key: str) -> bool:
        """Whether a result is stored under ``key``."""
        return (self.path / f"{key}.npz").is_file()

    def load(self, key: str) -> tuple[bool, Any]:
        """(True, the stored result) or (False, None)."""
        file = self.path / f"{key}.npz"
        if not file.is_file():
            return False, None
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files if k != "tree"}
                tree = json.loads(data["tree"].tobytes().decode())
            return True, _unpack(tree, arrays)
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            # A damaged entry (cut or empty after a crash: `store`; every array's CRC-32
            # is checked as it is read) is done again.
            return False, None

    def store(self, key: str, result: Any) -> None:
        """``result`` kept under ``key``: whole or not at all under its name, not synced
        to the disk (a crash of the machine, not of the process, may leave it damaged:
        `load` does it again), so that the driver does not wait on the disk between its
        workers' results, and a folder removed at the end may never reach the disk."""
        arrays: dict[str, np.ndarray] = {}
        tree = json.dumps(_pack(result, arrays)).encode()
        with atomic_output(self.path / f"{key}.npz", durable=False) as f:
            np.savez(f, tree=np.frombuffer(tree, dtype=np.uint8), **arrays)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ResumableRunner(Runner):
    """``runner``'s results, each kept in ``folder`` as it comes and read back from there
    when a task has been done before."""

    def __init__(self, runner: Runner, folder: WorkFolder) -> None:
        super().__init__(runner.weights)
        self.runner, self.folder = runner, folder
        self.workers = runner.workers

    def map(self, task: Task, tasks: Iterable[tuple]) -> Iterator[Any]:
        if task.__name__ not in KEPT_TASKS:  # cheap to do again: not stored
            yield from self.runner.map(task, tasks)
            return
        if type(self.runner) is Runner:
            # In this process, one task at a time: each task's arguments are made only
            # after the results before it are used (a sequential calibration's Hessians
            # depend on the tensors coded before).
            for args in tasks:
                key = _digest(task, args)
                found, result = self.folder.load(key)
                if not found:
                    result = task(self.weights, *args)
                    self.folder.store(key, result)
                yield result
            return
        tasks = list(tasks)
        keys = [_digest(task, args) for args in tasks]
        # Read back as they are handed on, not all first: memory follows the work in
        # flight here too. One that turns out damaged is done again, here.
        stored = [self.folder.has(key) for key in keys]
        missing = [args for args, found in zip(tasks, stored, strict=True) if not found]
        fresh = self.runner.map(task, missing)
        for key, args, found in zip(keys, tasks, stored, strict=True):
            if found:
                found, result = self.folder.load(key)
                if not found:
                    result = task(self.weights, *args)
                    self.folder.store(key, result)
            else:
                result = next(fresh)
                self.folder.store(key, result)
            yield result

    def run(self, jobs: Iterable[tuple[Task, tuple]]) -> Iterator[tuple[int, Any]]:
        """`Runner.run`: the jobs done before read back (as they are handed on, after
        the missing ones are under way), the missing ones run by ``runner`` and kept."""
        jobs = list(jobs)
        keys = [_digest(task, args) if task.__name__ in KEPT_TASKS else None
                for task, args in jobs]
        if type(self.runner) is Runner:  # in this process: in order, as `map`
            for i, ((task, args), key) in enumerate(zip(jobs, keys, strict=True)):
                yield i, self._one(task, args, key)
            return
        stored = [key is not None and self.folder.has(key) for key in keys]
        missing = [i for i, found in enumerate(stored) if not found]
        fresh = self.runner.run(jobs[i] for i in missing)
        pending = [i for i, found in enumerate(stored) if found]
        for position, result in fresh:
            i = missing[position]
            if keys[i] is not None:
                self.folder.store(keys[i], result)
            yield i, result
            if pending:  # one kept result per fresh one while the workers work
                i = pending.pop()
                yield i, self._one(*jobs[i], keys[i])
        while pending:
            i = pending.pop()
            yield i, self._one(*jobs[i], keys[i])

    def _one(self, task: Task, args: tuple, key: str | None) -> Any:
        """A kept result (None: not kept), or the task run here and kept."""
        if key is not None:
            found, result = self.folder.load(key)
            if found:
                return result
        result = task(self.weights, *args)
        if key is not None:
            self.folder.store(key, result)
        return result

    def close(self) -> None:
        self.runner.close()


def settings_of(**settings: Any) -> dict:
    """The settings as the manifest keeps them (JSON; arrays by digest)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _pack(settings, arrays)
    digests = {k: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
               for k, a in arrays.items()}
    return json.loads(json.dumps({"tree": tree, "arrays": digests}))
