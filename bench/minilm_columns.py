"""MiniLM without data: does weighing each input column of a linear layer by E[x_j²] of its
inputs on random tokens drawn by the prior (a diagonal-Hessian / AWQ-style column
weighting) pay, with the scales' bytes counted? (issue 11)

    .venv/bin/python bench/minilm_columns.py [--rates 3] [--alphas 0.5] [--grids 16,4]
        [--variants default,columns] [--row-exponent 0.65] [--centred]

The codec has one step per row, none per column, so the weighting is simulated: every
linear weight W (query, key, value, attention output, FFN in and out) is coded as
W·diag(s), s_j = (E[x_j²] / mean E[x²])^(alpha/2), and divided by s after decoding, which a
file could only do with per-column scales stored (a format change, version 9). The scales
are the ones a file would hold: log2(s_j) rounded to steps of 1/G (``--grids``, G per
octave; 0: unrounded and not counted, the first version of this bench) and clipped to
±MAX_LOG2_SCALE; their cost is each tensor's integer symbols (int8) as one zstd-19 frame
plus a header allowance per tensor (the JSON of the field it would add), and the weights
are compressed at the target minus that cost, so both variants' files are compared at the
same total. Both variants use the default's sensitivities (measured on the original model),
row weights and data-free bias correction (applied to the unscaled weights). Prints, per
rate and variant, bits per weight (scales included), mean, 5th percentile and least cosine
of the 540 bundled sentences.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import zstandard

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

# log2 of a scale is clipped to ±this: s from 1/16 to 16 (E[x²] ratios of 2^±16 at α = 0.5).
MAX_LOG2_SCALE = 4.0
# What a tensor's entry would add to the header (uncompressed; the header is zstd-coded, so
# this overstates it): a grid, the symbols' first value, and the section holding them.
FIELD_ALLOWANCE = len(json.dumps({"column_scales": {"per_octave": 16, "section": 255}})) + 2

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


def column_scales(moments: dict[str, np.ndarray], alpha: float,
                  per_octave: int) -> tuple[dict[str, torch.Tensor], int, float]:
    """Each linear weight's column scales s_j = (h_j / mean h)^(alpha/2), log2 rounded to
    1/``per_octave`` and clipped (0: unrounded), as stored; their cost in bytes (per tensor
    a zstd-19 frame of the int8 symbols and FIELD_ALLOWANCE; 0 when unrounded) and the
    symbols' empirical entropy in bits (all tensors pooled per tensor, summed)."""
    scales, cost, entropy = {}, 0, 0.0
    for name, h in moments.items():
        h = np.maximum(h, 1e-3 * h.mean())
        log2s = (alpha / 2) * np.log2(h / h.mean())
        if per_octave:
            limit = int(MAX_LOG2_SCALE * per_octave)
            symbols = np.clip(np.rint(log2s * per_octave), -limit, limit).astype(np.int8)
            log2s = symbols.astype(np.float64) / per_octave
            cost += len(zstandard.ZstdCompressor(level=19).compress(symbols.tobytes()))
            cost += FIELD_ALLOWANCE
            _, counts = np.unique(symbols, return_counts=True)
            p = counts / counts.sum()
            entropy += float(-(counts * np.log2(p)).sum())
        scales[name] = torch.as_tensor(np.exp2(log2s), dtype=torch.float32)
    return scales, cost, entropy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="3", help="bits-per-weight targets, comma-separated")
    parser.add_argument("--alphas", default="0.5", help="comma-separated")
    parser.add_argument("--grids", default="16,4",
                        help="log2-scale steps per octave, comma-separated (0: unrounded, "
                             "not counted)")
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
    total = weights.total_numel
    sens = for_every_tensor(sensitivity(state, folder=folder, draws=1, synthetic=True),
                            weights.names)
    rows = token_row_weights(folder, weights.names, exponent=args.row_exponent)
    moments = input_second_moments(folder, centred=args.centred)
    correct = bert_bias_correction(folder)
    settings = [(None, None, None, 0, 0.0)] if "default" in args.variants.split(",") else []
    if "columns" in args.variants.split(","):
        for alpha in map(float, args.alphas.split(",")):
            for grid in map(int, args.grids.split(",")):
                settings.append((alpha, grid, *column_scales(moments, alpha, grid)))
    for alpha, grid, _, cost, entropy in (s for s in settings if s[0] is not None):
        print(json.dumps({"alpha": alpha, "per_octave": grid, "scales": sum(
            len(m) for m in moments.values()), "scale_bytes": cost,
            "scale_entropy_bytes": entropy / 8,
            "scale_bits_per_weight": 8.0 * cost / total}), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "r.safetensors"
        for rate in map(float, args.rates.split(",")):
            for alpha, grid, scales, cost, _ in settings:
                scaled = scales is not None

                def unscale(tensors, scales=scales):
                    return {n: (t / scales[n] if n in scales else t) for n, t in tensors.items()}

                new = {n: (t * scales[n] if scaled and n in scales else t)
                       for n, t in state.items()}
                source = ModelWeights.from_tensors(new, roles=weights.roles)
                report = compress_model(
                    source, dna, Target("bits_per_weight", rate - 8.0 * cost / total),
                    sensitivity=sens, row_weights=rows,
                    adjust=(lambda r, u=unscale: correct(u(r))) if scaled else correct,
                    overwrite=True)
                decompress_model(dna, out, overwrite=True)
                restored = load_weights(out).state_dict()
                if scaled:
                    restored = unscale(restored)
                figures = judge(restored)
                print(json.dumps({
                    "variant": "columns" if scaled else "default", "alpha": alpha,
                    "per_octave": grid, "rate": rate, "row_exponent": args.row_exponent,
                    "centred": args.centred, "weights_bits_per_weight": report.bits_per_weight,
                    "bits_per_weight": 8.0 * (report.file_bytes + cost) / total,
                    "mean": figures["mean_cosine"], "p5": figures["p5_cosine"],
                    "min": figures["min_cosine"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
