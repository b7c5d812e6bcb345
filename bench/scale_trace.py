"""Where a parallel compress's time goes, in CPU seconds (load-independent) and in wall time.

    PYTHONPATH=$PWD:$PWD/bench .venv/bin/python bench/scale_trace.py --model PATH \
        --workers 1,2 [--ray] [--bits 4] [--json F]

Each configuration runs `compress_model` (the CLI's settings: a resumable run, its work
folder beside the output) in a fresh process. Every task a worker runs is timed there
(wall start and end, and the worker's CPU seconds for the task); the driver's CPU
seconds are split into the time inside the runner's maps (overlapping the workers) and
outside them (serial: the λ solve, building tasks, writing); each worker's CPU before its
first task (its start: the interpreter, torch and the codec imported) is counted apart,
with the fork server's (`weightdna.codec.workers._pool_context`: the imports, once, of
workers forked from it, whose own CPU then starts at 0). From those CPU seconds, which the
box's load does not change much, the script gives:

- the Amdahl bound for N workers: (S + P) / (S + P / N), S the driver's serial CPU and P
  the tasks' CPU;
- a list-scheduling simulation of each map on N workers from the tasks' CPU seconds, in
  the order they were submitted, and largest first, with the driver's serial parts
  between: the makespan and its idle tail;
- the wall figures of the run itself (busy workers over time), and the wall seconds from
  the last task's end to the run's (the output's write, the workers' exit, the work
  folder's removal: ``idle_after_last_task``; the report's `_zeroed` tasks, after the
  write, not counted as the last);
- with 1 and 2 workers, the bound 2 × (tasks + one worker's start) / (tasks + driver in
  maps + workers' start + driver serial + idle after the last task), all but the one
  worker's start (the 1-worker run's) from the 2-worker run.

The box these numbers come from has 2 cores shared with other jobs: the CPU figures are
the firmer ones.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRACE = "WEIGHTDNA_TRACE_DIR"


def traced_call(source: tuple, task, args: tuple):  # noqa: ANN001, ANN201
    """`weightdna.codec.workers._call`, timed: one JSON line per task in the trace folder.
    ``source``: `workers.open_source`'s arguments."""
    from weightdna.codec import workers

    if getattr(traced_call, "first", None) is None:
        traced_call.first = time.process_time()  # the worker's start: imports
        workers._one_thread()
    return _timed_task(task, workers.open_source(*source), args, traced_call.first)


def _timed_task(task, weights, args: tuple, start_cpu: float):  # noqa: ANN001, ANN202
    wall, cpu = time.time(), time.process_time()
    result = task(weights, *args)
    task = getattr(task, "args", (task,))[0]  # `in_driver`'s partial: the task itself
    line = {"task": task.__name__, "name": args[0] if args and isinstance(args[0], str)
            else getattr(args[0], "name", "?") if args else "?",
            "pid": os.getpid(), "start": wall, "end": time.time(),
            "cpu": time.process_time() - cpu, "start_cpu": start_cpu}
    with open(Path(os.environ[TRACE]) / f"{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return result


def in_driver(task, weights, *args):  # noqa: ANN001, ANN201
    """``task`` run by the driver itself (a Ray runner's, while its cluster starts):
    timed there; in a worker, run as it is (`traced_call` times it)."""
    if os.getpid() == int(os.environ["WEIGHTDNA_TRACE_DRIVER"]):
        return _timed_task(task, weights, args, 0.0)
    return task(weights, *args)


def traced_ray_call(source: tuple, task, args: tuple):  # noqa: ANN001, ANN201
    return traced_call(source, task, args)


def _child(model: str, workers: int, ray: bool, bits: float, out: Path, trace: Path) -> dict:
    """One compress in this process, traced."""
    import resource

    import scale_trace  # this file as a module, so that workers import it by name

    from weightdna.codec import workers as workers_module
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights

    os.environ[TRACE] = str(trace)
    workers_module._call = scale_trace.traced_call
    workers_module._ray_call = scale_trace.traced_ray_call
    maps = []
    original = workers_module._Distributed.map

    def timed_map(self, task, tasks):  # noqa: ANN001, ANN202
        record = {"task": task.__name__, "start": time.time(), "cpu0": time.process_time(),
                  "tasks": 0}
        maps.append(record)
        # The tasks the driver runs itself while the workers start timed as tasks too.
        for result in original(self, functools.partial(scale_trace.in_driver, task), tasks):
            record["tasks"] += 1
            # At each result: a caller may stop taking them once it has all it asked for.
            record["end"], record["cpu1"] = time.time(), time.process_time()
            yield result

    workers_module._Distributed.map = timed_map
    original_run = workers_module._Distributed.run
    os.environ["WEIGHTDNA_TRACE_DRIVER"] = str(os.getpid())

    def timed_run(self, jobs):  # noqa: ANN001, ANN202
        jobs = [(functools.partial(scale_trace.in_driver, task), args) for task, args in jobs]
        record = {"task": jobs[0][0].args[0].__name__ if jobs else "?", "start": time.time(),
                  "cpu0": time.process_time(), "tasks": 0}
        maps.append(record)
        for result in original_run(self, jobs):
            record["tasks"] += 1
            record["end"], record["cpu1"] = time.time(), time.process_time()
            yield result

    workers_module._Distributed.run = timed_run
    stages = []

    def progress(stage: str, done: int, total: int) -> None:
        if not stages or stages[-1]["stage"] != stage:
            stages.append({"stage": stage, "wall": time.time(), "cpu": time.process_time()})

    start, cpu = time.time(), time.process_time()
    report = compress_model(load_weights(model), out, Target("bits_per_weight", bits),
                            overwrite=True, workers=workers, ray=ray, resumable=True,
                            progress=progress)
    end = time.time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"start": start, "end": end, "driver_cpu": time.process_time() - cpu,
            "children_cpu": children.ru_utime + children.ru_stime, "maps": maps,
            "stages": stages, "file_bytes": report.file_bytes,
            "forkserver_cpu": _forkserver_cpu()}


def _forkserver_cpu() -> float:
    """The CPU seconds of multiprocessing's fork server, if this process started one (its
    imports: the start of the workers forked from it); 0 without."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _tasks(trace: Path) -> list[dict]:
    lines = []
    for file in trace.glob("*.jsonl"):
        lines += [json.loads(x) for x in file.read_text().splitlines()]
    return sorted(lines, key=lambda t: t["start"])


def _makespan(costs: list[float], n: int) -> tuple[float, float]:
    """List scheduling of ``costs`` (in order) on ``n`` workers: (makespan, idle CPU-s of
    the workers at the end)."""
    free = [0.0] * n
    heapq.heapify(free)
    for c in costs:
        heapq.heappush(free, heapq.heappop(free) + c)
    span = max(free)
    return span, sum(span - f for f in free)


def analyse(run: dict, tasks: list[dict], n_sim: int = 2) -> dict:
    """The CPU picture of one traced run (module docstring)."""
    maps, out = run["maps"], {}
    inside = sum(m["cpu1"] - m["cpu0"] for m in maps if "cpu1" in m)
    serial = run["driver_cpu"] - inside
    driver_tasks = sum(t["cpu"] for t in tasks if t["start_cpu"] == 0.0)
    inside -= driver_tasks  # the driver's own tasks are counted as tasks
    parallel = sum(t["cpu"] for t in tasks)
    per_task: dict[str, float] = {}
    for t in tasks:
        per_task[t["task"]] = per_task.get(t["task"], 0.0) + t["cpu"]
    starts = {t["pid"]: t["start_cpu"] for t in tasks if t["start_cpu"]}
    forkserver = run.get("forkserver_cpu", 0.0)
    out.update(wall=run["end"] - run["start"], driver_cpu=run["driver_cpu"],
               driver_in_maps_cpu=inside, driver_serial_cpu=serial, tasks_cpu=parallel,
               tasks_cpu_by_kind=per_task,
               worker_start_cpu=sum(starts.values()) + forkserver, forkserver_cpu=forkserver,
               # (the report's zeroed shares, after the write, are not counted as tasks)
               idle_after_last_task=run["end"] - max(
                   (t["end"] for t in tasks if t["task"] != "_zeroed"), default=run["start"]),
               workers_seen=len(starts), driver_tasks_cpu=driver_tasks,
               children_cpu=run["children_cpu"],
               amdahl=(serial + parallel) / (serial + parallel / n_sim) if parallel else 1.0)
    # Each map's tasks (those that started within it), as submitted (task start order is
    # close to it) and largest first.
    sim_order = sim_lpt = 0.0
    rounds = []
    for m in maps:
        if "end" not in m:
            continue
        mine = [t for t in tasks if m["start"] - 1e-3 <= t["start"] <= m["end"]
                and (t["task"] == m["task"] or m["task"] in ("_encode", "_encode_rows")
                     and t["task"] in ("_encode", "_encode_rows"))]
        costs = [t["cpu"] for t in mine]
        one = sum(costs)
        in_order, tail = _makespan(costs, n_sim)
        lpt, lpt_tail = _makespan(sorted(costs, reverse=True), n_sim)
        sim_order += in_order
        sim_lpt += lpt
        rounds.append({"task": m["task"], "tasks": len(mine), "cpu": one,
                       "largest": max(costs, default=0.0), "wall": m["end"] - m["start"],
                       f"sim{n_sim}_in_order": in_order, f"sim{n_sim}_lpt": lpt,
                       "idle_tail_in_order": tail, "idle_tail_lpt": lpt_tail})
    out["maps"] = rounds
    out[f"sim{n_sim}_in_order"] = serial + sim_order
    out[f"sim{n_sim}_lpt"] = serial + sim_lpt
    out["sim1"] = serial + parallel
    # Wall: how long 0, 1, 2... tasks were running.
    events = sorted([(t["start"], 1) for t in tasks] + [(t["end"], -1) for t in tasks])
    busy: dict[int, float] = {}
    level, last = 0, run["start"]
    gaps = []  # (from, to, tasks running) of the spans of 0.1 s or more below every worker
    workers = max(1, len({t["pid"] for t in tasks if t["start_cpu"]}))
    for when, step in events:
        busy[level] = busy.get(level, 0.0) + when - last
        if level < workers and when - last >= 0.1:
            gaps.append((round(last - run["start"], 2), round(when - run["start"], 2), level))
        level, last = level + step, when
    out["gaps"] = gaps
    busy[level] = busy.get(level, 0.0) + run["end"] - last
    out["wall_with_k_tasks_running"] = {str(k): round(v, 2) for k, v in sorted(busy.items())}
    out["stages"] = [{"stage": s["stage"], "at_wall": round(s["wall"] - run["start"], 2),
                      "driver_cpu": round(s["cpu"], 2)} for s in run["stages"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--ray", action="store_true", help="also a local Ray cluster")
    parser.add_argument("--bits", type=float, default=4.0)
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=3, metavar=("WORKERS", "RAY", "RESULT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workers, ray, result = int(args.child[0]), args.child[1] == "1", Path(args.child[2])
        with tempfile.TemporaryDirectory() as scratch:
            trace = Path(scratch) / "trace"
            trace.mkdir()
            run = _child(args.model, workers, ray, args.bits, Path(scratch) / "out.dna",
                         trace)
            run["tasks"] = _tasks(trace)
            import hashlib

            run["sha256"] = hashlib.sha256((Path(scratch) / "out.dna").read_bytes()
                                           ).hexdigest()
        result.write_text(json.dumps(run))
        return
    configs = [(int(w), False) for w in args.workers.split(",")]
    if args.ray:
        configs.append((2, True))
    results = []
    for workers, ray in configs:
        load = os.getloadavg()[0]
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run([sys.executable, __file__, "--model", args.model, "--bits",
                            str(args.bits), "--child", str(workers), "1" if ray else "0",
                            f.name], check=True)
            run = json.loads(Path(f.name).read_text())
        summary = analyse(run, run["tasks"], 2)
        summary.update(workers=workers, ray=ray, load_before=load,
                       load_after=os.getloadavg()[0], sha256=run["sha256"][:16])
        results.append(summary)
        print(json.dumps(summary, indent=1), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print("| run | load | wall s | driver serial CPU s | driver CPU in maps s | tasks CPU s "
          "| worker start CPU s | idle after last task s | Amdahl 2 | sim 2 in order "
          "| sim 2 LPT | sha256 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        one = r["sim1"]
        print(f"| {'ray' if r['ray'] else 'pool'} {r['workers']} | {r['load_before']:.1f}–"
              f"{r['load_after']:.1f} | {r['wall']:.1f} | {r['driver_serial_cpu']:.1f} | "
              f"{r['driver_in_maps_cpu']:.1f} | {r['tasks_cpu']:.1f} | "
              f"{r['worker_start_cpu']:.1f} | {r['idle_after_last_task']:.1f} | "
              f"{r['amdahl']:.2f} | {one / r['sim2_in_order']:.2f} | "
              f"{one / r['sim2_lpt']:.2f} | {r['sha256']} |")
    pools = {r["workers"]: r for r in results if not r["ray"]}
    if 1 in pools and 2 in pools:
        print(f"\nbound for 2 workers: {bound(pools[1], pools[2]):.3f}")


def bound(one: dict, two: dict) -> float:
    """2 × (tasks + one worker's start) / (tasks + driver in maps + workers' start +
    driver serial + idle after the last task): the one worker's start from the 1-worker
    run ``one``, the rest from the 2-worker run ``two`` (`analyse`'s figures)."""
    return 2 * (two["tasks_cpu"] + one["worker_start_cpu"]) / (
        two["tasks_cpu"] + two["driver_in_maps_cpu"] + two["worker_start_cpu"]
        + two["driver_serial_cpu"] + two["idle_after_last_task"])


if __name__ == "__main__":
    main()
