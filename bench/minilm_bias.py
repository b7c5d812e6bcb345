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
import sys
import tempfile
import time
from pathlib import Path

import torch

from weightdna.evaluate.correction import bert_bias_correction
from weightdna.evaluate.sensitivity import for_every_tensor, row_weights_for, sensitivity
from weightdna.weights import load_weights, minilm_path

sys.path.insert(0, str(Path(__file__).parent))
from minilm_prior import judged_file, minilm_judge, say, write_judged  # noqa: E402


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
        for rate in (float(r) for r in args.rates.split(",")):
            for variant, adjust in (("before", None),
                                    ("bias-corrected", bert_bias_correction(folder))):
                rows.append(judged_file(weights, judge, rate, variant, Path(tmp),
                                        sensitivity=sens, row_weights=rows_, adjust=adjust))
    write_judged(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
