"""Data-free GPTQ for ONNX graphs: which synthetic inputs, judged over nearby targets.

    PYTHONPATH=$PWD .venv/bin/python bench/onnx_gptq.py --models silero,magika \
        --variants none,noise,level:0.1,bytes --targets 1.95,2,2.05 [--loading 0.01] \
        [--no-files]

For each of `bench/panel.py`'s models (an ONNX file) and each variant, `compress_model` at
each bits-per-weight target with the ``layer`` objective (as the panel's runs, the stored
graph in the budget as `weightdna compress` stores it; ``--no-files``: not) and the
variant's calibration, decompressed and judged; one line per point and the mean of the
targets per variant (the judges scatter by several points between targets 0.01 bits per
weight apart). A variant is ``none`` (no calibration) or the inputs the Hessians
(`weightdna.evaluate.onnx_calibration.onnx_hessians`) are measured on:

* ``noise``: `weightdna.evaluate.outputs.onnx_inputs`' (the default: the output check's);
* ``level:F``: the same with every float input times F and every other float input of
  rank 3 (a recurrent state) zero: audio at a level (standard normal × 0.1 is an RMS of
  −20 dBFS, where speech is recorded, against 0 dBFS), a stream's first chunk;
* ``bytes``: integer inputs as runs (1 to `ID_RUN` positions) of bytes uniform in
  [0, 256): what a file-type classifier reads, where `onnx_inputs` gives ids below 100.

A variant may end in ``@L``: its Hessians' loading (`onnx_calibration.loaded`; default
``--loading``, `onnx_calibration.LOADING`). No input comes from the judges' data.
Writes OUT/onnx_gptq.json and .md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from panel import run_point, say, unseen_subject, write_rows

from weightdna.evaluate import onnx_calibration
from weightdna.evaluate.outputs import _id_runs, onnx_inputs


def feeds_for(variant: str):
    """The ``feeds`` of `onnx_hessians` for ``variant`` (None: `onnx_inputs`)."""
    kind, _, value = variant.partition(":")
    if kind == "noise":
        return None

    def made(session, model, samples, rng, skip):
        found = onnx_inputs(session, model, samples, rng, skip)
        if found is None:
            return None
        specs = {s.name: s for s in session.get_inputs()}
        batches = []
        for feeds in found.feeds:
            feeds = dict(feeds)
            for name, x in feeds.items():
                spec = specs[name]
                if kind == "level" and "float" in spec.type:
                    first = name == next(n for n in feeds if "float" in specs[n].type)
                    feeds[name] = (x * float(value) if first else np.zeros_like(x))
                elif kind == "bytes" and "int" in spec.type and x.ndim:
                    feeds[name] = _id_runs(list(x.shape), 256, rng).astype(x.dtype)
            batches.append(feeds)
        return replace(found, feeds=batches)

    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="silero,magika")
    parser.add_argument("--variants", default="none,noise")
    parser.add_argument("--targets", default="1.95,2,2.05")
    parser.add_argument("--loading", type=float, default=onnx_calibration.LOADING)
    parser.add_argument("--samples", type=int, default=onnx_calibration.SAMPLES)
    parser.add_argument("--min-rows", type=float, default=onnx_calibration.MIN_ROWS_PER_COLUMN,
                        help="onnx_calibration.MIN_ROWS_PER_COLUMN")
    parser.add_argument("--no-files", action="store_true",
                        help="leave the stored graph out of the budget")
    parser.add_argument("--out", type=Path, default=Path("results/onnx_gptq"))
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    rows, means = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            subject = unseen_subject(name)
            for variant in args.variants.split(","):
                calibration = None
                if variant != "none":
                    started = time.perf_counter()
                    inputs, _, loading = variant.partition("@")
                    result = onnx_calibration.onnx_hessians(
                        subject.path, samples=args.samples,
                        loading=float(loading) if loading else args.loading,
                        feeds=feeds_for(inputs), min_rows=args.min_rows)
                    say(f"  {name} {variant}: {result.describe()} {result.why_not}")
                    seconds = time.perf_counter() - started
                    calibration = lambda h=result.hessians: h  # noqa: E731
                figures = []
                for target in targets:
                    row = run_point(subject, target, "layer", Path(tmp), None, calibration,
                                    files=not args.no_files)
                    row["variant"] = variant
                    if variant != "none":
                        row["hessian_seconds"] = seconds
                    rows.append(row)
                    figures.append(row.get(subject.unit, float("nan")))
                means.append((name, variant, float(np.mean(figures)), figures))
                say(f"{name} {variant}: mean {np.mean(figures):.4f} over {targets} "
                    f"({', '.join(f'{f:.4f}' for f in figures)})")
    write_rows(args.out, "onnx_gptq", rows)
    print("\n| model | variant | mean | " + " | ".join(f"{t:g}" for t in targets) + " |")
    print("|---|---|---:|" + "---:|" * len(targets))
    for name, variant, mean, figures in means:
        print(f"| {name} | {variant} | {mean:.4f} | "
              + " | ".join(f"{f:.4f}" for f in figures) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
