"""Compress and decompress across cores, on a local Ray cluster, and resumed after a kill.

    .venv/bin/python bench/scale.py [--model PATH] [--bits 4] [--workers 1,2] [--ray]
                                    [--resume] [--markdown] [--json F]

Each run is a fresh subprocess (`weightdna compress` / `decompress`, as a user runs them,
``--check none``), timed whole (interpreter start, imports, the pool's or cluster's start
included), its peak memory the largest sum of the resident sets of its processes (the
command and its workers, sampled every 0.1 s from /proc). Every .dna file is
compared with the first, byte for byte, as is every restored safetensors file.
``--resume`` kills a compress (SIGKILL, its whole process group) once half the time of
the first run has passed and finishes it with ``--resume``: the two commands' seconds.
The model defaults to all-MiniLM-L6-v2 (22.7M weights). The box these numbers come from
has 2 cores shared with other jobs: repeat a run before trusting a ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MB = 1 << 20


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session_rss(session: int) -> int:
    """Bytes resident in every process of ``session`` (a command and its workers)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == session:  # the session id (field 6 of /proc/PID/stat)
                total += int(Path(entry.path, "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


def _run(args: list[str], kill_after: float | None = None) -> dict:
    """One CLI command in its own session: seconds, the peak of its processes' summed
    resident memory (sampled every 0.1 s), killed or not."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "weightdna", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed, peak = False, 0
    while proc.poll() is None:
        peak = max(peak, _session_rss(proc.pid))
        if kill_after is not None and time.perf_counter() - start > kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.1)
    err = proc.communicate()[1]
    seconds = time.perf_counter() - start
    if proc.returncode and not killed:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode()}")
    return {"seconds": seconds, "peak_mb": peak / MB, "killed": killed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a safetensors file or folder (default: MiniLM)")
    parser.add_argument("--bits", type=float, default=4.0)
    parser.add_argument("--workers", default="1,2", help="comma-separated counts")
    parser.add_argument("--ray", action="store_true", help="also a local Ray cluster")
    parser.add_argument("--resume", action="store_true", help="also kill and resume")
    parser.add_argument("--out", default="/tmp/weightdna-scale", help="scratch folder")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    from weightdna.weights import load_weights, minilm_path

    model = Path(args.model) if args.model else minilm_path()
    weights = load_weights(model).total_numel
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bits = ["--bits-per-weight", f"{args.bits:g}", "--check", "none", "--force"]
    rows, reference, restored = [], None, None
    for n in [int(w) for w in args.workers.split(",")]:
        dna = out / f"w{n}.dna"
        row = _run(["compress", str(model), "-o", str(dna), "--workers", str(n), *bits])
        same = reference is None or _digest(dna) == reference
        reference = reference or _digest(dna)
        rows.append({"run": f"compress --workers {n}", **row, "same_bytes": same})
        back = out / f"w{n}.safetensors"
        row = _run(["decompress", str(dna), "-o", str(back), "--workers", str(n), "--force"])
        same = restored is None or _digest(back) == restored
        restored = restored or _digest(back)
        rows.append({"run": f"decompress --workers {n}", **row, "same_bytes": same})
    if args.ray:
        dna = out / "ray.dna"
        row = _run(["compress", str(model), "-o", str(dna), "--ray", "--workers", "2", *bits])
        rows.append({"run": "compress --ray (local, 2 CPUs)", **row,
                     "same_bytes": _digest(dna) == reference})
    if args.resume:
        dna = out / "resumed.dna"
        first = rows[0]["seconds"]
        killed = _run(["compress", str(model), "-o", str(dna), "--workers", "1", *bits],
                      kill_after=first / 2)
        rows.append({"run": f"compress killed after {first / 2:.0f} s", **killed,
                     "same_bytes": None})
        row = _run(["compress", str(model), "-o", str(dna), "--workers", "1", "--resume",
                    *bits])
        rows.append({"run": "compress --resume", **row,
                     "same_bytes": _digest(dna) == reference})
    for row in rows:
        row["weights_per_s"] = weights / row["seconds"]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.markdown:
        print("| run | seconds | weights/s | peak RSS MB (all processes) | same bytes |")
        print("|---|---:|---:|---:|---|")
        for r in rows:
            same = "" if r["same_bytes"] is None else ("yes" if r["same_bytes"] else "**no**")
            print(f"| {r['run']} | {r['seconds']:.1f} | {r['weights_per_s']:,.0f} | "
                  f"{r['peak_mb']:.0f} | {same} |")
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
