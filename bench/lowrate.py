"""Rules for low rates without data, each judged as the mean over nearby targets.

    PYTHONPATH=$PWD .venv/bin/python bench/lowrate.py --models silero,magika \
        --variants main,snr:12 --targets 1.95,2,2.05 [--tensors 8] [--no-files]

For each model (`bench/panel.py`'s subjects) and each variant, `compress_model` with what
`weightdna compress MODEL --bits-per-weight R` gives it by default
(`weightdna.evaluate.defaults.compress_inputs`: the stored files, an ONNX graph, in the
size budget, and the default bias correction, calibration and sensitivities) at each
target, decompressed and judged (``main`` writes the command's file byte for byte);
``--no-files``: without the stored files (the weights get the bytes the graph takes in
the command's file: the library path's figure, measured before stop 33); one line per point and
the mean of the targets per variant (the judges scatter by several points between
targets 0.01 bits per weight apart: one point decides nothing). A variant is ``main``
(every rule as the code has it) or rules joined by ``+``:

* ``snr:F``: `weightdna.codec.ratecontrol.SNR_FLOOR_DB` = F (each tensor's SNR ≥ F dB);
* ``bn:RULE``: `ratecontrol.BN_ROWS` = RULE;
* ``t:TEXT:K``: each tensor whose name holds TEXT counts K times as much in the objective
  (its sensitivity × K after the objective's own weight; both sample-rate branches of an
  ONNX If alike); nothing in the library;
* ``lstm:I/F/G/O``: `ratecontrol.LSTM_GATE_WEIGHTS` = (I, F, G, O) (``lstm:1/1/1/1``: an
  LSTM's rows as any matrix's);
* ``cols:gain[:α]`` / ``cols:moment[:α]`` (ONNX models): each 1×1 conv whose input 0 a
  BatchNormalization makes (through its activation: Relu, Clip, the HardSwish of Mul and
  Div, an SE block's Mul) gets per-column factors (format version 9) from that BatchNorm,
  as `weightdna.evaluate.columns.column_exponents` turns second moments into factors:
  ``gain``, h_j = (γ_j / √(var_j + ε))², the BatchNorm's gain; ``moment``, h_j =
  E[f(y)²] for y ~ N(β_j, γ_j²), what the BatchNorm hands on over the data its
  statistics came from (f its activation: ReLU, or HardSwish where a Div or Clip lies
  between); α the exponent (`column_exponents`; COLUMN_ALPHA when not given). Measured on
  ocrcls, not adopted (BENCHMARKS.md, "A floor under each tensor's SNR, and column
  factors from the BatchNorm before a 1×1 conv").

``--tensors N`` prints, for the first target, the N lossy tensors of lowest SNR (bits per
weight, SNR, zeroed share). The same process sets the rules (no workers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bn_rows import short, subject_for

from weightdna.codec import compress, ratecontrol
from weightdna.codec.bundle import StoredFiles
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.defaults import compress_inputs
from weightdna.weights import load_weights

DEFAULTS = {"SNR_FLOOR_DB": ratecontrol.SNR_FLOOR_DB,
            "BN_ROWS": ratecontrol.BN_ROWS,
            "LSTM_GATE_WEIGHTS": ratecontrol.LSTM_GATE_WEIGHTS}
APPLY_OBJECTIVE = compress.apply_objective
SCALED: list[tuple[str, float]] = []  # ``t:TEXT:K``


def _apply_objective(tc, objective, **options):
    """`ratecontrol.apply_objective`, then the ``t:`` rules of the variant."""
    APPLY_OBJECTIVE(tc, objective, **options)
    for text, factor in SCALED:
        if text in tc.info.name:
            tc.sensitivity *= factor


def set_variant(variant: str) -> None:
    """Every rule back to the code's, then ``variant``'s rules set."""
    for name, value in DEFAULTS.items():
        setattr(ratecontrol, name, value)
    SCALED.clear()
    compress.apply_objective = _apply_objective
    if variant == "main":
        return
    for rule in variant.split("+"):
        kind, _, value = rule.partition(":")
        if kind == "snr":
            ratecontrol.SNR_FLOOR_DB = float(value)
        elif kind == "bn":
            ratecontrol.BN_ROWS = value
        elif kind == "t":
            text, _, factor = value.rpartition(":")
            SCALED.append((text, float(factor)))
        elif kind == "lstm":
            ratecontrol.LSTM_GATE_WEIGHTS = tuple(float(f) for f in value.split("/"))
        elif kind != "cols":
            raise SystemExit(f"unknown rule {rule!r}")


def batchnorm_columns(path: Path, weights, how: str) -> dict[str, np.ndarray]:
    """{1×1 conv kernel: its column factors} of the ``cols:HOW[:α]`` variant (docstring;
    α: `column_exponents`' exponent, COLUMN_ALPHA when not given)."""
    from weightdna.evaluate.columns import COLUMN_ALPHA

    how, _, alpha = how.partition(":")
    alpha = float(alpha) if alpha else COLUMN_ALPHA
    from weightdna.evaluate.columns import COLUMN_OCTAVE_STEPS, column_exponents
    from weightdna.weights.onnx_format import all_nodes, load_model

    model = load_model(path)
    nodes = list(all_nodes(model.graph))
    made = {out: node for node in nodes for out in node.output}
    y = np.random.default_rng(0).standard_normal(1 << 14)
    factors = {}
    for node in nodes:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights.names:
            continue
        shape = weights.info(node.input[1]).shape
        if len(shape) != 4 or shape[2:] != (1, 1):
            continue
        ops, source = [], made.get(node.input[0])
        while source is not None and source.op_type in ("Relu", "Clip", "Mul", "Div",
                                                        "HardSwish", "HardSigmoid"):
            ops.append(source.op_type)
            source = made.get(source.input[0])
        if source is None or source.op_type != "BatchNormalization" \
                or not all(n in weights.names for n in source.input[1:5]):
            continue
        gamma, beta, _, var = (weights.tensor(n).numpy().astype(np.float64)
                               for n in source.input[1:5])
        if gamma.shape != (shape[1],):
            continue
        if how == "gain":
            h = gamma ** 2 / (var + ratecontrol.BN_EPSILON)
        else:
            pre = beta[:, None] + np.abs(gamma)[:, None] * y[None, :]
            if any(op in ("Div", "Clip", "HardSwish", "HardSigmoid") for op in ops):
                post = pre * np.clip(pre + 3.0, 0.0, 6.0) / 6.0
            elif "Relu" in ops:
                post = np.maximum(pre, 0.0)
            else:
                post = pre
            h = (post ** 2).mean(axis=1)
        if not np.all(np.isfinite(h)) or not h.mean() > 0:
            continue
        k = column_exponents(h, alpha)
        factors[node.input[1]] = np.exp2(-k / COLUMN_OCTAVE_STEPS)
    return factors


def tensor_lines(report, count: int) -> list[str]:
    lossy = sorted((t for t in report.tensors if t.snr_db is not None),
                   key=lambda t: t.snr_db)[:count]
    return [f"    {t.name[-48:]:48s} {t.numel:>8d} {t.bits_per_weight:6.2f} bpw "
            f"{t.snr_db:5.1f} dB zeroed {t.zeroed or 0:.2f}" for t in lossy]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="silero,magika")
    parser.add_argument("--variants", default="main,snr:12")
    parser.add_argument("--targets", default="1.95,2,2.05")
    parser.add_argument("--tensors", type=int, default=0)
    parser.add_argument("--no-files", action="store_true",
                        help="leave the stored files (an ONNX graph) out of the budget")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            subject = subject_for(name, tmp)
            weights = load_weights(subject.path)
            for variant in args.variants.split(","):
                set_variant(variant)
                how = dict(r.split(":", 1) for r in variant.split("+") if ":" in r).get("cols")
                columns = batchnorm_columns(subject.path, weights, how) if how else None
                if how:
                    print(f"{name}: {len(columns)} 1x1 convs with column factors "
                          f"({sum(weights.info(n).numel for n in columns)} values)", flush=True)
                kept = []
                for i, target in enumerate(targets):
                    start = time.perf_counter()
                    point = Path(tempfile.mkdtemp(dir=tmp))
                    dna, out = point / "m.dna", point / "r.safetensors"
                    goal = Target("bits_per_weight", target)
                    options = compress_inputs(subject.path, weights, goal).options()
                    if args.no_files:
                        options["files"] = StoredFiles()
                    if columns is not None:
                        options["column_factors"] = columns
                    report = compress_model(weights, dna, goal, **options)
                    decompress_model(dna, out)
                    value, extra = subject.judge(load_weights(out).state_dict())
                    kept.append(value)
                    lossy = [t for t in report.tensors if t.snr_db is not None]
                    worst = min(lossy, key=lambda t: t.snr_db)
                    seconds = time.perf_counter() - start
                    print(f"| {name} | {variant} | {target:g} | {report.bits_per_weight:.3f} | "
                          f"{100 * kept[-1]:.2f} | {worst.snr_db:.1f} ({worst.name[-30:]}) | "
                          f"{short(extra)} | {seconds:.0f} s |", flush=True)
                    if i == 0 and args.tensors:
                        print("\n".join(tensor_lines(report, args.tensors)), flush=True)
                    for path in (dna, out):
                        path.unlink()
                print(f"| {name} | {variant} | mean | | **{100 * sum(kept) / len(kept):.2f}** "
                      "| | | |", flush=True)
    set_variant("main")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
