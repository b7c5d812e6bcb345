"""MiniLM without data: does weighing each input column of a linear layer by E[x_j²] of its
inputs on random tokens drawn by the prior (a diagonal-Hessian / AWQ-style column
weighting) pay? An upper-bound experiment, not a storable coding (issue 11).

    .venv/bin/python bench/minilm_columns.py [--rate 3] [--alpha 1] [--variants default,columns]
        [--row-exponent 0.65]

The codec has one step per row, none per column, so the weighting is simulated: every
linear weight W (query, key, value, attention output, FFN in and out) is coded as
W·diag(s), s_j = (E[x_j²] / mean E[x²])^(alpha/2), and divided by s after decoding, which a
file could only do with per-column scales stored (a format change: about 27K scales, some
0.02 bits per weight, not counted here). Both variants use the default's sensitivities
(measured on the original model), row weights and data-free bias correction (applied to
the unscaled weights). Prints mean, 5th percentile and least cosine of the 540 bundled
sentences.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from weightdna.bert import BertConfig, BertEncoder, random_token_batch
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.correction import bert_bias_correction
from weightdna.evaluate.sensitivity import (
    ROW_PRIOR_EXPONENT,
    for_every_tensor,
    sensitivity,
    token_row_weights,
)
from weightdna.weights import load_weights, minilm_path
from weightdna.weights.model import ModelWeights

sys.path.insert(0, str(Path(__file__).parent))
from minilm_prior import minilm_judge  # noqa: E402

LINEAR = ("attention.self.query", "attention.self.key", "attention.self.value",
          "attention.output.dense", "intermediate.dense", "output.dense")


def input_second_moments(folder: Path, sequences: int = 128,
                         centred: bool = False) -> dict[str, np.ndarray]:
    """E[x_j²] (``centred``: Var[x_j], what is left once a bias correction takes the mean's
    share back) over real tokens of every linear layer's input, random tokens by the
    prior."""
    config = BertConfig.from_json(folder / "config.json")
    moments: dict[str, torch.Tensor] = {}

    class Recorder(BertEncoder):
        keep: torch.Tensor

        def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
            kept = x[self.keep].double()
            moments[name] = kept.var(0) if centred else (kept ** 2).mean(0)
            return super()._linear(x, name)

    encoder = Recorder.from_folder(folder)
    ids, mask = random_token_batch(folder, config.vocab_size, sequences, 24,
                                   np.random.default_rng(1), prior=True)
    encoder.keep = torch.as_tensor(mask).bool()
    encoder.hidden_states(ids, mask)
    return {f"{name}.weight": m.numpy() for name, m in moments.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--variants", default="default,columns")
    parser.add_argument("--centred", action="store_true",
                        help="weigh columns by Var[x_j] instead of E[x_j²]")
    parser.add_argument("--row-exponent", type=float, default=ROW_PRIOR_EXPONENT,
                        help="the word embedding's rows weighed by the prior to this power")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = minilm_path()
    judge = minilm_judge(folder)
    weights = load_weights(folder)
    state = weights.state_dict()
    sens = for_every_tensor(sensitivity(state, folder=folder, draws=1, synthetic=True),
                            weights.names)
    rows = token_row_weights(folder, weights.names, exponent=args.row_exponent)
    scales = {}
    for name, h in input_second_moments(folder, centred=args.centred).items():
        h = np.maximum(h, 1e-3 * h.mean())
        scales[name] = torch.as_tensor((h / h.mean()) ** (args.alpha / 2), dtype=torch.float32)
    correct = bert_bias_correction(folder)

    def unscale(tensors):
        return {n: (t / scales[n] if n in scales else t) for n, t in tensors.items()}

    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "r.safetensors"
        for variant in args.variants.split(","):
            scaled = variant == "columns"
            new = {n: (t * scales[n] if scaled and n in scales else t)
                   for n, t in state.items()}
            source = ModelWeights.from_tensors(new, roles=weights.roles)
            report = compress_model(source, dna, Target("bits_per_weight", args.rate),
                                    sensitivity=sens, row_weights=rows,
                                    adjust=(lambda r: correct(unscale(r))) if scaled else correct,
                                    overwrite=True)
            decompress_model(dna, out, overwrite=True)
            restored = load_weights(out).state_dict()
            if scaled:
                restored = unscale(restored)
            figures = judge(restored)
            print(json.dumps({"variant": variant, "alpha": args.alpha, "rate": args.rate,
                              "row_exponent": args.row_exponent, "centred": args.centred,
                              "bits_per_weight": report.bits_per_weight,
                              "mean": figures["mean_cosine"], "p5": figures["p5_cosine"],
                              "min": figures["min_cosine"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
