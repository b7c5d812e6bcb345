"""Run the codec's per-tensor tasks in this process, on a pool of processes, or on Ray.

A task is a function of the model and a few small arguments (a tensor's name and
`TensorInfo`, a chosen step, coded bytes). In another process the model is opened there
from its path (`open_model`, once per process) and the task reads its own tensor from the
file, so weights never go through a pipe or Ray's object store: only paths, names, the
rate control's figures and samples (at most 2^20 elements of a tensor, the allocation's
input), and coded bytes do.

`Runner.map` gives the results in task order, whatever order they finish in, with at
most ``window`` tasks submitted and not yet handed back (backpressure: memory follows the
work in flight, not the model); the file written from them is therefore the same for any
number of processes. Every process of a pool or cluster runs its numerical libraries on
one thread, so that N processes use N cores, not N × cores.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from weightdna.atomic import atomic_output
from weightdna.codec.container import DnaFile, read_dna_file
from weightdna.codec.dtypes import DTYPES
from weightdna.errors import InvalidInputError, MissingDependencyError, ModelFileError
from weightdna.weights import ModelWeights, load_weights
from weightdna.weights.safetensors_format import header_bytes

Task = Callable[..., Any]  # task(weights, *args)
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
    """Whether other processes can open ``weights`` from its path and read one tensor."""
    return weights.format in PARALLEL_FORMATS and weights.path.exists()


def can_share_output() -> bool:
    """Whether workers can write into the file this process has open (Linux's /proc)."""
    return os.path.isdir("/proc/self/fd")


@functools.lru_cache(maxsize=4)
def open_source(kind: str, path: str) -> ModelWeights | DnaFile:
    """The model (``kind`` "model") or .dna file ("dna") at ``path``, opened once per
    process: its header; tensors are read when a task uses them."""
    if kind == "dna":
        return read_dna_file(path, verify=False)  # the driver has checked it whole
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


def _call(kind: str, path: str, task: Task, args: tuple) -> Any:
    """Run ``task`` in a worker on the model or .dna file at ``path``."""
    return task(open_source(kind, path), *args)


def _ray_call(kind: str, path: str, task: Task, args: tuple) -> Any:
    _one_thread()  # cheap when already so; a Ray worker has no initializer
    return _call(kind, path, task, args)


class Runner:
    """Runs tasks in this process, one after another (the reference the others match)."""

    workers = 1

    def __init__(self, weights: ModelWeights | DnaFile) -> None:
        self.weights = weights

    def map(self, task: Task, tasks: Iterable[tuple]) -> Iterator[Any]:
        """``task(weights, *args)`` for each ``args`` of ``tasks``, in order."""
        for args in tasks:
            yield task(self.weights, *args)

    def close(self) -> None:
        """Release the processes or the cluster connection (nothing here)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Distributed(Runner):
    """Submits tasks naming the model's path; gathers them as they complete."""

    def __init__(self, weights: ModelWeights | DnaFile, workers: int) -> None:
        super().__init__(weights)
        self.kind = "dna" if isinstance(weights, DnaFile) else "model"
        self.path = str(Path(weights.path).resolve())
        self.workers = workers
        self.window = 2 * workers  # tasks submitted and not yet handed back

    def _submit(self, task: Task, args: tuple) -> Any:
        raise NotImplementedError

    def _wait(self, pending: list[Any]) -> list[Any]:
        """Some of ``pending`` that are done (at least one)."""
        raise NotImplementedError

    def _result(self, handle: Any) -> Any:
        raise NotImplementedError

    def _cancel(self, handles: list[Any]) -> None:
        pass

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


class PoolRunner(_Distributed):
    """A pool of ``workers`` processes on this machine (concurrent.futures, spawned)."""

    def __init__(self, weights: ModelWeights | DnaFile, workers: int) -> None:
        super().__init__(weights, workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_one_thread)

    def _submit(self, task: Task, args: tuple) -> Future:
        return self.pool.submit(_call, self.kind, self.path, task, args)

    def _wait(self, pending: list[Future]) -> list[Future]:
        return list(wait(pending, return_when=FIRST_COMPLETED).done)

    def _result(self, handle: Future) -> Any:
        return handle.result()

    def _cancel(self, handles: list[Future]) -> None:
        for handle in handles:
            handle.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayRunner(_Distributed):
    """The tasks on a Ray cluster: ``address`` as ``ray.init`` takes it, or None to start a
    local one of ``workers`` CPUs. Every node must see the model at the same path."""

    def __init__(self, weights: ModelWeights, address: str | None, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError(
                "--ray needs the optional package ray: pip install 'weightdna[distributed]'"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "configure_logging": False}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers, **options)
        cpus = int(ray.cluster_resources().get("CPU", workers))
        super().__init__(weights, max(1, cpus))
        self.remote = ray.remote(num_cpus=1)(_ray_call)

    def _submit(self, task: Task, args: tuple) -> Any:
        return self.remote.remote(self.kind, self.path, task, args)

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
            self.ray.shutdown()


def make_runner(weights: ModelWeights, workers: int | None = None,
                ray_address: str | None | bool = False) -> Runner:
    """The runner for ``workers`` processes (None or 0: this process only) or, with
    ``ray_address`` (an address, or None/True for a local cluster), a Ray cluster. A model
    other processes cannot open from its path runs in this process."""
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
        return RayRunner(weights, address, workers or default_workers())
    if not workers or not can_share(weights):
        return Runner(weights)
    return PoolRunner(weights, workers)


def _decode_into(dna: DnaFile, name: str, output: str, offset: int) -> int:
    """Decode the tensor ``name`` and write its bytes at ``offset`` of ``output`` (a
    decompress's temporary file, its header written); returns its elements."""
    tensor = dna.tensor(name)
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
    then the tensors' bytes at their offsets, the same bytes as one process writes."""
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
        names = sorted(specs)
        with PoolRunner(dna, workers) as runner:
            tasks = ((name, temporary, offsets[name]) for name in names)
            for i, _ in enumerate(runner.map(_decode_into, tasks)):
                report("decoding", i + 1, len(names))
