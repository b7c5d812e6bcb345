"""The output check's raw outputs beside each file's judge: which figure tells a working file
from a broken one on a probability output (issue 11, "Say what happened").

    PYTHONPATH=. .venv/bin/python bench/output_check_rule.py --models ocrcls \
        [--rates 3,4,6] [--cli-rates 3,4] [--noise 30,20,10] [--seeds 0,1,2] \
        [--sides 64x64] [--table-only] [--out results/output_check_rule]

For each model (`weightdna.evaluate.unseen`): `compress_model` files with the defaults at
each of ``--rates`` bits per weight, the CLI's own files (``weightdna compress`` then
``decompress``, the graph stored too) at ``--cli-rates``, and the original weights with
Gaussian noise at ``--noise`` dB (every float tensor of 1,000 values or more, as
`unseen.noisy_weights`). Each is judged (`unseen.judge_for`) and given
to the output check's ONNX runner (``--sides``: other sides for an image whose both are
open) with each of ``--seeds``; the original's and the restored model's outputs are
kept. Writes OUT/MODEL.npz (the outputs, keyed
"CASE/seed/original|restored") and OUT/MODEL.json (the judges' figures), then prints a
table of the check's figure and the candidates for each case (`candidate_figures`), the
range over the seeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate import outputs, unseen
from weightdna.weights import load_weights


def candidate_figures(original: np.ndarray, restored: np.ndarray, scale: float) -> dict:
    """The check's figures and the candidates for a probability output, one seed's outputs
    (rows their samples): ``cosine`` the check's worst (`outputs.output_cosines`);
    ``informative`` as the check says; ``agreement`` the share of decisions kept (argmax over
    the last axis, or p > 0.5 where each sample or position has one value); ``tv_max`` and
    ``tv_mean`` the total variation distance (half the L1 distance over the last axis, or
    |p - q| for one value) at the worst position of any sample and on average; ``centred``
    the cosine of the outputs centred over the samples (each value's deviation from its
    mean over the inputs: does the restored model follow the original across inputs?)."""
    a = np.atleast_1d(original).astype(np.float64)
    b = np.atleast_1d(restored).astype(np.float64)
    n = a.shape[0]
    if outputs.one_value_each(a) or a.shape[-1] == 1:
        pa, pb = a.reshape(n, -1), b.reshape(n, -1)
        kept, tv = (pa > 0.5) == (pb > 0.5), np.abs(pa - pb)
    else:
        kept, tv = a.argmax(-1) == b.argmax(-1), 0.5 * np.abs(a - b).sum(-1)
    ca = a.reshape(n, -1) - a.reshape(n, -1).mean(0)
    cb = b.reshape(n, -1) - b.reshape(n, -1).mean(0)
    norms = np.linalg.norm(ca) * np.linalg.norm(cb)
    return {"cosine": float(outputs.output_cosines(a, b).min()),
            "informative": not outputs.same_for_every_input(a, scale=scale),
            "agreement": float(kept.mean()), "tv_max": float(tv.max()),
            "tv_mean": float(tv.mean()),
            "centred": float((ca * cb).sum() / norms) if norms > 0 else 0.0}


def table(out: Path, names: list[str]) -> str:
    """A markdown table of OUT/NAME.npz and .json: each case's judge, the check's worst
    cosine on seed 0 (what `compress` reports), and each candidate figure's range over
    the seeds."""
    lines = ["| model | file | judge | scale | informative | check (seed 0) | cosine | "
             "agreement | TV max | TV mean | centred |", "|---" * 11 + "|"]
    for name in names:
        arrays = np.load(out / f"{name}.npz")
        for case, judged in json.loads((out / f"{name}.json").read_text()).items():
            seeds = sorted({int(k.split("/")[1]) for k in arrays.files
                            if k.startswith(case + "/")})
            rows = [candidate_figures(arrays[f"{case}/{s}/original"],
                                      arrays[f"{case}/{s}/restored"], judged.get("scale", 0.0))
                    for s in seeds]
            if not rows:
                continue
            judge = f"{100 * judged['agreement']:.2f}%" + (
                f", CER {100 * judged['cer']:.2f}%" if "cer" in judged else "")
            first = rows[0]
            check = ("cannot tell" if not first["informative"] else
                     f"{first['cosine']:.4f}"
                     + (" diverged" if first["cosine"] < outputs.OUTPUT_COSINE_WARNING else ""))
            spans = [f"{min(r[k] for r in rows):.3f}–{max(r[k] for r in rows):.3f}"
                     for k in ("cosine", "agreement", "tv_max", "tv_mean", "centred")]
            lines.append(f"| {name} | {case} | {judge} | {judged.get('scale', 0.0):g} | "
                         f"{sum(r['informative'] for r in rows)}/{len(rows)} | {check} | "
                         + " | ".join(spans) + " |")
    return "\n".join(lines)


def cases(model: Path, args: argparse.Namespace, tmp: Path):
    """(case name, restored state, the file to judge or None for ``model`` with the state)."""
    for rate in filter(None, args.rates.split(",")):
        target = Target("bits_per_weight", float(rate))
        dna, restored = tmp / f"m{rate}.dna", tmp / f"restored{rate}.safetensors"
        report = compress_model(load_weights(model), dna, target)
        decompress_model(dna, restored)
        state = load_weights(restored).state_dict()
        yield f"lib {rate} ({report.bits_per_weight:.3f})", state, None
    for rate in filter(None, args.cli_rates.split(",")):
        for command in (["compress", str(model), "-o", str(tmp / "c.dna"), "--bits-per-weight",
                         rate, "--force", "--check", "none", "--json"],
                        ["decompress", str(tmp / "c.dna"), "-o", str(tmp / "r.onnx"),
                         "--force"]):
            done = subprocess.run([sys.executable, "-m", "weightdna", *command],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(done.stderr)
            if command[0] == "compress":
                bpw = json.loads(done.stdout)["bits_per_weight"]
        yield f"cli {rate} ({bpw:.3f})", load_weights(tmp / "r.onnx").state_dict(), \
            tmp / "r.onnx"
    for db in filter(None, args.noise.split(",")):
        yield f"noise {db} dB", unseen.noisy_weights(model, float(db)), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ocrcls")
    parser.add_argument("--rates", default="3,4,6")
    parser.add_argument("--cli-rates", default="")
    parser.add_argument("--noise", default="30,20,10")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sides", default="",
                        help="HxW: the check's sides for images whose both sides are open "
                             "(outputs.IMAGE_SIDES) instead of its own")
    parser.add_argument("--table-only", action="store_true",
                        help="print the table of the files already in --out")
    parser.add_argument("--out", type=Path, default=Path("results/output_check_rule"))
    args = parser.parse_args(argv)
    if args.sides:
        outputs.IMAGE_SIDES = tuple(int(s) for s in args.sides.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.models.split(",")
    for name in [] if args.table_only else names:
        path, judge, _ = unseen.judge_for(name)
        arrays, figures = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for case, state, restored_file in cases(path, args, Path(tmp)):
                started = time.perf_counter()
                judged = judge(restored_file, None) if restored_file else judge(path, state)
                figures[case] = {k: v for k, v in judged.items()
                                 if isinstance(v, (int, float, str, bool))}
                for seed in seeds:
                    ran = outputs._onnx(path, state, outputs.SAMPLES,
                                        np.random.default_rng(seed))
                    if ran is None:
                        continue
                    arrays[f"{case}/{seed}/original"], arrays[f"{case}/{seed}/restored"] = \
                        ran[0], ran[1]
                    figures[case]["scale"] = ran[3]
                print(f"{name} {case}: agreement {figures[case].get('agreement')} "
                      f"({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
        np.savez_compressed(args.out / f"{name}.npz", **arrays)
        (args.out / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(table(args.out, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
