"""What `solve_on_curves` checks in each measure round of a bits-per-weight target, and what
jumps between the checks nearest the crossing.

    .venv/bin/python bench/solve_checks.py RATE [OBJECTIVE] [--out OUT.dna]

`compress_model` on all-MiniLM-L6-v2 (torch on one thread) with `solve_on_curves` and
`allocate` wrapped: per round, every checked global step (log2), its excess over the
budget in bits and its estimated bits per weight, the allocation kept, and the eight
tensors whose estimated bits differ most between the best check that held and the
nearest that missed; then the bits per weight and SNR landed and this process's CPU
seconds (BENCHMARKS.md, "The size target's budget below a jump in the estimates").
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from weightdna.codec import compress
from weightdna.codec import ratecontrol as rc
from weightdna.codec.ratecontrol import Target
from weightdna.weights import load_weights, minilm_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rate", type=float)
    parser.add_argument("objective", nargs="?", default="mse")
    parser.add_argument("--out", default="/tmp/solve_checks.dna")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    allocate, solve = rc.allocate, compress.solve_on_curves
    checked: list[rc.Allocation] = []

    def logged(*a, **k):  # noqa: ANN002, ANN003, ANN202
        allocation = allocate(*a, **k)
        checked.append(allocation)
        return allocation

    def wrapped(coded, excess, per_row, target, coarse_is_ok, tolerance):  # noqa: ANN001, ANN202
        checked.clear()
        kept = solve(coded, excess, per_row, target, coarse_is_ok, tolerance)
        numel = sum(tc.info.numel for tc in coded)
        print(f"round: tolerance {tolerance:.0f} bits; checks:")
        for a in checked:
            print(f"   log2 step {math.log2(a.step):.5f} excess {excess(a):+.0f} "
                  f"bits/weight {a.bits / numel:.5f}")
        print(f"  kept: log2 step {math.log2(kept.step):.5f} excess {excess(kept):+.0f}")
        held = [a for a in checked if excess(a) <= 0]
        missed = [a for a in checked if excess(a) > 0]
        if held and missed:
            h, m = max(held, key=excess), min(missed, key=excess)
            moves = sorted(((m.choices[tc.info.name].bits - h.choices[tc.info.name].bits,
                             tc) for tc in coded), key=lambda d: -abs(d[0]))
            for d, tc in moves[:8]:
                a, b = h.choices[tc.info.name], m.choices[tc.info.name]
                print(f"    {tc.info.name:55s} {d:+9.0f} bits: "
                      f"{a.bits / tc.info.numel:.3f} -> {b.bits / tc.info.numel:.3f} "
                      f"bits/weight, {a.quantizer} -> {b.quantizer}")
        return kept

    rc.allocate, compress.solve_on_curves = logged, wrapped
    try:
        cpu = time.process_time()
        report = compress.compress_model(load_weights(minilm_path()), args.out,
                                         Target("bits_per_weight", args.rate),
                                         objective=args.objective, overwrite=True)
        cpu = time.process_time() - cpu
    finally:
        rc.allocate, compress.solve_on_curves = allocate, solve
    print(f"landed {report.bits_per_weight:.5f} bits/weight, SNR {report.snr_db:.3f} dB, "
          f"{cpu:.1f} CPU s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
