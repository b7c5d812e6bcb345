"""Decoder speed and output digest: decode every tensor of .dna files in this process.

    PYTHONPATH=OLD .venv/bin/python bench/decode_speed.py A.dna [B.dna ...] [--repeat 3]
        [--profile 25] [--tensors 5]

For each file: the sections are read once (not timed), then every tensor is decoded
(`decode_tensor`, what `decompress_model` and `load_file` run per tensor) ``--repeat``
times; prints the median and every repeat's seconds (wall, and this process's CPU
time: on a shared box the less noisy of the two), weights/s, and one sha256 over all
decoded tensors' names, dtypes, shapes and bytes — so that two checkouts (``PYTHONPATH``)
can be compared on the same files for speed and for bit-identical output. One thread for
torch and BLAS, as a worker runs. ``--profile N``: a cProfile of one more decode, top N by
own time. ``--tensors N``: each tensor decoded ``--repeat`` times more, the N slowest by
their least CPU seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import math
import pstats
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--tensors", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON line per file")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    import weightdna
    from weightdna.codec.container import read_dna_file
    from weightdna.codec.tensor import decode_tensor

    torch.set_num_threads(1)
    threadpool_limits(1)
    for path in args.files:
        dna = read_dna_file(path)
        work = [(entry, dna.read_sections(entry["name"])) for entry in dna.entries]
        weights = sum(math.prod(entry["shape"]) for entry in dna.entries)

        def decode_all(digest: hashlib._Hash | None = None) -> None:
            for entry, sections in work:  # noqa: B023 - used in this iteration only
                t = decode_tensor(entry, sections, version=dna.version)  # noqa: B023
                if digest is not None:
                    digest.update(f"{entry['name']}|{t.dtype}|{tuple(t.shape)}|".encode())
                    digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

        digest = hashlib.sha256()
        decode_all(digest)  # warm: numba's cache loaded, the digest taken
        seconds, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            decode_all()
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        median, median_cpu = statistics.median(seconds), statistics.median(cpu)
        result = {"file": path, "code": str(weightdna.__file__).rsplit("/weightdna/", 1)[0],
                  "weights": weights, "median_s": round(median, 4),
                  "seconds": [round(s, 4) for s in seconds],
                  "weights_per_s": round(weights / median), "median_cpu_s": round(median_cpu, 4),
                  "cpu_seconds": [round(s, 4) for s in cpu],
                  "weights_per_cpu_s": round(weights / median_cpu), "sha256": digest.hexdigest()}
        print(json.dumps(result) if args.json else
              f"{path}: {weights:,} weights, median {median:.3f} s "
              f"({weights / median / 1e6:.2f}M weights/s), runs "
              f"{', '.join(f'{s:.3f}' for s in seconds)}; CPU median {median_cpu:.3f} s "
              f"({weights / median_cpu / 1e6:.2f}M weights per CPU second); "
              f"decoded sha256 {digest.hexdigest()}")
        if args.tensors:
            own = []
            for entry, sections in work:
                best = math.inf
                for _ in range(args.repeat):
                    start_cpu = time.process_time()
                    decode_tensor(entry, sections, version=dna.version)
                    best = min(best, time.process_time() - start_cpu)
                own.append((best, entry["name"], math.prod(entry["shape"])))
            for best, name, count in sorted(own, reverse=True)[:args.tensors]:
                print(f"  {name}: {count:,} weights, {best:.3f} CPU s "
                      f"({count / best / 1e6:.2f}M weights per CPU second)")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            decode_all()
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
