"""A long run of the .dna reader's structure-aware fuzzer (`tests/dna_fuzzer.py`).

Cases are made from their index and the run's seed (the same case every time: a failure
is reproduced with ``--first I --cases 1``), decoded in worker processes, each case timed
(a case past ``--timeout`` seconds is a hang: its worker is killed and replaced) and its
peak RSS measured (more than the memory limit plus the interpreter's slack is an
over-allocation). Prints a table of outcomes per mutation family, and every failure.

    .venv/bin/python bench/fuzz.py --cases 300000 --workers 2      # BENCHMARKS.md
    .venv/bin/python bench/fuzz.py --cases 2000 --seed 7            # a quick look

Exit status 1 when any case crashed, hung, over-allocated or decoded silently.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

CHUNK = 250  # cases a worker takes at a time
FAILURES = ("crash", "silent", "hang", "over-allocation")


def _worker(seed: int, tasks: mp.Queue, results: mp.Queue, current: mp.Array) -> None:
    import dna_fuzzer as fuzz
    import torch

    torch.set_num_threads(1)  # the cases are tiny: threads would only contend
    fuzz.honest_malloc()
    fuzz.seeds()
    folder = Path(tempfile.mkdtemp(prefix="dna-fuzz-", dir="/dev/shm"
                                   if Path("/dev/shm").is_dir() else None))
    while True:
        task = tasks.get()
        if task is None:
            return
        first, stop = task
        counts: collections.Counter = collections.Counter()
        failures = []
        slowest = peak = 0.0
        current[2], current[3] = first, stop
        for index in range(first, stop):
            current[0], current[1] = index, time.time()
            case = fuzz.make_case(index, seed)
            outcome = fuzz.measure(case, folder)
            status = outcome.status
            if status not in FAILURES and fuzz.over_allocated(outcome):
                status = "over-allocation"
                outcome.detail = f"peak RSS +{outcome.peak_bytes / 2**20:.1f} MiB"
            counts[(case.seed, case.kind, status)] += 1
            slowest = max(slowest, outcome.seconds)
            peak = max(peak, outcome.peak_bytes)
            if status in FAILURES:
                failures.append((index, case.seed, case.kind, case.detail, status,
                                 outcome.detail))
        current[0] = -1
        results.put((first, stop, counts, failures, slowest, peak))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--first", type=int, default=0, help="index of the first case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds after which a case is a hang")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    end = args.first + args.cases
    chunks = [(a, min(a + CHUNK, end)) for a in range(args.first, end, CHUNK)]
    for chunk in chunks:
        tasks.put(chunk)
    def start() -> tuple[mp.Process, mp.Array]:
        current = ctx.Array("d", [-1.0, 0.0, 0.0, 0.0])  # case, its start, chunk
        process = ctx.Process(target=_worker, args=(args.seed, tasks, results, current),
                              daemon=True)
        process.start()
        return process, current

    workers = [start() for _ in range(args.workers)]
    counts: collections.Counter = collections.Counter()
    failures: list[tuple] = []
    began = time.time()
    pending = len(chunks)
    try:
        _run(args, tasks, results, workers, start, counts, failures, pending, began)
    except KeyboardInterrupt:  # stopped early: report the cases done, and say so
        print("interrupted: the table counts the cases finished so far", file=sys.stderr)
    for process, _ in workers:
        process.kill()
    seconds = time.time() - began
    slowest, peak = _extremes
    _report(args, counts, failures, seconds, slowest, peak)
    return 1 if failures else 0


_extremes = [0.0, 0.0]  # the slowest case's seconds, the largest peak RSS added


def _run(args: argparse.Namespace, tasks: mp.Queue, results: mp.Queue, workers: list,
         start, counts: collections.Counter, failures: list, pending: int,  # noqa: ANN001
         began: float) -> None:
    done = 0
    last_report = began
    while pending:
        while not results.empty():
            first, stop, c, f, s, p = results.get()
            counts.update(c)
            failures += f
            _extremes[0], _extremes[1] = max(_extremes[0], s), max(_extremes[1], p)
            done += stop - first
            pending -= 1
        for k, (process, current) in enumerate(workers):
            index, since = int(current[0]), current[1]
            alive = process.is_alive()
            if index >= 0 and (not alive or time.time() - since > args.timeout):
                # A hang, or a worker killed by its case (a native crash, the OOM killer).
                status = "hang" if alive else "crash"
                process.kill()
                process.join()
                counts[("?", "?", status)] += 1
                failures.append((index, "?", "?", "?", status,
                                 f"over {args.timeout:g} s" if alive
                                 else f"the worker died (exit {process.exitcode})"))
                done += 1
                # The chunk's other cases go back to the queue (those before the hang run
                # again: its counts died with the worker).
                first, stop = int(current[2]), int(current[3])
                parts = [(a, b) for a, b in ((first, index), (index + 1, stop)) if a < b]
                for part in parts:
                    tasks.put(part)
                pending += len(parts) - 1
                workers[k] = start()
            elif not alive and pending:
                workers[k] = start()
        if time.time() - last_report > 60:
            rate = done / (time.time() - began)
            totals = collections.Counter()
            for (_, _, status), n in counts.items():
                totals[status] += n
            print(f"  {done} cases, {rate:.0f}/s, {dict(totals)}", file=sys.stderr, flush=True)
            last_report = time.time()
        time.sleep(0.2)


def _report(args: argparse.Namespace, counts: collections.Counter, failures: list[tuple],
            seconds: float, slowest: float, peak: float) -> None:
    import dna_fuzzer as fuzz

    total = sum(counts.values())
    statuses = ["refused", "unchanged", "changed", *FAILURES]
    rows: dict[tuple[str, str], collections.Counter] = collections.defaultdict(
        collections.Counter)
    for (seed, kind, status), n in counts.items():
        rows[(seed, kind)][status] += n
    print(f"weightdna .dna fuzz: {total} cases (seed {args.seed}, first {args.first}), "
          f"{args.workers} workers, {seconds:.0f} s ({total / seconds:.0f} cases/s); "
          f"{platform.python_version()}, {os.cpu_count()} CPUs; memory limit "
          f"{fuzz.MEMORY_LIMIT >> 20} MiB (+{fuzz.RSS_SLACK >> 20} MiB slack), timeout "
          f"{args.timeout:g} s")
    print()
    print("| seed | mutation | " + " | ".join(statuses) + " |")
    print("|---|---|" + "---:|" * len(statuses))
    for (seed, kind), c in sorted(rows.items()):
        print(f"| {seed} | {kind} | " + " | ".join(str(c[s]) for s in statuses) + " |")
    overall = collections.Counter()
    for c in rows.values():
        overall.update(c)
    print("| **all** | | " + " | ".join(f"**{overall[s]}**" for s in statuses) + " |")
    print()
    print(f"slowest case {slowest:.2f} s; largest peak RSS added {peak / 2**20:.1f} MiB")
    for index, seed, kind, detail, status, what in failures[:50]:
        print(f"FAIL case {index} [{seed} {kind}: {detail}] {status}: {what}")


if __name__ == "__main__":
    sys.exit(main())
