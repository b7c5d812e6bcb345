"""Which tensors cost the function? Each lossy tensor of the default file put back alone.

    .venv/bin/python bench/unseen_ablation.py --model silero [--rate 3] [--top 12]
        [--roles conv,matrix]

Compresses the model (`weightdna.evaluate.unseen`: magika, silero or ocr) with
`compress_model`'s defaults at --rate bits per weight, then judges the original model with
one restored tensor at a time (every other tensor original), worst first. Silero's 8 kHz
branch (``If_0_else_branch``) is left out: the judge runs the 16 kHz one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from unseen_cli import judge_for

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.weights import load_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="silero")
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--roles", default=None,
                        help="only tensors of these roles, e.g. conv,matrix (default: all)")
    args = parser.parse_args(argv)
    path, judge = judge_for(args.model)
    weights = load_weights(path)
    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "restored.safetensors"
        report = compress_model(weights, dna, Target("bits_per_weight", args.rate))
        decompress_model(dna, out)
        original, restored = weights.state_dict(), load_weights(out).state_dict()
    whole = judge(path, restored)
    print(f"{args.model} at {report.bits_per_weight:.3f} bpw: agreement "
          f"{100 * whole['agreement']:.2f}%, max Δp {whole['max_delta']:.3f}\n")
    print("| tensor | role | shape | bits/weight | SNR | zeroed | max/median |w| | agreement "
          "alone | max Δp |\n|---|---|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for t in report.tensors:
        if t.snr_db is None or "else_branch" in t.name:
            continue
        if args.roles and t.role not in args.roles.split(","):
            continue
        state = dict(original)
        state[t.name] = restored[t.name]
        figures = judge(path, state)
        w = original[t.name].abs()
        rows.append((figures["agreement"], t, figures["max_delta"],
                     float(w.max() / w[w > 0].median())))
    rows.sort(key=lambda row: row[0])
    for agreement, t, delta, spread in rows[: args.top]:
        name = t.name.removeprefix("If_0_then_branch__Inline_0__")
        print(f"| {name} | {t.role} | {'×'.join(map(str, t.shape))} | "
              f"{t.bits_per_weight:.2f} | {t.snr_db:.1f} dB | {t.zeroed or 0:.2f} | "
              f"{spread:.0f} | {100 * agreement:.2f}% | {delta:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
