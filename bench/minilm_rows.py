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
import sys
import tempfile
from pathlib import Path

import torch

from weightdna.codec.ratecontrol import floored_row_ms
from weightdna.evaluate.columns import bert_column_factors
from weightdna.evaluate.correction import bert_bias_correction
from weightdna.evaluate.sensitivity import for_every_tensor, sensitivity, token_row_weights
from weightdna.weights import load_weights, minilm_path

sys.path.insert(0, str(Path(__file__).parent))
from minilm_prior import judged_file, minilm_judge, write_judged  # noqa: E402

VARIANTS = ("relative", "absolute", "absolute+columns", "relative+columns")


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
        for rate in (float(r) for r in args.rates.split(",")):
            for variant in variants:
                results.append(judged_file(
                    weights, judge, rate, variant, Path(tmp), sensitivity=sens,
                    row_weights=absolute if variant.startswith("absolute") else relative,
                    column_factors=columns if variant.endswith("columns") else None,
                    adjust=bert_bias_correction(folder)))
    write_judged(results, args.out, label="rows", digits=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
