"""The model panel judged by function: weightdna's default against NNCodec at its best, at
equal size.

    PYTHONPATH=. .venv/bin/python bench/panel_nncodec.py [--models mlp,cnn,bncnn,onnx,detector]
        [--rates 1,2,3,4] [--json out.json]

For each panel model (bench/panel.py's subjects and judges: the digits models' held-out
accuracy, the BatchNorm CNN's in PyTorch, the ONNX nets' in onnxruntime):

* **weightdna**: `compress_model` at a whole-model bits/weight target with the CLI's
  defaults for that model (objective ``layer``; for the engine's digits models GPTQ on
  inputs distilled from the model, `weightdna.evaluate.calibration.calibration_for`), its
  .dna file decompressed and judged.
* **NNCodec**: every floating-point tensor coded as one NNR bitstream
  (`weightdna.baselines.nncodec`) at each of `SWEEP`'s settings (its package default, and
  RDOQ at λ-scales 0.75–1.25 with and without ``opt_qp``, non-weights at the weights' QP)
  and a grid of QPs spanning the rates; integer tensors are counted at their raw bytes and
  kept. Each restored model is judged. "At its best" for a rate is the best figure of any
  setting and QP whose bits/weight are at most that rate (+0.05, as a size target lands
  just under it): NNCodec gets every point it reaches within our budget.

Bits/weight are real bytes over every element of the model, for both. NNCodec needs
``.venv-peers`` (bench/peers/setup_peers.sh); without it this bench stops with that advice.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from panel import (  # bench/panel.py
    UNSEEN,
    batchnorm_subject,
    digits_subject,
    run_point,
    say,
    unseen_subject,
)

from weightdna.baselines.nncodec import SWEEP, nncodec_available, nncodec_roundtrip, qp_for_step
from weightdna.codec.ratecontrol import Target
from weightdna.errors import WeightDNAError
from weightdna.weights import load_weights

SLACK = 0.05  # bits/weight: a point this far above a rate still counts for it


def qp_grid(tensors: dict[str, torch.Tensor]) -> list[int]:
    """QPs every half octave from a step of 2σ down to σ/512 (σ: the pooled RMS of the
    float tensors with at least 2 dimensions, the ones a rate target spends bits on)."""
    big = [t.double() for t in tensors.values() if t.ndim >= 2]
    sigma = math.sqrt(sum(float((t * t).sum()) for t in big) / sum(t.numel() for t in big))
    return list(range(qp_for_step(2 * sigma), qp_for_step(sigma / 512) - 1, -2))


def nncodec_points(subject, workdir: Path) -> list[dict]:
    weights = load_weights(subject.path)
    state = weights.state_dict()
    # Tensors holding inf or NaN (magika's scalar inf) overflow NNCodec's quantiser at every
    # QP: they are kept and counted raw, as the integer tensors are.
    floats = {n: t for n, t in state.items()
              if t.is_floating_point() and bool(torch.isfinite(t).all())}
    others = sum(t.numel() * t.element_size() for n, t in state.items() if n not in floats)
    elements = sum(t.numel() for t in state.values())
    qps = qp_grid(floats)
    points = []
    for setting, options in SWEEP.items():
        started = time.perf_counter()
        try:
            coded = nncodec_roundtrip(floats, qps, settings=options)
        except WeightDNAError as exc:  # one QP can fail the batch: take each QP alone
            say(f"  nncodec {setting}: the batch failed ({str(exc)[-120:]}); QPs one by one")
            coded = {}
            for qp in qps:
                try:
                    coded.update(nncodec_roundtrip(floats, [qp], settings=options))
                except WeightDNAError as failed:
                    say(f"  nncodec {setting} qp {qp}: failed ({str(failed)[-80:]})")
        for qp, (restored, report) in coded.items():
            trial = dict(state)
            for name, array in restored.items():
                trial[name] = torch.from_numpy(np.asarray(array)).to(state[name].dtype)
            try:
                figure = subject.judge(trial)[0]
            except Exception as exc:  # noqa: BLE001 - a restored graph that no longer runs scores 0
                say(f"  nncodec {setting} qp {qp}: the restored model does not run ({exc})")
                figure = 0.0
            points.append({"setting": setting, "qp": qp, "figure": figure,
                           "bits_per_weight": 8 * (report["nbytes"] + others) / elements})
        say(f"  nncodec {setting}: {len(qps)} QPs in {time.perf_counter() - started:.0f} s")
    return points


def best_within(points: list[dict], rate: float) -> dict | None:
    inside = [p for p in points if p["bits_per_weight"] <= rate + SLACK]
    return max(inside, key=lambda p: (p["figure"], -p["bits_per_weight"])) if inside else None


def distilled(path: Path):
    """The digits models' default calibration: GPTQ on inputs distilled from the model."""
    from weightdna.evaluate.calibration import calibration_for

    def calibration():
        return calibration_for(path, "synthetic", Target("bits_per_weight", 2.0))
    return calibration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,bncnn,onnx,detector")
    parser.add_argument("--rates", default="1,2,3,4")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not nncodec_available():
        print("NNCodec's environment is missing: run bash bench/peers/setup_peers.sh",
              file=sys.stderr)
        return 2
    rates = [float(r) for r in args.rates.split(",")]
    rows = []
    lines = ["| model | bpw | weightdna (default) | NNCodec at its best (setting, QP, bpw) | "
             "weightdna − NNCodec |", "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.models.split(","):
            if name in ("mlp", "cnn"):
                subject = digits_subject(name, workdir)
                calibration = distilled(subject.path)
            elif name in UNSEEN:
                subject, calibration = unseen_subject(name), None
            else:
                subject, calibration = batchnorm_subject(name, workdir), None
            say(f"{name}: {subject.unit} {subject.reference:.4f}")
            points = nncodec_points(subject, workdir)
            for rate in rates:
                ours = run_point(subject, rate, "layer", workdir, None, calibration)
                theirs = best_within(points, rate)
                row = {"model": name, "rate": rate, "unit": subject.unit,
                       "reference": subject.reference, "weightdna": ours, "nncodec": theirs}
                rows.append(row)
                figure = ours.get(subject.unit, math.nan)
                if theirs is None:
                    versus, delta = "— (no point this small)", "—"
                else:
                    versus = (f"{100 * theirs['figure']:.2f}% ({theirs['setting']}, qp "
                              f"{theirs['qp']}, {theirs['bits_per_weight']:.3f})")
                    delta = f"{100 * (figure - theirs['figure']):+.2f} points"
                lines.append(f"| {name} | {rate:g} | {100 * figure:.2f}% "
                             f"({ours.get('bits_per_weight', math.nan):.3f}) | {versus} | "
                             f"{delta} |")
    text = "\n".join(lines)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
