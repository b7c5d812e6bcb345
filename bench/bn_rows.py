"""Rows of the kernels a BatchNorm follows, weighed by it or not: the panel's judges.

    PYTHONPATH=$PWD .venv/bin/python bench/bn_rows.py --models ocrcls \
        --rules off,gain,variance --targets 2.95,3,3.05 [--no-files]

For each model (`bench/panel.py`'s subjects: the unseen ONNX models and the BatchNorm
CNNs) and each rule of `weightdna.codec.ratecontrol.BN_ROWS`, `compress_model` with what
`weightdna compress` gives it by default (`weightdna.evaluate.defaults.compress_inputs`:
the stored graph in the size budget, the default bias correction; ``--no-files``: without
the stored graph, the library path's budget before stop 33) at each bits-per-weight
target, decompressed and judged; one line per point, and
the mean of the targets per rule. The same process sets the rule (no workers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from panel import batchnorm_subject, digits_subject, unseen_subject

from weightdna.codec import ratecontrol
from weightdna.codec.bundle import StoredFiles
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.defaults import compress_inputs
from weightdna.weights import load_weights


def short(extra: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in extra.items()
                     if isinstance(v, float) and k != "samples")


def subject_for(name: str, workdir: Path):
    if name in ("mlp", "cnn"):
        return digits_subject(name, workdir)
    if name in ("bncnn", "onnx", "detector"):
        return batchnorm_subject(name, workdir)
    return unseen_subject(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ocrcls")
    parser.add_argument("--rules", default="off,gain")
    parser.add_argument("--targets", default="2.95,3,3.05")
    parser.add_argument("--no-files", action="store_true",
                        help="leave the stored files (an ONNX graph) out of the budget")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            subject = subject_for(name, tmp)
            weights = load_weights(subject.path)
            print(f"{name}: {len(weights.batchnorms)} kernels a BatchNorm follows", flush=True)
            for rule in args.rules.split(","):
                ratecontrol.BN_ROWS = rule
                kept = []
                for target in targets:
                    start = time.perf_counter()
                    point = Path(tempfile.mkdtemp(dir=tmp))
                    dna, out = point / "m.dna", point / "r.safetensors"
                    goal = Target("bits_per_weight", target)
                    options = compress_inputs(subject.path, weights, goal).options()
                    if args.no_files:
                        options["files"] = StoredFiles()
                    report = compress_model(weights, dna, goal, **options)
                    decompress_model(dna, out)
                    value, extra = subject.judge(load_weights(out).state_dict())
                    kept.append(value)
                    seconds = time.perf_counter() - start
                    print(f"| {name} | {rule} | {target:g} | {report.bits_per_weight:.3f} | "
                          f"{100 * value:.2f} | {short(extra)} | {seconds:.0f} s |", flush=True)
                print(f"| {name} | {rule} | mean | | **{100 * sum(kept) / len(kept):.2f}** | |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
