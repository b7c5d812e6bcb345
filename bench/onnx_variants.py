"""Variants of data-free ONNX sensitivities, judged by function on the unseen models.

    PYTHONPATH=. .venv/bin/python bench/onnx_variants.py [--models magika,silero]
        [--rates 2,3] [--variants none,first,first-sqrt,...] [--out results/onnx_variants]

Each variant measures sensitivities (`weightdna.evaluate.onnx_sensitivity`) on the
output check's synthetic inputs, transforms them, and compresses at a whole-model
bits-per-weight target (objective layer, no calibration), judged as `bench/panel.py`
judges (`weightdna.evaluate.unseen`). A variant's name: the outputs measured ("first":
the graph's first output, "all": every output, each over its own RMS), then options:
"sqrt" (s^0.5: ratios tempered), "zmed" (a tensor measured at exactly 0, one the
synthetic run does not reach, counts as the median, not the least), "snr15" (perturbed at
15 dB instead of 30), "s32" (32 samples instead of 8), "cK" (each clipped to
[median / K, median × K], after "sqrt"). "none": no sensitivities.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from panel import run_point, say, unseen_subject, write_rows  # noqa: E402

from weightdna.evaluate.onnx_sensitivity import onnx_sensitivity  # noqa: E402
from weightdna.evaluate.sensitivity import for_every_tensor  # noqa: E402
from weightdna.weights import load_weights  # noqa: E402


def variant_sensitivity(path: Path, variant: str) -> tuple[dict[str, float] | None, float]:
    parts = variant.split("-")
    outputs, options = parts[0], set(parts[1:])
    started = time.perf_counter()
    result = onnx_sensitivity(path, outputs=outputs,
                              snr_db=15.0 if "snr15" in options else 30.0,
                              samples=32 if "s32" in options else 8)
    seconds = time.perf_counter() - started
    if result.measured is None:
        say(f"  {variant}: {result.why_not}")
        return None, seconds
    measured = dict(result.measured)
    positive = [v for v in measured.values() if v > 0]
    if "zmed" in options and positive:
        measured = {k: v for k, v in measured.items() if v > 0}  # unread: the median
    if "sqrt" in options and positive:
        measured = {k: v ** 0.5 for k, v in measured.items()}
    clip = next((float(o[1:]) for o in options if o[0] == "c" and o[1:].isdigit()), None)
    if clip is not None and positive:
        middle = float(np.median([v for v in measured.values() if v > 0]))
        measured = {k: min(max(v, middle / clip), middle * clip) for k, v in measured.items()}
    return for_every_tensor(measured, load_weights(path).names), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="magika,silero")
    parser.add_argument("--rates", default="2,3")
    parser.add_argument("--variants", default="none,first,first-zmed,first-sqrt,all,all-sqrt")
    parser.add_argument("--out", type=Path, default=Path("results/onnx_variants"))
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            subject = unseen_subject(name)
            for variant in args.variants.split(","):
                sensitivity, seconds = None, 0.0
                if variant != "none":
                    sensitivity, seconds = variant_sensitivity(subject.path, variant)
                    if sensitivity is None:
                        continue
                    values = np.array(list(sensitivity.values()))
                    say(f"  {name} {variant}: measured in {seconds:.1f} s, ratios "
                        f"{values.min():.3g} .. {values.max():.3g}")
                for rate in rates:
                    row = run_point(subject, rate, "layer", Path(tmp), sensitivity)
                    row["objective"] = f"layer+{variant}"
                    row["sensitivity_seconds"] = seconds
                    rows.append(row)
    write_rows(args.out, "variants", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
