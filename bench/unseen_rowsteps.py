"""Which tensors of an unseen model take per-row steps, and what they cost and give.

    .venv/bin/python bench/unseen_rowsteps.py --model ocr [--rate 2] [--out results/x.json]
        [--alone N]
    .venv/bin/python bench/unseen_rowsteps.py --model ocr --operating

Compresses the model (`weightdna.evaluate.unseen`: magika, silero or ocr) with
`compress_model`'s defaults at --rate bits per weight, judges the restored model, and
lists every lossy tensor: its role, shape, rows, whether it holds per-row steps on a grid
(read from the file's entry), its bits per weight, SNR, share of non-zero weights zeroed,
the spread of its rows' RMS (max / median) and, with --alone N, the judge's figure with
that tensor alone restored for the N largest tensors (every other tensor original). The
JSON holds the same rows, for comparing two versions of the code.

--operating: no coding; for every tensor the objective gives per-row steps (plain
quantisation, `apply_objective`'s "layer"), the global steps from 2^-30 to 2^10 every half
octave at which the estimate codes it at 0.3–6 bits per weight, and at which of them one
step costs less than per-row steps there (`ratecontrol.ROW_STEPS_RULE = "operating"`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from unseen_cli import judge_for

from weightdna.codec import ratecontrol, read_dna_file
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.entries import _holds_grid
from weightdna.codec.quantize import as_rows
from weightdna.codec.ratecontrol import Target
from weightdna.codec.roles import coding
from weightdna.evaluate import unseen
from weightdna.weights import load_weights


def operating(path: Path) -> None:
    """Where one step beats the objective's per-row steps at the operating point."""
    weights = load_weights(path)
    target = Target("bits_per_weight", 2.0)
    print("| tensor | shape | points at 0.3–6 bits/weight | one step cheaper at (bits/weight) "
          "|\n|---|---|---:|---|")
    for info in weights.infos:
        if coding(info) != "rate" or "else_branch" in info.name:
            continue
        tc = ratecontrol.tensor_candidates(info, weights.numpy(info.name), ("quantized",))
        ratecontrol.apply_objective(tc, "layer")
        if tc.row_scale is None:
            continue
        points, one_step = 0, []
        for g in np.arange(-30.0, 10.0, 0.5):
            step = ratecontrol.tensor_step(tc, 2.0**g, target)
            ratecontrol.ROW_STEPS_RULE = "high-rate"
            rows = ratecontrol.choose(tc, step, False, trellis=False)
            if not 0.3 <= rows.bits / info.numel <= 6.0:
                continue
            points += 1
            ratecontrol.ROW_STEPS_RULE = "operating"
            if not isinstance(ratecontrol.choose(tc, step, False, trellis=False).step,
                              np.ndarray):
                one_step.append(f"{rows.bits / info.numel:.2f}")
        ratecontrol.ROW_STEPS_RULE = "high-rate"
        print(f"| {info.name.removeprefix('If_0_then_branch__Inline_0__')} | "
              f"{'×'.join(map(str, info.shape))} | {points} | {', '.join(one_step)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ocr")
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--alone", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--operating", action="store_true")
    args = parser.parse_args(argv)
    if args.operating:
        paths = {"magika": unseen.magika_path, "silero": unseen.silero_path,
                 "ocr": unseen.ocr_detector_path}
        operating(paths[args.model]())
        return 0
    path, judge = judge_for(args.model)
    weights = load_weights(path)
    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "restored.safetensors"
        report = compress_model(weights, dna, Target("bits_per_weight", args.rate))
        entries = {e["name"]: e for e in read_dna_file(dna).entries}
        decompress_model(dna, out)
        original, restored = weights.state_dict(), load_weights(out).state_dict()
    whole = judge(path, restored)
    rows = []
    for t in report.tensors:
        if t.snr_db is None or "else_branch" in t.name:
            continue
        w = original[t.name].double().numpy()
        rms = np.sqrt(np.mean(as_rows(w) ** 2, axis=1)) if w.ndim >= 2 else np.ones(1)
        positive = rms[rms > 0]
        row = {"name": t.name, "role": t.role, "shape": list(t.shape), "rows": int(rms.size),
               "per_row": bool(_holds_grid(entries[t.name].get("params"))),
               "representation": t.representation, "bits_per_weight": t.bits_per_weight,
               "snr_db": t.snr_db, "zeroed": t.zeroed,
               "row_rms_spread": float(positive.max() / np.median(positive))
               if positive.size else 0.0}
        rows.append(row)
    by_size = sorted(rows, key=lambda r: -np.prod(r["shape"]))
    for row in by_size[: args.alone]:
        state = dict(original)
        state[row["name"]] = restored[row["name"]]
        row["alone"] = judge(path, state)["agreement"]
    result = {"model": args.model, "rate": args.rate, "bits_per_weight": report.bits_per_weight,
              "agreement": whole["agreement"], "tensors": rows}
    print(f"{args.model} at {report.bits_per_weight:.4f} bpw: agreement "
          f"{100 * whole['agreement']:.2f}%; {sum(r['per_row'] for r in rows)} of "
          f"{len(rows)} lossy tensors with per-row steps")
    print("| tensor | role | shape | per-row | bits/weight | SNR | zeroed | row RMS max/median "
          "| alone |\n|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        alone = f"{100 * r['alone']:.2f}%" if "alone" in r else ""
        print(f"| {r['name'].removeprefix('If_0_then_branch__Inline_0__')} | {r['role']} | "
              f"{'×'.join(map(str, r['shape']))} | {'yes' if r['per_row'] else ''} | "
              f"{r['bits_per_weight']:.2f} | {r['snr_db']:.1f} | {r['zeroed'] or 0:.2f} | "
              f"{r['row_rms_spread']:.0f} | {alone} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
