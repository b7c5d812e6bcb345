"""One progress bar per command, for the whole job, with the time left.

The library reports progress per stage, ``(stage, done, total)``, and a stage may run more
than once (compress encodes every tensor in each round of its rate control): shown as they
come, the counters restart, which reads as the job starting over. ``JobBar`` adds the
stages up into one count whose total is the plan (each stage's expected passes), grown
when a stage runs more often than planned, so the bar moves one way and the ETA means the
whole job.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from weightdna.cli import err_console


def job_progress(*extra: TextColumn) -> Progress:
    """The bar every long command shows on stderr (nothing when it is not a terminal)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), *extra,
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    )


class JobBar:
    """A ``(stage, done, total)`` callback that drives one task of ``progress``.

    plan: each stage's expected passes, in the order they run; a stage not named counts as
    one pass. A stage's units per pass are its ``total``; before it first reports, the
    largest total seen so far stands in for it. When another stage reports, the pass of the
    one before it is over (a library reports a stage's start, not always its end).
    units: instead, each stage's share of the job ({stage: weight}, one pass each, all known
    from the start): a stage's count is scaled to 100 × its weight, so that stages of very
    different counts (epochs' batches, tensors) move the bar by their share of the time.
    """

    def __init__(self, progress: Progress, description: str,
                 plan: Mapping[str, int] | None = None,
                 units: Mapping[str, float] | None = None) -> None:
        self._progress = progress
        self._description = description
        self._units = {stage: max(1, round(100 * weight)) for stage, weight
                       in (units or {}).items()}
        self._plan = dict(plan or dict.fromkeys(self._units, 1))
        self._totals: dict[str, int] = dict(self._units)
        self._task = progress.add_task(description, total=None)
        self._passes: dict[str, int] = {}  # passes finished
        self._done: dict[str, int] = {}    # units of the pass under way
        self._current: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage in self._units:  # one pass, scaled to the stage's share, never back
            done = max(self._units[stage] * done // max(total, 1), self._done.get(stage, 0))
            total = self._units[stage]
            again = False
        else:  # the counter went back: the stage runs again
            again = stage in self._done and done <= self._done[stage]
        if self._current not in (None, stage):
            # The job moved on: the stage's pass is over, whatever it last reported.
            self._done[self._current] = self._totals[self._current]
        self._current = stage
        if again:
            self._passes[stage] += 1
            self._done[stage] = 0
        self._passes.setdefault(stage, 0)
        self._plan.setdefault(stage, 1)
        self._totals[stage] = max(total, 1)
        self._done[stage] = done
        guess = max(self._totals.values())
        planned = sum(max(passes, self._passes.get(s, 0) + (s in self._done))
                      * self._totals.get(s, guess) for s, passes in self._plan.items())
        completed = sum(self._passes[s] * self._totals[s] + self._done[s] for s in self._done)
        runs = self._passes[stage] + 1
        label = stage if runs == 1 else f"{stage} (round {runs})"
        self._progress.update(self._task, completed=min(completed, planned), total=planned,
                              description=f"{self._description}: {label}")
