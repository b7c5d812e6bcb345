"""DNA fitting throughput beside the dense matmul rate torch reaches on this machine.

    .venv/bin/python bench/fit_throughput.py [--width 256] [--depth 3] [--batch-size 16384]
        [--steps 10] [--repeats 5] [--device auto] [--threads N] [--markdown]

A training step of a SIREN on B coordinates costs, per dense layer of ``in → out``,
2·in·out FLOPs per coordinate forward and about twice that backward (weight and input
gradients): 6·in·out in all. The matmul reference runs in the same process: a
(B × width) @ (width × width) product, the shape of a hidden layer's forward, and a large
square product. The ratio of the fit's FLOP/s to the better of the two, measured back to
back in each round, is the figure of merit (target ≥ 50%).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import numpy as np
import torch

from weightdna.dna import FitConfig, fit_dna, resolve_device


def matmul_flops(m: int, k: int, n: int, device: torch.device, seconds: float = 1.0) -> float:
    """FLOP/s of a float32 (m×k) @ (k×n) product, the best of repeated timed runs."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    torch.mm(a, b, out=out)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b, out=out)
        _sync(device)
        best = max(best, 5 * 2.0 * m * k * n / (time.perf_counter() - t0))
    return best


def siren_step_flops(in_features: int, width: int, depth: int) -> int:
    """FLOPs of one coordinate's forward and backward pass through the SIREN."""
    dims = [in_features] + [width] * depth + [1]
    return sum(6 * a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fit_step_seconds(width: int, depth: int, batch: int, steps: int,
                     device: torch.device) -> float:
    """Seconds per step of fit_dna on a random signal (the first call also warms up)."""
    n = 4 * batch
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(n, 4, generator=gen) * 2 - 1
    values = torch.randn(n, generator=gen)
    config = FitConfig(width=width, depth=depth, batch_size=batch, steps=steps,
                       eval_every=steps, device=str(device))
    return fit_dna(coords, values, config).seconds / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed fit")
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds of fit + matmul timing (the best round is reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (default: torch's own choice)")
    parser.add_argument("--markdown", action="store_true", help="print a BENCHMARKS.md table")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    # Rounds of fit, then matmuls, back to back: other jobs on a shared machine slow both
    # alike within a round, so the ratio is taken per round; the best round is reported.
    fit_step_seconds(args.width, args.depth, args.batch_size, 2, device)  # warm-up
    flops_per_coord = siren_step_flops(4, args.width, args.depth)
    rounds = []
    for _ in range(args.repeats):
        step_s = fit_step_seconds(args.width, args.depth, args.batch_size, args.steps, device)
        layer_mm = matmul_flops(args.batch_size, args.width, args.width, device, 0.5)
        square_mm = matmul_flops(4096, 4096, 4096, device, 1.0)
        fit_flops = args.batch_size * flops_per_coord / step_s
        rounds.append((fit_flops / max(layer_mm, square_mm), step_s, layer_mm, square_mm))
    ratios = sorted(r[0] for r in rounds)
    ratio, step_s, layer_mm, square_mm = max(rounds)
    coords_per_s = args.batch_size / step_s
    fit_flops = coords_per_s * flops_per_coord

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    rows = [
        ("device", name),
        ("SIREN", f"4 → {args.width} ×{args.depth} sine → 1, batch {args.batch_size}"),
        ("fit: coordinates / s", f"{coords_per_s:,.0f}"),
        ("fit: seconds / step", f"{step_s * 1e3:.1f} ms"),
        ("fit: FLOP / coordinate (fwd+bwd)", f"{flops_per_coord:,}"),
        ("fit: achieved GFLOP/s", f"{fit_flops / 1e9:.1f}"),
        (f"matmul {args.batch_size}×{args.width} @ {args.width}×{args.width} GFLOP/s",
         f"{layer_mm / 1e9:.1f}"),
        ("matmul 4096×4096 @ 4096×4096 GFLOP/s", f"{square_mm / 1e9:.1f}"),
        ("fit / best matmul (best round)", f"{ratio:.0%}"),
        (f"fit / best matmul ({len(ratios)} rounds)", " ".join(f"{r:.0%}" for r in ratios)),
    ]
    if args.markdown:
        print(f"Measured {datetime.date.today().isoformat()} with torch {torch.__version__}, "
              f"NumPy {np.__version__}, Python {platform.python_version()}.\n")
        print("| quantity | value |\n|---|---|")
        for k, v in rows:
            print(f"| {k} | {v} |")
    else:
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
