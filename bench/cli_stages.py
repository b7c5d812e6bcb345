"""Where a `weightdna compress` command's time goes, stage by stage: wall and CPU seconds.

    PYTHONPATH=$PWD .venv/bin/python bench/cli_stages.py [--model PATH] [--bits 4] \
        (--workers N | --ray) [--json F] [-- more compress options]

The command runs in this process, as `python -m weightdna compress` runs it (its imports
timed too), with its progress callback wrapped: at each change of stage the wall time and
the CPU seconds of this process and of every live process below it (the pool's workers,
Ray's daemons and workers, from /proc) are taken. Stages: "start-up" (imports, the header
read, the runner opened) up to the first progress report; "sensitivity" (the output
sensitivities and then, unreported, the column factors); "coding" (every stage of the
coding: reading, analysing, encoding, ...); "correcting" (the bias correction); "writing"
(the file, the tensors' reports) up to the end of the command, its runner closed. The
1-minute load average is printed before and after. On a shared box the CPU seconds are the
firmer figures.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu() -> float:
    """CPU seconds of this process (itself and its reaped children) and of every live
    process below it."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    me = os.getpid()
    total = sum(os.times()[:4])
    for pid in cpu:
        if pid == me:
            continue
        up, seen = parents.get(pid), 0
        while up and up != me and seen < 64:
            up, seen = parents.get(up), seen + 1
        if up == me:
            total += cpu[pid]
    return total


def stage_of(stage: str) -> str:
    return stage if stage in ("sensitivity", "correcting", "writing") else "coding"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--bits", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--ray", action="store_true", help="a local cluster of --workers CPUs")
    parser.add_argument("--out", default="/tmp/cli_stages.dna")
    parser.add_argument("--json", default=None)
    args, more = parser.parse_known_args()
    more = [m for m in more if m != "--"]
    from weightdna.cli import compress as command
    from weightdna.cli import main as cli

    marks: list[tuple[str, float, float]] = [("start-up", 0.0, 0.0)]

    class Timed(command.JobBar):
        def __call__(self, stage: str, done: int, total: int) -> None:
            name = stage_of(stage)
            if marks[-1][0] != name:
                marks.append((name, time.perf_counter() - STARTED, tree_cpu()))
            super().__call__(stage, done, total)

    command.JobBar = Timed
    if args.model is None:
        from weightdna.weights import minilm_path

        args.model = str(minilm_path())
    load = os.getloadavg()[0]
    line = ["compress", args.model, "-o", args.out, "--bits-per-weight", f"{args.bits:g}",
            "--check", "none", "--force"]
    if args.workers is not None:
        line += ["--workers", str(args.workers)]
    if args.ray:
        line += ["--ray"]
    if cli([*line, *more]) != 0:
        raise SystemExit("compress failed")
    marks.append(("end", time.perf_counter() - STARTED, sum(os.times()[:4])))
    rows = [{"stage": a[0], "wall": b[1] - a[1], "cpu": b[2] - a[2]}
            for a, b in zip(marks, marks[1:], strict=False)]
    import hashlib

    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    result = {"run": " ".join(line[5:] + more), "load": f"{load:.1f}–{os.getloadavg()[0]:.1f}",
              "wall": marks[-1][1], "cpu": marks[-1][2], "sha256": digest, "stages": rows}
    print(json.dumps(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
