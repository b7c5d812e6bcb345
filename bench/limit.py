"""The per-row Shannon limit (`weightdna.baselines.limit`) of a model's float tensors at
given rates: the best SNR any coder could reach with each row's scale known for free.

    .venv/bin/python bench/limit.py                      # whole MiniLM, 1–8 bits/weight
    .venv/bin/python bench/limit.py MODEL --rates 2,4
"""

from __future__ import annotations

import argparse
import time

from weightdna.baselines.limit import row_shannon_limit
from weightdna.weights import load_weights, minilm_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model file or folder (default: MiniLM)")
    parser.add_argument("--rates", default="1,2,3,4,6,8")
    args = parser.parse_args(argv)
    weights = load_weights(args.model or minilm_path())
    rates = [float(r) for r in args.rates.split(",")]
    start = time.perf_counter()
    tensors = [weights.numpy(i.name) for i in weights.infos if i.dtype.startswith("float")]
    limit = row_shannon_limit(tensors, rates)
    print(f"{len(tensors)} float tensors, {sum(t.size for t in tensors):,} weights, "
          f"{time.perf_counter() - start:.1f} s")
    print("| bits/weight | " + " | ".join(f"{r:g}" for r in rates) + " |")
    print("|---|" + "---:|" * len(rates))
    print("| per-row limit, dB | " + " | ".join(f"{limit[r]:.2f}" for r in rates) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
