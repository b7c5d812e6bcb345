"""What the engine's commands share: a progress bar for training."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from weightdna.cli import err_console
from weightdna.nn.model import Callback


class TrainingProgress(Callback):
    """A rich progress bar over all batches of a ``Model.fit`` run, on stderr.

    It draws nothing when stderr is not a terminal (pipes, CI, tests), so logs stay clean.
    Use it as a context manager around the training call.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )
        self._task = None
        self._epochs = 0

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        self._epochs = epochs
        self._task = self._progress.add_task(
            self.description, total=epochs * batches_per_epoch, status=f"epoch 1/{epochs}"
        )

    def on_batch_end(self, epoch: int, batch: int) -> None:
        self._progress.advance(self._task)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        parts = [f"epoch {epoch + 1}/{self._epochs} done", f"loss {logs['loss']:.4f}"]
        if "val_accuracy" in logs:
            parts.append(f"val acc {logs['val_accuracy']:.3f}")
        self._progress.update(self._task, status="  ".join(parts))



class TrainingToJob(Callback):
    """Training's batches reported as ``stage`` of a whole job's bar (`JobBar`)."""

    def __init__(self, report: Callable[[str, int, int], None], stage: str) -> None:
        self.report, self.stage = report, stage
        self._total = self._per_epoch = 0

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        self._total, self._per_epoch = epochs * batches_per_epoch, batches_per_epoch
        self.report(self.stage, 0, self._total)

    def on_batch_end(self, epoch: int, batch: int) -> None:
        self.report(self.stage, epoch * self._per_epoch + batch + 1, self._total)
