"""Which tensors cost the function? Each lossy tensor of the default file put back alone.

    .venv/bin/python bench/unseen_ablation.py --model silero [--rate 3] [--top 12]
        [--roles conv,matrix]

Compresses the model (`weightdna.evaluate.unseen`: magika, silero, ocr, ocrrec or ocrcls) with
`compress_model`'s defaults at --rate bits per weight, then judges the original model with
one restored tensor at a time (every other tensor original), worst first. Silero's 8 kHz
branch (``If_0_else_branch``) is left out: the judge runs the 16 kHz one.

First it says where the file's bytes went: the tensors coded at the rate
(`weightdna.codec.roles.coding` "rate"), the others (by how they are coded), and what is
outside every tensor (the file's header and index). With ``--rated-alone 3,4``, the
tensors coded at the rate are also compressed alone (a file of nothing else) at each of
those bits per weight, every other tensor kept original, and judged: what the model does
when the weights themselves get the rate.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from unseen_cli import figures_text, judge_for

from weightdna.codec.compress import CompressionReport, compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.codec.roles import coding
from weightdna.weights import ModelWeights, load_weights


def budget(report: CompressionReport, infos: dict) -> str:
    """Where the file's bytes went: per coding of the tensors (bytes, share of the file,
    values, bits per value), and outside every tensor."""
    groups: dict[str, list[int]] = {}
    for t in report.tensors:
        group = groups.setdefault(coding(infos[t.name]), [0, 0, 0])
        group[0] += t.bytes
        group[1] += infos[t.name].numel
        group[2] += 1
    lines = ["| coded | tensors | values | bytes | share of the file | bits per value |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, (size, values, count) in sorted(groups.items()):
        lines.append(f"| {kind} | {count} | {values} | {size} | "
                     f"{100 * size / report.file_bytes:.1f}% | {8 * size / values:.2f} |")
    outside = report.file_bytes - sum(t.bytes for t in report.tensors)
    lines.append(f"| outside the tensors (header, index) | | | {outside} | "
                 f"{100 * outside / report.file_bytes:.1f}% | |")
    return "\n".join(lines) + "\n"


def rated_alone(path: Path, judge, weights, rate: float) -> str:
    """The judge of the model whose tensors coded at the rate are compressed alone at
    ``rate`` bits per weight, every other tensor original."""
    state = weights.state_dict()
    infos = [i for i in weights.infos if coding(i) == "rate"]
    rated = {i.name: state[i.name] for i in infos}
    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "alone.dna", Path(tmp) / "alone.safetensors"
        alone = ModelWeights.from_tensors(rated, roles={i.name: i.role for i in infos})
        report = compress_model(alone, dna,
                                Target("bits_per_weight", rate))
        decompress_model(dna, out)
        state.update(load_weights(out).state_dict())
    return (f"the tensors coded at the rate alone at {rate:g} bits per weight "
            f"({report.bits_per_weight:.3f}), the others original: agreement, max Δp (or "
            f"CER) {figures_text(judge(path, state))}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="silero")
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--roles", default=None,
                        help="only tensors of these roles, e.g. conv,matrix (default: all)")
    parser.add_argument("--rated-alone", default="",
                        help="also these bits per weight on the tensors coded at the rate "
                             "alone, e.g. 3,4")
    args = parser.parse_args(argv)
    path, judge = judge_for(args.model)
    weights = load_weights(path)
    infos = {i.name: i for i in weights.infos}
    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "restored.safetensors"
        report = compress_model(weights, dna, Target("bits_per_weight", args.rate))
        decompress_model(dna, out)
        original, restored = weights.state_dict(), load_weights(out).state_dict()
    whole = judge(path, restored)
    print(f"{args.model} at {report.bits_per_weight:.3f} bpw: agreement, max Δp (or CER) "
          f"{figures_text(whole)}\n")
    print(budget(report, infos))
    for rate in (float(r) for r in args.rated_alone.split(",") if r):
        print(rated_alone(path, judge, weights, rate))
    print("| tensor | role | shape | bits/weight | SNR | zeroed | max/median |w| | agreement "
          "alone | max Δp (or CER) |\n|---|---|---|---:|---:|---:|---:|---:|---:|")
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
        rows.append((figures["agreement"], t, figures_text(figures).split(" | ")[1],
                     float(w.max() / w[w > 0].median())))
    rows.sort(key=lambda row: row[0])
    for agreement, t, delta, spread in rows[: args.top]:
        name = t.name.removeprefix("If_0_then_branch__Inline_0__")
        print(f"| {name} | {t.role} | {'×'.join(map(str, t.shape))} | "
              f"{t.bits_per_weight:.2f} | {t.snr_db:.1f} dB | {t.zeroed or 0:.2f} | "
              f"{spread:.0f} | {100 * agreement:.2f}% | {delta} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
