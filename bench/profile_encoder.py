"""cProfile of the encoder: `compress_model` on all-MiniLM-L6-v2 at 4 bits per weight.

    .venv/bin/python bench/profile_encoder.py OUT.dna [--threads 1] [--top 25] [--model M]
        [--bits B] [--no-profile] [--cpu]
    .venv/bin/python bench/profile_encoder.py --compare [--bits 4] [--qp -28] [--markdown]

Prints the seconds, the file's size and sha256, then the top of the profile by own time
and by cumulative time; the raw profile is kept as OUT.dna.prof. ``--threads N`` limits
torch and BLAS to N threads, as a worker of `weightdna.codec.workers` runs (default: the
libraries' own). ``--no-profile``: time the run only (wall and this process's CPU seconds:
on a shared box CPU time is the less noisy), for old-against-new comparisons. numba's
compiled kernels (the trellis search, the rate control's rounding) appear in the profile
as one line each, their own time being the compiled code's.

``--compare``: one run of fresh processes, one after another, on the same machine: our
encoder in one process (torch and BLAS on one thread), NNCodec's encoder (from
.venv-peers, torch on one thread; ``--qp``: about the same size), and our encoder in a
pool of 1 and of 2 workers. For each: wall seconds, CPU seconds (this process and its
workers: `time.process_time` plus the reaped children's rusage) and weights per CPU
second, the size in bits per weight. The goal of issue 14: our weights per CPU second ≥ 2×
NNCodec's; 2 workers ≥ 1.8× one in wall time.
"""

# Only the standard library at the top: the NNCodec child runs this file under
# .venv-peers/bin/python, where weightdna is not installed.
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the peers' environment
        return
    threadpool_limits(threads)


def _cpu_now() -> float:
    """CPU seconds of this process and of its children reaped so far."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _child_dna(model: str, output: str, bits: str, workers: str) -> dict:
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights

    _limit_threads(1)
    weights = load_weights(model)
    n = int(workers)
    start, cpu = time.perf_counter(), _cpu_now()
    report = compress_model(weights, output, Target("bits_per_weight", float(bits)),
                            overwrite=True, workers=n or None)
    seconds, cpu = time.perf_counter() - start, _cpu_now() - cpu
    digest = hashlib.sha256(Path(output).read_bytes()).hexdigest()
    return {"seconds": seconds, "cpu": cpu, "bytes": report.file_bytes,
            "weights": report.weights, "bits_per_weight": report.bits_per_weight,
            "snr_db": report.snr_db, "sha256": digest}


def _child_nncodec(inputs: str, output: str, qp: str) -> dict:
    import numpy as np

    sys.path.insert(0, str(REPO / "bench" / "peers"))
    import nncodec_worker

    _limit_threads(1)
    with np.load(inputs, allow_pickle=False) as data:
        tensors = {name: data[name] for name in data.files}
    start, cpu = time.perf_counter(), _cpu_now()
    bitstream = nncodec_worker.encode(tensors, int(qp), Path(output + ".tmp"))
    seconds, cpu = time.perf_counter() - start, _cpu_now() - cpu
    restored = nncodec_worker.decode(bytes(bitstream))
    signal = sum(float(np.dot(v.reshape(-1).astype(np.float64), v.reshape(-1)))
                 for v in tensors.values())
    noise = sum(float(np.sum((np.asarray(restored[k], np.float64) - v) ** 2))
                for k, v in tensors.items())
    weights = sum(v.size for v in tensors.values())
    return {"seconds": seconds, "cpu": cpu, "bytes": len(bitstream), "weights": weights,
            "bits_per_weight": 8.0 * len(bitstream) / weights,
            "snr_db": 10 * np.log10(signal / noise)}


def _run(python: str, *args: str) -> dict:
    done = subprocess.run([python, __file__, "--child", *args], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(bits: float, qp: int) -> list[tuple[str, dict]]:
    import numpy as np

    from weightdna.baselines.nncodec import nncodec_available, peers_python
    from weightdna.weights import load_weights, minilm_path

    model = str(minilm_path() / "model.safetensors")
    rows = []
    with tempfile.TemporaryDirectory(prefix="weightdna-compare-") as tmp:
        rows.append(("weightdna, in-process", _run(sys.executable, "dna", model,
                                                    f"{tmp}/a.dna", str(bits), "0")))
        if nncodec_available():
            weights = load_weights(model)
            inputs = f"{tmp}/in.npz"
            np.savez(inputs, **{i.name: weights.numpy(i.name, np.float32)
                                for i in weights.float_infos()})
            rows.append((f"NNCodec, QP {qp}", _run(str(peers_python()), "nncodec", inputs,
                                                   f"{tmp}/n.nnc", str(qp))))
        else:
            rows.append(("NNCodec", {"skipped": "bash bench/peers/setup_peers.sh"}))
        for workers in (1, 2):
            rows.append((f"weightdna, {workers} worker{'s' if workers > 1 else ''}",
                         _run(sys.executable, "dna", model, f"{tmp}/w{workers}.dna",
                              str(bits), str(workers))))
    return rows


def print_comparison(rows: list[tuple[str, dict]], markdown: bool) -> None:
    lines = ["| encoder | wall s | CPU s | weights / CPU s | bits/weight | SNR dB |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows:
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | | |")
            continue
        lines.append(f"| {name} | {row['seconds']:.1f} | {row['cpu']:.1f} | "
                     f"{row['weights'] / row['cpu']:,.0f} | {row['bits_per_weight']:.3f} | "
                     f"{row['snr_db']:.2f} |")
    print("\n".join(lines) if markdown else "\n".join(line.replace("|", " ") for line in lines))
    by = dict(rows)
    ours, peer = by["weightdna, in-process"], next((r for n, r in rows
                                                    if n.startswith("NNCodec")), {})
    if "cpu" in peer:
        ratio = (ours["weights"] / ours["cpu"]) / (peer["weights"] / peer["cpu"])
        print(f"weights per CPU second, ours / NNCodec's: {ratio:.2f} (goal ≥ 2)")
    one, two = by["weightdna, 1 worker"], by["weightdna, 2 workers"]
    print(f"2 workers / 1 worker (wall): {one['seconds'] / two['seconds']:.2f} (goal ≥ 1.8); "
          f"same file: {one['sha256'] == two['sha256'] == ours['sha256']}")


CHILDREN = {"dna": _child_dna, "nncodec": _child_nncodec}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(CHILDREN[sys.argv[2]](*sys.argv[3:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?")
    parser.add_argument("--bits", type=float, default=4.0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--model", help="another model (default: MiniLM)")
    parser.add_argument("--no-profile", action="store_true", help="time only")
    parser.add_argument("--cpu", action="store_true",
                        help="profile this process's CPU time, not wall time (a shared box)")
    parser.add_argument("--compare", action="store_true",
                        help="ours against NNCodec, and 1 against 2 workers, in one run")
    parser.add_argument("--qp", type=int, default=-28, help="NNCodec's QP (-28: ≈ 4 bpw)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.compare:
        print_comparison(compare(args.bits, args.qp), args.markdown)
        return
    if not args.output:
        parser.error("give OUT.dna, or --compare")
    import cProfile
    import pstats

    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights, minilm_path

    if args.threads:
        _limit_threads(args.threads)
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
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
