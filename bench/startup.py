"""Start-up cost of the command line: CPU seconds of `weightdna --version`, `--help` and a
command's `--help`, beside `python -c pass` measured in the same run.

    .venv/bin/python bench/startup.py [--repeats 7] [--markdown]

CPU time (user + system of the child, from getrusage) rather than wall time, so a busy
machine changes the figures little; each is the median of the repeats. The ratio to the bare
interpreter is the figure that carries across machines. Goal: --version and --help under
0.3 s of CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "python -c pass": ["-c", "pass"],
    "weightdna --version": ["-m", "weightdna", "--version"],
    "weightdna --help": ["-m", "weightdna", "--help"],
    "weightdna info --help": ["-m", "weightdna", "info", "--help"],
    "weightdna train --help": ["-m", "weightdna", "train", "--help"],
    "weightdna compress --help": ["-m", "weightdna", "compress", "--help"],
}


def cpu_seconds(args: list[str]) -> float:
    """User + system CPU seconds of one run of ``python args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # This checkout, not an installed copy: -m puts the working folder first on the path.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, env=env,
                   cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--markdown", action="store_true")
    options = parser.parse_args()
    cpu_seconds(CASES["weightdna --help"])  # warm the file cache and the .pyc files
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(options.repeats):  # interleaved, so load drifts hit every case alike
        for name, args in CASES.items():
            times[name].append(cpu_seconds(args))
    base = statistics.median(times["python -c pass"])
    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, median of {options.repeats}")
    if options.markdown:
        print("| command | CPU s | × `python -c pass` |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        if options.markdown:
            print(f"| `{name}` | {median:.3f} | {median / base:.1f} |")
        else:
            print(f"{name:28} {median:7.3f} s CPU  {median / base:5.1f}× python -c pass")


if __name__ == "__main__":
    main()
