"""MiniLM without data: the default with and without the data-free bias correction
(`weightdna.evaluate.correction`), in one run (issue 11).

    .venv/bin/python bench/minilm_bias.py [--rates 2,3,4] [--out results/minilm-bias.json]

Each rate compresses all-MiniLM-L6-v2 with `compress_model` at a bits-per-weight target, as
the default does for a BERT model (sensitivities on random tokens drawn by the prior, the
word embedding's rows weighed by it), once without ``adjust`` (the default before) and once
with `bert_bias_correction` (the default now), decompresses each and gives the mean, 5th
percentile and least cosine of the 540 bundled sentences' embeddings (bench/panel.py's
judge). The weights are coded alike in both (the correction runs after them): only the
biases differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.correction import bert_bias_correction
from weightdna.evaluate.sensitivity import for_every_tensor, row_weights_for, sensitivity
from weightdna.weights import load_weights, minilm_path

sys.path.insert(0, str(Path(__file__).parent))
from minilm_prior import minilm_judge  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2,3,4")
    parser.add_argument("--out", type=Path, default=Path("results/minilm-bias.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = minilm_path()
    judge = minilm_judge(folder)
    weights = load_weights(folder)
    started = time.perf_counter()
    sens = for_every_tensor(sensitivity(weights.state_dict(), folder=folder, draws=1,
                                        synthetic=True), weights.names)
    rows_ = row_weights_for("synthetic", folder, weights.names)
    say(f"sensitivities in {time.perf_counter() - started:.0f} s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "r.safetensors"
        for rate in (float(r) for r in args.rates.split(",")):
            for variant, adjust in (("before", None),
                                    ("bias-corrected", bert_bias_correction(folder))):
                started = time.perf_counter()
                report = compress_model(weights, dna, Target("bits_per_weight", rate),
                                        sensitivity=sens, row_weights=rows_, adjust=adjust,
                                        overwrite=True)
                seconds = time.perf_counter() - started
                decompress_model(dna, out, overwrite=True)
                figures = judge(load_weights(out).state_dict())
                row = {"rate": rate, "variant": variant,
                       "bits_per_weight": report.bits_per_weight,
                       "cosine": figures["mean_cosine"], "p5_cosine": figures["p5_cosine"],
                       "min_cosine": figures["min_cosine"], "seconds": seconds}
                rows.append(row)
                say(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print("| bpw target | variant | bpw | mean cosine | 5th percentile | least | seconds |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rate']:g} | {r['variant']} | {r['bits_per_weight']:.3f} | "
              f"{r['cosine']:.4f} | {r['p5_cosine']:.4f} | {r['min_cosine']:.4f} | "
              f"{r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
