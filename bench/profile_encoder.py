"""cProfile of the encoder: `compress_model` on all-MiniLM-L6-v2 at 4 bits per weight.

    .venv/bin/python bench/profile_encoder.py OUT.dna [--threads 1] [--top 25] [--model M]
        [--bits B] [--no-profile] [--cpu]

Prints the seconds, the file's size and sha256, then the top of the profile by own time
and by cumulative time; the raw profile is kept as OUT.dna.prof. ``--threads N`` limits
torch and BLAS to N threads, as a worker of `weightdna.codec.workers` runs (default: the
libraries' own). ``--no-profile``: time the run only (wall and this process's CPU seconds:
on a shared box CPU time is the less noisy), for old-against-new comparisons.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--bits", type=float, default=4.0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--model", help="another model (default: MiniLM)")
    parser.add_argument("--no-profile", action="store_true", help="time only")
    parser.add_argument("--cpu", action="store_true",
                        help="profile this process's CPU time, not wall time (a shared box)")
    args = parser.parse_args()
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights, minilm_path

    if args.threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    weights = load_weights(args.model or minilm_path())
    profile = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
    start, start_cpu = time.perf_counter(), time.process_time()
    if not args.no_profile:
        profile.enable()
    report = compress_model(weights, args.output, Target("bits_per_weight", args.bits),
                            overwrite=True)
    profile.disable()
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    digest = hashlib.sha256(Path(args.output).read_bytes()).hexdigest()
    print(f"seconds {seconds:.1f} cpu_seconds {cpu:.1f} bytes {report.file_bytes} "
          f"sha256 {digest}")
    if args.no_profile:
        return
    profile.dump_stats(args.output + ".prof")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
