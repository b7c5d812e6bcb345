"""One bar for the whole job: stage counters that restart add up instead of going back."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.progress import Progress

from weightdna.cli._progress import JobBar
from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target
from weightdna.weights import load_weights, save_weights


def _record(plan: dict[str, int] | None, calls) -> list[tuple[float, float, str]]:
    progress = Progress(disable=True)
    bar = JobBar(progress, "job", plan)
    seen = []
    for call in calls:
        bar(*call)
        task = progress.tasks[0]
        seen.append((task.completed, task.total, task.description))
    return seen


def _compress_like(tensors: int, rounds: int) -> list[tuple[str, int, int]]:
    calls = [("analysing", i, tensors) for i in range(tensors + 1)]
    for _ in range(rounds):
        calls.append(("allocating", 0, 1))
        calls += [("encoding", i, tensors) for i in range(tensors + 1)]
    return calls + [("writing", 0, 1), ("writing", 1, 1)]


def test_restarting_stages_move_one_bar_forward() -> None:
    plan = {"analysing": 1, "allocating": 3, "encoding": 3, "writing": 1}
    seen = _record(plan, _compress_like(tensors=5, rounds=3))
    fractions = [done / total for done, total, _ in seen]
    assert fractions == sorted(fractions)  # never backwards
    assert seen[-1][1] == 5 + 3 * (1 + 5) + 1  # the plan: no stage ran more than planned
    assert seen[-1][0] == seen[-1][1]  # done at the end
    assert any("encoding (round 3)" in d for _, _, d in seen)


def test_more_rounds_than_planned_grow_the_total() -> None:
    plan = {"analysing": 1, "allocating": 1, "encoding": 1, "writing": 1}
    seen = _record(plan, _compress_like(tensors=4, rounds=2))
    completed = [done for done, _, _ in seen]
    assert completed == sorted(completed)
    assert seen[-1][1] == 4 + 2 * (1 + 4) + 1
    assert seen[-1][0] == seen[-1][1]


def test_compress_reports_what_the_plan_expects(tmp_path: Path) -> None:
    # The stage names JobBar's plan for compress relies on are the ones compress_model uses.
    generator = torch.Generator().manual_seed(0)
    path = save_weights({f"layers.{i}.weight": torch.randn(32, 16, generator=generator)
                         for i in range(3)}, tmp_path / "m.safetensors")
    stages = []
    compress_model(load_weights(path), tmp_path / "m.dna", Target("snr", 25.0),
                   progress=lambda stage, done, total: stages.append(stage))
    assert set(stages) == {"reading", "analysing", "allocating", "encoding", "writing"}


def test_stage_shares_move_one_bar_by_their_weight() -> None:
    # The demo's bar: each stage scaled to its share; a count repeated (600 batches over
    # 200 units) is the same pass, not a new round; the total is known from the start.
    progress = Progress(disable=True)
    bar = JobBar(progress, "demo", units={"training": 2, "analysing": 6, "report": 1})
    calls = [("training", i, 600) for i in range(601)] + [("analysing", i, 10)
                                                          for i in range(11)]
    calls += [("report", 0, 1)]
    seen = []
    for call in calls:
        bar(*call)
        task = progress.tasks[0]
        seen.append((task.completed, task.total, task.description))
    assert all(total == 900 for _, total, _ in seen)
    completed = [c for c, _, _ in seen]
    assert completed == sorted(completed)
    assert not any("round" in d for _, _, d in seen)
    assert completed[600] == 200 and completed[611] == 800  # training done; analysis done
    assert seen[-1][2] == "demo: report"
