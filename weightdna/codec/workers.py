"""Run the codec's per-tensor tasks in this process, on a pool of processes, or on Ray.

A task is a function of the model and a few small arguments (a tensor's name and
`TensorInfo`, a chosen step, coded bytes). In another process the model is opened there
from its path (`open_model`, once per process) and the task reads its own tensor from the
file, so weights never go through a pipe or Ray's object store: only paths, names, the
rate control's figures and samples (at most 2^20 elements of a tensor, the allocation's
input), and coded bytes do.

`Runner.map` gives the results in task order, whatever order they finish in, with at
most ``window`` tasks submitted and not yet handed back (backpressure: memory follows the
work in flight, not the model). `Runner.run` gives them as they complete, each with its
task's position, with at most ``window`` tasks running or queued: a long task then holds
up no other (an ordered map's window fills behind it and its workers wait), and one run
may mix tasks of several kinds. The caller places each result by its position, so the
file written from them is the same for any number of processes. Every process of a pool
or cluster runs its numerical libraries on one thread, so that N processes use N cores,
not N × cores.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import math
import multiprocessing
import multiprocessing.context
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.atomic import atomic_output
from weightdna.codec.container import DnaFile, read_dna_file
from weightdna.codec.dtypes import DTYPES
from weightdna.codec.tensor import row_blocks_of
from weightdna.errors import InvalidInputError, MissingDependencyError, ModelFileError
from weightdna.weights import ModelWeights, load_weights
from weightdna.weights.model import DividedWeights, divided_by_columns
from weightdna.weights.safetensors_format import header_bytes

Task = Callable[..., Any]  # task(weights, *args)
# The representations whose row blocks (`weightdna.codec.tensor.row_blocks_of`) a
# decompress decodes a task each.
ROW_BLOCKED = ("quantized", "transform")
# Model formats a worker can read one tensor of without loading the rest.
PARALLEL_FORMATS = ("safetensors", "npz")


def default_workers() -> int:
    """The cores this process may use."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if counter is not None:
        return max(1, counter() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def can_share(weights: ModelWeights) -> bool:
    """Whether other processes can open ``weights`` from its path and read one tensor (a
    `DividedWeights`: its base, the factors beside)."""
    if isinstance(weights, DividedWeights):
        return weights.base is not None and can_share(weights.base)
    return weights.format in PARALLEL_FORMATS and weights.path.exists()


def can_share_output() -> bool:
    """Whether workers can write into the file this process has open (Linux's /proc)."""
    return os.path.isdir("/proc/self/fd")


@functools.lru_cache(maxsize=4)
def open_source(kind: str, path: str, columns: str | None = None) -> ModelWeights | DnaFile:
    """The model (``kind`` "model") or .dna file ("dna") at ``path``, opened once per
    process: its header; tensors are read when a task uses them. ``columns``: a
    safetensors file of per-column factors the driver wrote (`DividedWeights`); the model
    is read divided by them."""
    if kind == "dna":
        return read_dna_file(path, verify=False)  # the driver has checked it whole
    if columns is not None:
        from safetensors.numpy import load_file

        return divided_by_columns(load_weights(path), load_file(columns))
    return load_weights(path)


def _one_thread() -> None:
    """Numerical libraries on one thread in this worker process."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - scikit-learn brings it
        pass


def _pool_worker() -> None:
    """A pool worker's start (`PoolRunner`): one thread (`_one_thread`), and its exit once
    the pool is shut down without tearing the interpreter down (torch's and numba's
    modules freed one by one: the pool's shutdown waited 1.6-3.0 s for two workers on the
    2-core box). A worker forked from the fork server exits so already."""
    _one_thread()
    # Handlers registered later run before it; by then multiprocessing has run its
    # finalizers and flushed the standard streams (`BaseProcess._bootstrap`).
    atexit.register(os._exit, 0)


# The fork server's environment (`_pool_context`): its BLAS libraries start no thread
# pools as they load (numpy's and scipy's OpenBLAS each start one otherwise), so that
# every worker is forked from a process of one thread. Workers run on one thread anyway.
_FORKSERVER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                           "MKL_NUM_THREADS": "1"}
_forkserver_lock = threading.Lock()


def _pool_context(preload: str | None) -> multiprocessing.context.BaseContext:
    """How a pool's workers start: forked from multiprocessing's fork server, which imports
    this module, torch and ``preload`` (the tasks' module) once, where the platform has
    one; else spawned, each importing them itself (about 2.3 CPU s a worker on the 2-core
    box). The server is started here, on one thread (`_FORKSERVER_ENVIRONMENT`), and
    imports the same weightdna as this process; it lives as long as this process, and
    each later pool forks from it (a server already running keeps its imports). A forked
    worker is prepared as a spawned one (this process's path, folder and main module),
    and its CPU times start at 0: the server's are its start."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    package = str(Path(__file__).resolve().parents[2])  # the folder holding weightdna/
    environment = {**_FORKSERVER_ENVIRONMENT, "PYTHONPATH": os.pathsep.join(
        p for p in (package, os.environ.get("PYTHONPATH")) if p)}
    with _forkserver_lock:
        context.set_forkserver_preload([__name__, *([preload] if preload else [])])
        saved = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)
        try:
            forkserver.ensure_running()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return context


def _call(source: tuple[str, str, str | None], task: Task, args: tuple) -> Any:
    """Run ``task`` in a worker on the model or .dna file that ``source`` (`open_source`'s
    arguments) names."""
    return task(open_source(*source), *args)


def _warm(source: tuple[str, str, str | None], module: str | None) -> int:
    """A worker made ready for tasks: ``module`` (the tasks' own, named by the caller, so
    that this module imports none of its callers) imported with its kernels, and the
    source opened (what its first task would otherwise wait for); its process id."""
    if module is not None:
        importlib.import_module(module)
    open_source(*source)
    return os.getpid()


def _ray_warm(source: tuple[str, str, str | None], module: str | None) -> int:
    _one_thread()
    return _warm(source, module)


def _ray_call(source: tuple[str, str, str | None], task: Task, args: tuple) -> Any:
    _one_thread()  # cheap when already so; a Ray worker has no initializer
    return _call(source, task, args)


class Runner:
    """Runs tasks in this process, one after another (the reference the others match)."""

    workers = 1

    def __init__(self, weights: ModelWeights | DnaFile) -> None:
        self.weights = weights

    def map(self, task: Task, tasks: Iterable[tuple]) -> Iterator[Any]:
        """``task(weights, *args)`` for each ``args`` of ``tasks``, in order."""
        for args in tasks:
            yield task(self.weights, *args)

    def run(self, jobs: Iterable[tuple[Task, tuple]]) -> Iterator[tuple[int, Any]]:
        """(position, ``task(weights, *args)``) for each (task, args) of ``jobs``, as they
        complete (here: in order). Give the largest first: they then end first, and the
        small ones fill the other workers' ends."""
        for i, (task, args) in enumerate(jobs):
            yield i, task(self.weights, *args)

    def map_unordered(self, task: Task, tasks: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
        """`run` of one task over ``tasks``."""
        return self.run((task, args) for args in tasks)

    def close(self) -> None:
        """Release the processes or the cluster connection (nothing here)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Distributed(Runner):
    """Submits tasks naming the model's path; gathers them as they complete."""

    def __init__(self, weights: ModelWeights | DnaFile, workers: int,
                 warm: str | None = None) -> None:
        super().__init__(weights)
        self.warm = warm  # the module each worker imports before its first task
        self._columns_folder: str | None = None
        columns = None
        if isinstance(weights, DividedWeights):  # the workers divide as they read
            from safetensors.numpy import save_file

            self._columns_folder = tempfile.mkdtemp(prefix="weightdna-columns-")
            columns = os.path.join(self._columns_folder, "columns.safetensors")
            save_file({name: np.ascontiguousarray(value, dtype=np.float32)
                       for name, value in weights.factors.items()}, columns)
        # `open_source`'s arguments: what a worker opens
        self.source = ("dna" if isinstance(weights, DnaFile) else "model",
                       str(Path(weights.path).resolve()), columns)
        self.workers = workers
        self.window = 2 * workers  # tasks submitted and not yet handed back

    def _forget_columns(self) -> None:
        """Remove the factors' file the workers read (`DividedWeights`), once they are done."""
        if self._columns_folder is not None:
            shutil.rmtree(self._columns_folder, ignore_errors=True)
            self._columns_folder = None

    def _submit(self, task: Task, args: tuple) -> Any:
        raise NotImplementedError

    def _wait(self, pending: list[Any]) -> list[Any]:
        """Some of ``pending`` that are done (at least one)."""
        raise NotImplementedError

    def _result(self, handle: Any) -> Any:
        raise NotImplementedError

    def _cancel(self, handles: list[Any]) -> None:
        pass

    def _ready(self) -> bool:
        """Whether the workers can take tasks; until then this process runs them."""
        return True

    def _here(self, task: Task, args: tuple) -> Any:
        """``task`` run in this process while the workers start, on one thread as theirs
        (the other cores are theirs, starting)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - scikit-learn brings it
                return task(self.weights, *args)
            with threadpool_limits(1):
                return task(self.weights, *args)
        finally:
            torch.set_num_threads(threads)

    def map(self, task: Task, tasks: Iterable[tuple]) -> Iterator[Any]:
        tasks = iter(tasks)
        index = {}  # handle -> its task's position
        done: dict[int, Any] = {}
        submitted = handed = 0
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - handed < self.window:
                    args = next(tasks, None)
                    if args is None:
                        exhausted = True
                        break
                    if not self._ready():  # meanwhile, here
                        done[submitted] = self._here(task, args)
                        submitted += 1
                        break
                    index[self._submit(task, args)] = submitted
                    submitted += 1
                while handed in done:
                    yield done.pop(handed)
                    handed += 1
                if not index:
                    if exhausted:
                        return
                    continue
                for handle in self._wait(list(index)):
                    done[index.pop(handle)] = self._result(handle)  # raises a task's error
        finally:
            self._cancel(list(index))

    def run(self, jobs: Iterable[tuple[Task, tuple]]) -> Iterator[tuple[int, Any]]:
        jobs = iter(jobs)
        index = {}  # handle -> its job's position
        submitted = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(index) < self.window:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    if not self._ready():  # meanwhile, here
                        submitted += 1
                        yield submitted - 1, self._here(*job)
                        continue
                    index[self._submit(*job)] = submitted
                    submitted += 1
                if not index:
                    return
                for handle in self._wait(list(index)):
                    position = index.pop(handle)
                    yield position, self._result(handle)  # raises a task's error
        finally:
            self._cancel(list(index))


class PoolRunner(_Distributed):
    """A pool of ``workers`` processes on this machine (concurrent.futures), forked from a
    fork server that has imported torch and the codec (`_pool_context`; spawned where
    there is none). The server's start (an interpreter, torch and the codec imported:
    about 2.5 s on the 2-core box) and the workers' run while this process runs the first
    tasks itself (`_warm`). The workers are asked for on a thread of their own: a forked
    worker's start waits for the server's imports, which this process does not."""

    def __init__(self, weights: ModelWeights | DnaFile, workers: int,
                 warm: str | None = None) -> None:
        super().__init__(weights, workers, warm)
        self.pool = ProcessPoolExecutor(workers, mp_context=_pool_context(warm),
                                        initializer=_pool_worker)
        self._warming: list[Future] | None = []
        self._start_error: BaseException | None = None
        self._starting = threading.Thread(target=self._start, daemon=True,
                                          name="weightdna-pool")
        self._starting.start()

    def _start(self) -> None:
        """Each worker started and given its `_warm` task (on `_starting`)."""
        try:
            for _ in range(self.workers):
                self._warming.append(self.pool.submit(_warm, self.source, self.warm))
        except BaseException as exc:  # raised in the driver's thread (`_ready`)
            self._start_error = exc

    def _ready(self) -> bool:
        if self._warming is None:
            return True
        if self._starting.is_alive():
            return False
        if self._start_error is not None:
            raise self._start_error
        if not all(f.done() for f in self._warming):
            return False
        for f in self._warming:
            f.result()  # a worker that could not start
        self._warming = None
        return True

    def _submit(self, task: Task, args: tuple) -> Future:
        return self.pool.submit(_call, self.source, task, args)

    def _wait(self, pending: list[Future]) -> list[Future]:
        return list(wait(pending, return_when=FIRST_COMPLETED).done)

    def _result(self, handle: Future) -> Any:
        return handle.result()

    def _cancel(self, handles: list[Future]) -> None:
        for handle in handles:
            handle.cancel()

    def close(self) -> None:
        self._starting.join()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._forget_columns()


class RayRunner(_Distributed):
    """The tasks on a Ray cluster: ``address`` as ``ray.init`` takes it, or None to start a
    local one of ``workers`` CPUs. Every node must see the model at the same path.

    The connection (a local cluster's start: about 4.5 s on the 2-core box) is made on a
    thread of its own; once connected, each of the cluster's CPUs is given a `_warm` task
    (its worker's start: an interpreter, torch and the codec imported). Until both are
    done this process runs the tasks itself (a task's result is the same wherever it
    runs). While Ray starts its daemons (forks), this process's BLAS and torch run on one
    thread: a fork while a multi-threaded BLAS call was under way on the other thread hung
    (twice in two tries; none in three with one thread). The thread lives until `close`:
    Ray's daemons die with the thread that started them (their parent-death signal)."""

    def __init__(self, weights: ModelWeights, address: str | None, workers: int,
                 warm: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError(
                "--ray needs the optional package ray: pip install 'weightdna[distributed]'"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        super().__init__(weights, max(1, workers), warm)
        self.remote = ray.remote(num_cpus=1)(_ray_call)
        self._up, self._stop = threading.Event(), threading.Event()
        self._error: BaseException | None = None
        self._warming: list[Any] = []
        self._connecting, self._limits, self._threads = True, None, 0
        if not self.started:  # connected by the caller
            self._up.set()
            return
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(1)
        except ImportError:  # pragma: no cover - scikit-learn brings it
            pass
        threading.Thread(target=self._connect, args=(address, workers), daemon=True,
                         name="weightdna-ray").start()

    def _connect(self, address: str | None, workers: int) -> None:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        try:
            if address:
                self.ray.init(address=address, **options)
            else:  # Ray's workers run at niceness 15 by default: under any other load
                # they starved (a local cluster's 2 workers took 30 s to start at load 5)
                self.ray.init(num_cpus=workers, _system_config={"worker_niceness": 0},
                              **options)
        except BaseException as exc:  # raised in the driver's thread (`_ready`)
            self._error = exc
        self._up.set()
        self._stop.wait()

    def _connected(self) -> None:
        """The cluster's size, and its workers' start (`_warm`) under way."""
        cpus = int(self.ray.cluster_resources().get("CPU", self.workers))
        self.workers = max(1, cpus)
        self.window = 2 * self.workers
        warm = self.ray.remote(num_cpus=1)(_ray_warm)
        self._warming = [warm.remote(self.source, self.warm) for _ in range(self.workers)]

    def _unlimit(self) -> None:
        """This process's threads as they were before the connection."""
        if self._threads:
            torch.set_num_threads(self._threads)
            if self._limits is not None:
                self._limits.restore_original_limits()
            self._threads = 0

    def _ready(self) -> bool:
        if self._connecting:
            if not self._up.is_set():
                return False
            self._unlimit()
            if self._error is not None:
                raise self._error
            self._connecting = False
            self._connected()
        if self._warming:
            ready, _ = self.ray.wait(self._warming, num_returns=len(self._warming),
                                     timeout=0)
            if len(ready) < len(self._warming):
                return False
            self.ray.get(self._warming)  # a worker that could not start
            self._warming = []
        return True

    def _submit(self, task: Task, args: tuple) -> Any:
        return self.remote.remote(self.source, task, args)

    def _wait(self, pending: list[Any]) -> list[Any]:
        ready, _ = self.ray.wait(pending, num_returns=1)
        return ready

    def _result(self, handle: Any) -> Any:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None  # the task's own error (a user's: one line)
            raise

    def _cancel(self, handles: list[Any]) -> None:
        for handle in handles:
            self.ray.cancel(handle)

    def close(self) -> None:
        if self.started:
            self._up.wait()
            self._unlimit()
            if self._error is None:
                self.ray.shutdown()
            self._stop.set()
        self._forget_columns()


def make_runner(weights: ModelWeights, workers: int | None = None,
                ray_address: str | None | bool = False, warm: str | None = None) -> Runner:
    """The runner for ``workers`` processes (None or 0: this process only) or, with
    ``ray_address`` (an address, or None/True for a local cluster), a Ray cluster. A model
    other processes cannot open from its path runs in this process. ``warm``: the module
    of the tasks to come, which each worker imports as it starts."""
    if workers is not None and workers < 0:
        raise InvalidInputError(f"--workers must be 1 or more, not {workers}.")
    if ray_address is not False:
        if not can_share(weights):
            raise InvalidInputError(
                f"{weights.path} cannot be read by other processes tensor by tensor "
                f"(only {', '.join(PARALLEL_FORMATS)} files and folders); convert it to "
                "safetensors first."
            )
        address = None if ray_address is True else ray_address
        return RayRunner(weights, address, workers or default_workers(), warm)
    if not workers or not can_share(weights):
        return Runner(weights)
    return PoolRunner(weights, workers, warm)


def _decode_into(dna: DnaFile, name: str, output: str, offset: int,
                 block: int | None = None) -> int:
    """Decode the tensor ``name`` (``block``: only that row block's rows) and write its
    bytes at ``offset`` of ``output`` (a decompress's temporary file, its header written);
    returns its elements."""
    tensor = dna.tensor(name, block=block)
    data = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
    fd = os.open(output, os.O_WRONLY)
    try:
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
    finally:
        os.close(fd)
    return tensor.numel()


def decompress_in_parallel(dna: DnaFile, output: Path, metadata: dict[str, str],
                           overwrite: bool, report: Callable[[str, int, int], None],
                           workers: int) -> None:
    """Write ``dna``'s tensors as safetensors at ``output`` (atomically), each decoded by
    one of ``workers`` processes straight into its place in the file: the header first,
    then the tensors' bytes at their offsets, the same bytes as one process writes. A
    tensor whose symbols are coded by row blocks (format version 16) is decoded a block
    per task, each into its rows' place."""
    specs = {e["name"]: (DTYPES[e["dtype"]], tuple(e["shape"])) for e in dna.entries}
    start, offsets = header_bytes(specs, metadata)
    size = len(start) + sum(math.prod(shape) * dtype.itemsize for dtype, shape in specs.values())
    with atomic_output(output, overwrite=overwrite) as f:
        f.write(start)
        f.flush()
        f.truncate(size)
        temporary = os.readlink(f"/proc/self/fd/{f.fileno()}")
        if not os.path.isfile(temporary):
            raise ModelFileError(f"cannot reopen the temporary file of {output}.")
        tasks = []
        for name in sorted(specs):
            dtype, shape = specs[name]
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            entry = dna.entries[dna.index(name)]
            bounds = row_blocks_of(entry) if entry["representation"] in ROW_BLOCKED else []
            if len(bounds) < 2:
                tasks.append((name, temporary, offsets[name]))
            else:  # its blocks' rows (checked as each decodes) in place
                tasks += [(name, temporary, offsets[name] + start * row_bytes, k)
                          for k, (start, _) in enumerate(bounds)]
        with PoolRunner(dna, workers) as runner:
            for i, _ in enumerate(runner.map(_decode_into, tasks)):
                report("decoding", i + 1, len(tasks))
