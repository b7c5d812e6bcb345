"""MiniLM without data: does weighing each input column of a linear layer by E[x_j²] of its
inputs on random tokens drawn by the prior (a diagonal-Hessian / AWQ-style column
weighting) pay, with the scales' bytes counted? (issue 11)

    .venv/bin/python bench/minilm_columns.py [--rates 3] [--alphas 0.5] [--grids 16,4]
        [--variants default,columns,stored] [--row-exponent 0.65] [--centred]

The codec has one step per row, none per column, so the weighting is simulated: every
linear weight W (query, key, value, attention output, FFN in and out) is coded as
W·diag(s), s_j = (E[x_j²] / mean E[x²])^(alpha/2), and divided by s after decoding, which a
file could only do with per-column scales stored (a format change, version 9). The scales
are the ones a file would hold: log2(s_j) rounded to steps of 1/G (``--grids``, G per
octave; 0: unrounded and not counted, the first version of this bench) and clipped to
±MAX_LOG2_SCALE; their cost is each tensor's integer symbols (int8) as one zstd-19 frame
plus a header allowance per tensor (the JSON of the field it would add), and the weights
are compressed at the target minus that cost, so both variants' files are compared at the
same total. ``stored`` writes the real thing instead: `compress_model`'s
``column_factors`` (format version 9, the factors in the file, its size the file's). All
variants use the default's sensitivities (measured on the original model), row weights and
data-free bias correction (applied to the unscaled weights). Prints, per rate and variant,
bits per weight (scales included), mean, 5th percentile and least cosine of the 540
bundled sentences.
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

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.columns import column_exponents, input_second_moments
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
MAX_LOG2_SCALE = 4
# What a tensor's entry would add to the header (uncompressed; the header is zstd-coded, so
# this overstates it): a grid, the symbols' first value, and the section holding them.
FIELD_ALLOWANCE = len(json.dumps({"column_scales": {"per_octave": 16, "section": 255}})) + 2


def column_scales(moments: dict[str, np.ndarray], alpha: float,
                  per_octave: int) -> tuple[dict[str, torch.Tensor], int, float]:
    """Each linear weight's column scales s_j = (h_j / mean h)^(alpha/2), log2 rounded to
    1/``per_octave`` and clipped (0: unrounded), as stored; their cost in bytes (per tensor
    a zstd-19 frame of the int8 symbols and FIELD_ALLOWANCE; 0 when unrounded) and the
    symbols' empirical entropy in bits (all tensors pooled per tensor, summed)."""
    scales, cost, entropy = {}, 0, 0.0
    for name, h in moments.items():
        floored = np.maximum(h, 1e-3 * h.mean())
        log2s = (alpha / 2) * np.log2(floored / floored.mean())
        if per_octave:
            symbols = column_exponents(h, alpha, per_octave, MAX_LOG2_SCALE).astype(np.int8)
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
    stored = [(float(a), int(g)) for a in args.alphas.split(",") for g in args.grids.split(",")
              if "stored" in args.variants.split(",") and int(g)]
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
            for alpha, grid in stored:
                factors = {name: np.exp2(-column_exponents(h, alpha, grid, MAX_LOG2_SCALE)
                                         / grid) for name, h in moments.items()}
                report = compress_model(weights, dna, Target("bits_per_weight", rate),
                                        sensitivity=sens, row_weights=rows,
                                        column_factors=factors, adjust=correct,
                                        overwrite=True)
                decompress_model(dna, out, overwrite=True)
                figures = judge(load_weights(out).state_dict())
                print(json.dumps({
                    "variant": "stored", "alpha": alpha, "per_octave": grid, "rate": rate,
                    "row_exponent": args.row_exponent, "centred": args.centred,
                    "bits_per_weight": report.bits_per_weight,
                    "mean": figures["mean_cosine"], "p5": figures["p5_cosine"],
                    "min": figures["min_cosine"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
