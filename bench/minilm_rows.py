"""MiniLM without data: the word embedding's rows weighed by their absolute error (the
default now) against their error relative to each row's own mean square (the default
before), with and without the per-column factors of ``--columns synthetic`` (issue 11).

    .venv/bin/python bench/minilm_rows.py [--rates 2,3,4]
        [--variants relative,absolute,absolute+columns] [--out results/minilm-rows.json]

Each variant compresses all-MiniLM-L6-v2 with `compress_model` at a bits-per-weight target
as the default does for a BERT model (sensitivities on random tokens drawn by the token
prior, the word embedding's rows weighed by prior^0.65, the data-free bias correction),
decompresses it and gives the mean, 5th percentile and least cosine of the 540 bundled
sentences' embeddings (bench/panel.py's judge). They differ only in how the embedding's
rows are weighed against each other:

- ``relative``: a row's error counts prior^0.65 over the row's own mean square (floored as
  the "layer" objective floors it), which is what `apply_objective` did with row weights
  before: passed here as row weights prior^0.65 / mean square, which the code now takes
  as absolute;
- ``absolute``: a row's absolute error counts prior^0.65 (the default now);
- ``+columns``: with `bert_column_factors` (format version 9, the factors in the file).
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
from weightdna.codec.ratecontrol import Target, floored_row_ms
from weightdna.evaluate.columns import bert_column_factors
from weightdna.evaluate.correction import bert_bias_correction
from weightdna.evaluate.sensitivity import for_every_tensor, sensitivity, token_row_weights
from weightdna.weights import load_weights, minilm_path

sys.path.insert(0, str(Path(__file__).parent))
from minilm_prior import minilm_judge  # noqa: E402

VARIANTS = ("relative", "absolute", "absolute+columns", "relative+columns")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2,3,4")
    parser.add_argument("--variants", default="relative,absolute,absolute+columns")
    parser.add_argument("--out", type=Path, default=Path("results/minilm-rows.json"))
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; use {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    folder = minilm_path()
    judge = minilm_judge(folder)
    weights = load_weights(folder)
    sens = for_every_tensor(sensitivity(weights.state_dict(), folder=folder, draws=1,
                                        synthetic=True), weights.names)
    absolute = token_row_weights(folder, weights.names)
    relative = {}
    for name, weight in absolute.items():
        rows = weights.tensor(name).double().reshape(weight.size, -1)
        row_ms = (rows ** 2).mean(dim=1).numpy()
        relative[name] = weight / floored_row_ms(row_ms, float(row_ms.mean()))
    columns = bert_column_factors(folder) if any("columns" in v for v in variants) else None
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "r.safetensors"
        for rate in (float(r) for r in args.rates.split(",")):
            for variant in variants:
                started = time.perf_counter()
                report = compress_model(
                    weights, dna, Target("bits_per_weight", rate), sensitivity=sens,
                    row_weights=absolute if variant.startswith("absolute") else relative,
                    column_factors=columns if variant.endswith("columns") else None,
                    adjust=bert_bias_correction(folder), overwrite=True)
                seconds = time.perf_counter() - started
                decompress_model(dna, out, overwrite=True)
                figures = judge(load_weights(out).state_dict())
                row = {"rate": rate, "variant": variant,
                       "bits_per_weight": report.bits_per_weight,
                       "cosine": figures["mean_cosine"], "p5_cosine": figures["p5_cosine"],
                       "min_cosine": figures["min_cosine"], "seconds": seconds}
                results.append(row)
                say(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| bpw target | rows | bpw | mean cosine | 5th percentile | least | seconds |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rate']:g} | {r['variant']} | {r['bits_per_weight']:.3f} | "
              f"{r['cosine']:.5f} | {r['p5_cosine']:.5f} | {r['min_cosine']:.4f} | "
              f"{r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
