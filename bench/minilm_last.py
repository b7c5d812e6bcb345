"""MiniLM at 3 bits per weight, the last 0.001: where the cosine goes, and data-free
allocations measured against the default in one run (issue 11).

    PYTHONPATH=$PWD .venv/bin/python bench/minilm_last.py [--rates 3]
        [--variants default,ablate,actual,opsnr] [--out results/minilm-last.json]
        [--keep DIR] [--restored DIR/default-3.safetensors]

Every variant compresses all-MiniLM-L6-v2 with `compress_model` as the default does for a
BERT model (`bench/minilm_rows.py`'s ``absolute+columns``: synthetic sensitivities on random
tokens drawn by the token prior, the word embedding's rows by prior^0.65, column factors,
the bias correction), decompresses it and judges it on the 540 bundled sentences (mean,
5th percentile, least cosine). They differ in:

- ``default``: as the library's default;
- ``ablate``: no file of its own; the default's restored tensors put back into the
  original model one kind at a time (the rest exact), each judged: where the loss is;
- ``lngain``: no file of its own; the default's restored model with its LayerNorms' gains
  corrected per channel on random tokens (`gain_corrected`: a data-free scale
  correction beside the bias correction), four ways, each judged;
- ``actual``: the sensitivities measured again with each weight matrix's real coding
  error (the default's file: its matrix and its corrected bias swapped into the original,
  on the same random tokens): s_t = mean ‖Δy‖² / Σ e², the other tensors' as the default;
  then coded again (a second, data-free pass);
- ``actualall``: as ``actual``, the embeddings' too;
- ``actualw``: as ``actualall``, each damage per unit of the rate control's own weighted
  error (`objective_sse`: in the column factors' domain, rows weighed as the objective
  weighs them) rather than of the plain squared error;
- ``sentences``: the sensitivities measured on 64 of the bundled sentences (the judge's
  own: an oracle, not data-free), the rest as the default;
- ``scale-K-F``: the default's sensitivities of the tensors of kind K (``emb``,
  ``ffnout``, ``ffnin``, ``query``, ``key``, ``value``, ``attnout``) times F;
- ``opsnr``: the sensitivities measured with noise at the SNR each tensor got in the
  default's file instead of DEFAULT_SNR_DB;
- ``gnrowsA``: the rows of every linear weight of the encoder layers weighed also by the
  Gauss-Newton diagonal of the embeddings on the random tokens (Hutchinson: Rademacher
  probes of the pooled output, the squared gradients summed per row), to the power A, on
  top of the objective's own rows (relative to each row's mean square); ``gnabsA``: the
  same weights, each row's absolute error (rows otherwise alike);
- ``gnlastA``: as ``gnrowsA``, on the last layer's FFN output only (its rows feed the
  final LayerNorm, whose gains γ² spread 3.8 dB on MiniLM, AM over GM, one channel at 0);
- ``colalphaA``: the column factors at α = A instead of COLUMN_ALPHA;
- ``priorE``: the word embedding's rows by prior^E instead of ROW_PRIOR_EXPONENT;
- ``fillF``: the default with `compress.SIZE_TARGET_FILL` = F (a file accepted once within
  that share of the budget; 0.99 by default);
- ``coderoff``: the default without the trellis tensors' one adaptive coder
  (`tensor.TRELLIS_CODER` off: the context streams only);
- ``columnoff``: the default without the coder's column context (`tensor.TRELLIS_COLUMN`
  off: format version 17's coder);
- ``floorB``: the coder kept where it saves B bits a bin (`tensor.CODER_BITS_PER_BIN`;
  0.005 by default);
- ``nogate`` / ``nogate-floorB``: the coder weighed in full on every trellis tensor, its
  sample's verdict (`tensor._sample_wins`, for tensors of more than
  `tensor.CODER_WHOLE_ELEMENTS`) not asked (a probe of the gate, not a setting).

``--keep DIR`` keeps the default's restored weights (DIR/default-R.safetensors) and every
coded variant's file (DIR/VARIANT-R.dna), and
``--restored`` reads them back, so the second-pass variants need not code the default
again. BENCHMARKS.md, "MiniLM at 3 bits per weight: the last 0.001".
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import weightdna.codec.compress as compress_module
from weightdna.bert import BertConfig, BertEncoder, mean_pool, random_token_batch
from weightdna.codec import tensor
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target, floored_row_ms
from weightdna.evaluate.columns import bert_column_factors
from weightdna.evaluate.correction import bert_bias_correction
from weightdna.evaluate.sensitivity import (
    SYNTHETIC_LENGTH,
    SYNTHETIC_SEQUENCES,
    _bert_forward,
    _bert_prefix,
    for_every_tensor,
    perturbation,
    sensitivity,
    token_row_weights,
)
from weightdna.weights import load_weights, minilm_path

sys.path.insert(0, str(Path(__file__).parent))
from minilm_prior import minilm_judge, say  # noqa: E402

KINDS = {
    "word embedding": ("embeddings.word_embeddings.weight",),
    "position+type embedding": ("embeddings.position_embeddings.weight",
                                "embeddings.token_type_embeddings.weight"),
    "query": ("attention.self.query.weight",),
    "key": ("attention.self.key.weight",),
    "value": ("attention.self.value.weight",),
    "attention output": ("attention.output.dense.weight",),
    "FFN in": ("intermediate.dense.weight",),
    "FFN out": ("output.dense.weight",),
}


SHORT = {"emb": "word embedding", "ffnout": "FFN out", "ffnin": "FFN in", "query": "query",
         "key": "key", "value": "value", "attnout": "attention output"}


def kind_of(name: str) -> str:
    """``name``'s kind in KINDS (the first whose suffix it has: "attention output" before
    "FFN out"), else the 1-D tensors'."""
    for kind, suffixes in KINDS.items():
        if name.endswith(suffixes):
            return kind
    return "1-D (biases, LayerNorms)"


def synthetic_tokens(folder: Path, config: BertConfig, seed: int = 0):
    return random_token_batch(folder, config.vocab_size, SYNTHETIC_SEQUENCES,
                              min(SYNTHETIC_LENGTH, config.max_position_embeddings),
                              np.random.default_rng(seed), prior=True)


def objective_sse(original: np.ndarray, coded: np.ndarray, columns: np.ndarray | None,
                  row_weight: np.ndarray | None) -> float:
    """The rate control's weighted squared error of ``coded`` (`ratecontrol.evaluate`'s
    last figure): the error in the domain the tensor is coded in (divided by its column
    factors), row r's over row_scale_r² as `apply_objective` sets it ("layer": each row
    relative to its floored mean square; given row weights, the absolute error by them)."""
    divided = original.astype(np.float64) / (columns if columns is not None else 1.0)
    error = (coded.astype(np.float64) - original) / (columns if columns is not None else 1.0)
    rows = divided.reshape(divided.shape[0], -1)
    row_ms = (rows ** 2).mean(axis=1)
    ms_t = float(row_ms.mean())
    if row_weight is not None:
        ms = ms_t / (row_weight / float(np.mean(row_weight)))
    else:
        ms = floored_row_ms(row_ms, ms_t)
    scale = np.sqrt(float(np.mean(1.0 / ms)) * ms)
    return float(np.sum((error.reshape(rows.shape) / scale[:, None]) ** 2))


def actual_sensitivities(state, restored, folder, base: dict[str, float],
                         embeddings: bool = False, columns=None, row_weights=None
                         ) -> dict[str, float]:
    """The default's sensitivities, each weight matrix's of the encoder layers (and with
    ``embeddings`` the embeddings' too) replaced by its real coding error's output damage
    per unit of its squared error (its corrected bias along)."""
    config = BertConfig.from_json(folder / "config.json")
    prefix = _bert_prefix(state)
    encoder = BertEncoder(state, config)
    ids, mask = synthetic_tokens(folder, config)
    forward = _bert_forward(encoder, ids, mask, prefix)
    reference = forward("", np.empty(0))
    out = dict(base)
    for key in encoder.tensors:
        name = prefix + key
        original = np.asarray(state[name], dtype=np.float32)
        if original.ndim != 2 or not (embeddings or key.startswith("encoder.layer.")):
            continue
        coded = restored[name].numpy().astype(np.float32)
        error = coded.astype(np.float64) - original
        sse = float(np.sum(error * error))
        if not sse > 0:
            continue
        bias_key = key[: -len("weight")] + "bias"
        kept = encoder.tensors.get(bias_key)
        if kept is not None:
            encoder.tensors[bias_key] = restored[prefix + bias_key].to(kept.dtype)
        try:
            moved = forward(name, coded) - reference
        finally:
            if kept is not None:
                encoder.tensors[bias_key] = kept
        damage = float(np.mean(np.sum(moved.astype(np.float64) ** 2, axis=1)))
        if columns is not None:  # per unit of the rate control's own weighted error
            sse = objective_sse(original, coded, columns.get(name), row_weights.get(name))
        out[name] = damage / sse
        say(f"damage {name} {damage:.6g} per weight {damage / original.size:.4g}")
    return out


def opsnr_sensitivities(state, folder, snr: dict[str, float], base: dict[str, float]
                        ) -> dict[str, float]:
    """Noise sensitivities, each tensor perturbed at ``snr[name]`` dB (its SNR in a coded
    file) instead of DEFAULT_SNR_DB; one draw, seed 0, the default's random tokens."""
    config = BertConfig.from_json(folder / "config.json")
    prefix = _bert_prefix(state)
    encoder = BertEncoder(state, config)
    ids, mask = synthetic_tokens(folder, config)
    forward = _bert_forward(encoder, ids, mask, prefix)
    reference = forward("", np.empty(0))
    rng = np.random.default_rng(0)
    out = dict(base)
    for key in encoder.tensors:
        name = prefix + key
        db = snr.get(name)
        if db is None or not np.isfinite(db):
            continue
        values = np.asarray(state[name], dtype=np.float32)
        error = perturbation(values, rng, db, None)
        sse = float(np.sum(error * error))
        moved = forward(name, (values + error).astype(np.float32)) - reference
        out[name] = float(np.mean(np.sum(moved.astype(np.float64) ** 2, axis=1))) / sse
    return out


def gauss_newton_rows(state, folder, probes: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """{linear weight of an encoder layer: per row, Σ_j of the Gauss-Newton diagonal of the
    unit-norm pooled embeddings on the default's random tokens}, by Hutchinson probes."""
    config = BertConfig.from_json(folder / "config.json")
    prefix = _bert_prefix(state)
    encoder = BertEncoder(state, config)
    ids, mask = synthetic_tokens(folder, config)
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    mask_t = torch.as_tensor(mask, dtype=torch.long)
    keys = [k for k, t in encoder.tensors.items()
            if t.dim() == 2 and k.startswith("encoder.layer.")]
    for k in keys:
        encoder.tensors[k] = encoder.tensors[k].detach().clone().requires_grad_(True)
    hidden = encoder.embed(ids_t)
    for i in range(config.num_hidden_layers):
        hidden = encoder.layer(i, hidden, mask_t)
    pooled = torch.nn.functional.normalize(mean_pool(hidden, mask_t), p=2, dim=1)
    rng = torch.Generator().manual_seed(seed)
    sums = {k: torch.zeros(encoder.tensors[k].shape[0], dtype=torch.float64) for k in keys}
    for _ in range(probes):
        v = torch.randint(0, 2, pooled.shape, generator=rng).to(pooled.dtype) * 2 - 1
        grads = torch.autograd.grad(pooled, [encoder.tensors[k] for k in keys], grad_outputs=v,
                                    retain_graph=True)
        for k, g in zip(keys, grads, strict=True):
            sums[k] += (g.double() ** 2).sum(dim=1)
    return {prefix + k: (sums[k] / probes).numpy() for k in keys}


def gn_row_weights(weights, gn: dict[str, np.ndarray], power: float,
                   relative: bool = True) -> dict[str, np.ndarray]:
    """Row weights (absolute error) that keep the objective's rows (relative to each row's
    floored mean square; ``relative`` False: rows alike) and multiply them by
    (GN_r / mean GN)^power."""
    out = {}
    for name, g in gn.items():
        rows = weights.tensor(name).double().reshape(g.size, -1)
        row_ms = (rows ** 2).mean(dim=1).numpy()
        ms_t = float(row_ms.mean())
        g = np.maximum(g, 1e-6 * g.mean())
        out[name] = (g / g.mean()) ** power / (floored_row_ms(row_ms, ms_t) if relative
                                               else 1.0)
    return out


def layer_norm_outputs(state, folder, tokens) -> dict[str, torch.Tensor]:
    """{LayerNorm name: its outputs over the real tokens of ``tokens``} of the BERT model
    ``state``."""
    config = BertConfig.from_json(folder / "config.json")
    encoder = BertEncoder(state, config)
    ids, mask = (torch.as_tensor(t) for t in tokens)
    keep = mask.bool()
    outputs: dict[str, torch.Tensor] = {}
    plain = encoder._layer_norm

    def recording(x: torch.Tensor, name: str) -> torch.Tensor:
        y = plain(x, name)
        outputs[name] = y[keep].double()
        return y

    encoder._layer_norm = recording
    with torch.no_grad():
        hidden = encoder.embed(ids)
        for i in range(config.num_hidden_layers):
            hidden = encoder.layer(i, hidden, mask)
    return outputs


def gain_corrected(state, restored, folder, last_only: bool, least_squares: bool,
                   sequences: int = 256, seed: int = 5) -> dict[str, torch.Tensor]:
    """``restored`` with each LayerNorm's gains (``last_only``: the final one's) scaled per
    channel so that its outputs on random tokens drawn by the prior match the original's:
    their standard deviations, or (``least_squares``) by the regression of the original's
    centred outputs on the coded model's; the bias then matches the means. In the
    forward's order, each on the outputs after the corrections before it."""
    config = BertConfig.from_json(folder / "config.json")
    tokens = random_token_batch(folder, config.vocab_size, sequences,
                                min(SYNTHETIC_LENGTH, config.max_position_embeddings),
                                np.random.default_rng(seed), prior=True)
    reference = layer_norm_outputs(state, folder, tokens)
    names = list(reference)[-1:] if last_only else list(reference)
    out = {k: v.clone() for k, v in restored.items()}
    for name in names:
        want, got = reference[name], layer_norm_outputs(out, folder, tokens)[name]
        gain, bias = out[name + ".weight"].double(), out[name + ".bias"].double()
        normed = (got - bias) / torch.where(gain != 0, gain, torch.ones_like(gain))
        if least_squares:
            w, g = want - want.mean(0), got - got.mean(0)
            scale = (w * g).mean(0) / (g * g).mean(0).clamp(min=1e-12)
        else:
            scale = want.std(0) / got.std(0).clamp(min=1e-12)
        out[name + ".weight"] = (gain * scale).to(restored[name + ".weight"].dtype)
        out[name + ".bias"] = (want.mean(0) - gain * scale * normed.mean(0)).to(
            restored[name + ".bias"].dtype)
    return out


def judged_row(rate, variant, figures, bits_per_weight=float("nan"), seconds=0.0,
               snr_db=float("nan")) -> dict:
    """A result row of the judge's ``figures`` (printed as a JSON line); ``snr_db``: the
    file's pooled SNR (`CompressionReport.snr_db`)."""
    row = {"rate": rate, "variant": variant, "bits_per_weight": bits_per_weight,
           "snr_db": snr_db, "cosine": figures["mean_cosine"], "p5_cosine": figures["p5_cosine"],
           "min_cosine": figures["min_cosine"], "seconds": seconds}
    say(json.dumps(row))
    return row


KEEP: list[Path] = []  # --keep's folder, when given


def judged(weights, judge, rate, variant, tmp: Path, **options):
    dna, out = tmp / f"{variant}.dna", tmp / f"{variant}.safetensors"
    started = time.perf_counter()
    report = compress_model(weights, dna, Target("bits_per_weight", rate), overwrite=True,
                            **options)
    seconds = time.perf_counter() - started
    for folder in KEEP:
        shutil.copyfile(dna, folder / f"{variant}-{rate:g}.dna")
    decompress_model(dna, out, overwrite=True)
    restored = load_weights(out).state_dict()
    row = judged_row(rate, variant, judge(restored), report.bits_per_weight, seconds,
                     report.snr_db)
    snr = {t.name: t.snr_db for t in report.tensors if t.snr_db is not None}
    return row, restored, snr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="3")
    parser.add_argument("--variants", default="default,ablate,actual,opsnr")
    parser.add_argument("--out", type=Path, default=Path("results/minilm-last.json"))
    parser.add_argument("--restored", type=Path, default=None,
                        help="the default's restored weights kept by an earlier --keep at "
                             "this --rates (its file is not coded again; no opsnr)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="a folder to keep the default's restored weights in")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    known = re.compile(r"(default|ablate|lngain|actual|actualall|actualw|opsnr|sentences"
                       r"|scale-(" + "|".join(SHORT) + r")-[0-9.]+"
                       r"|(gnrows|gnabs|gnlast|colalpha|prior|fill)[0-9.]+"
                       r"|coderoff|columnoff|nogate|(nogate-)?floor[0-9.]+)$")
    unknown = [v for v in variants if not known.match(v)]
    if unknown:
        parser.error(f"unknown variants {unknown}; see the docstring")
    torch.set_num_threads(1)
    if args.keep is not None:
        KEEP.append(args.keep)
        args.keep.mkdir(parents=True, exist_ok=True)
    folder = minilm_path()
    judge = minilm_judge(folder)
    weights = load_weights(folder)
    state = weights.state_dict()
    started = time.perf_counter()
    base = for_every_tensor(sensitivity(state, folder=folder, draws=1, synthetic=True),
                            weights.names)
    say(f"sensitivities in {time.perf_counter() - started:.0f} s")
    rows_prior = token_row_weights(folder, weights.names)
    columns = bert_column_factors(folder)
    common = {"column_factors": columns, "adjust": bert_bias_correction(folder)}
    gn = None
    fill = compress_module.SIZE_TARGET_FILL
    coder = (tensor.TRELLIS_CODER, tensor.CODER_BITS_PER_BIN, tensor._sample_wins)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for rate in (float(r) for r in args.rates.split(",")):
            restored = snr = None
            if args.restored is not None:
                restored = load_weights(args.restored).state_dict()
            for variant in variants:
                if variant in ("default", "ablate", "actual", "actualall", "actualw", "opsnr",
                               "lngain") \
                        and restored is None:
                    row, restored, snr = judged(weights, judge, rate, "default", tmp,
                                                sensitivity=base, row_weights=rows_prior,
                                                **common)
                    results.append(row)
                    if args.keep is not None:
                        shutil.copyfile(tmp / "default.safetensors",
                                        args.keep / f"default-{rate:g}.safetensors")
                if variant == "default":
                    continue
                if variant == "lngain":
                    for least_squares in (True, False):
                        for last_only in (True, False):
                            figures = judge(gain_corrected(state, restored, folder,
                                                           last_only, least_squares))
                            how = "regression" if least_squares else "std"
                            which = "final one" if last_only else "every one"
                            results.append(judged_row(
                                rate, f"LayerNorm gains by {how}, {which}", figures))
                    continue
                if variant == "ablate":
                    kinds = sorted({kind_of(n) for n in weights.names})
                    for kind in kinds:
                        mixed = {n: (restored[n] if kind_of(n) == kind else state[n])
                                 for n in weights.names}
                        figures = judge(mixed)
                        results.append(judged_row(rate, f"only {kind} coded", figures))
                    continue
                if variant in ("actual", "actualall", "actualw"):
                    sens = actual_sensitivities(
                        state, restored, folder, base, embeddings=variant != "actual",
                        columns=columns if variant == "actualw" else None,
                        row_weights=rows_prior)
                elif variant == "sentences":
                    sens = for_every_tensor(sensitivity(state, folder=folder, draws=1),
                                            weights.names)
                elif variant.startswith("scale-"):
                    _, short, factor = variant.split("-")
                    sens = {n: v * (float(factor) if kind_of(n) == SHORT[short] else 1.0)
                            for n, v in base.items()}
                elif variant == "opsnr":
                    sens = opsnr_sensitivities(state, folder, snr, base)
                elif variant.startswith("prior"):
                    sens = base
                    row_weights = token_row_weights(folder, weights.names,
                                                    float(variant[len("prior"):]))
                    row, _, _ = judged(weights, judge, rate, variant, tmp, sensitivity=sens,
                                       row_weights=row_weights, **common)
                    results.append(row)
                    continue
                elif variant.startswith("colalpha"):
                    sens, row_weights = base, rows_prior
                    alpha = float(variant[len("colalpha"):])
                    row, _, _ = judged(weights, judge, rate, variant, tmp, sensitivity=sens,
                                       row_weights=row_weights,
                                       column_factors=bert_column_factors(folder, alpha=alpha),
                                       adjust=common["adjust"])
                    results.append(row)
                    continue
                elif variant.startswith(("gnrows", "gnabs", "gnlast")):
                    sens = base
                    if gn is None:
                        t0 = time.perf_counter()
                        gn = gauss_newton_rows(state, folder)
                        say(f"Gauss-Newton rows in {time.perf_counter() - t0:.0f} s")
                    extra = gn_row_weights(weights, gn, float(variant.lstrip("gnrowsablt")),
                                           relative=not variant.startswith("gnabs"))
                    if variant.startswith("gnlast"):
                        last = f"encoder.layer.{max(int(n.split('.')[2]) for n in gn)}."
                        extra = {n: v for n, v in extra.items()
                                 if n.endswith(last + "output.dense.weight")}
                        say(f"{variant}: rows weighed in {sorted(extra)}")
                    row_weights = {**rows_prior, **extra}
                elif variant.startswith("fill"):
                    sens = base
                    compress_module.SIZE_TARGET_FILL = float(variant[len("fill"):])
                elif variant == "coderoff":
                    sens = base
                    tensor.TRELLIS_CODER = False
                elif variant == "columnoff":
                    sens = base
                    tensor.TRELLIS_COLUMN = False
                elif variant.startswith(("nogate", "floor")):
                    sens = base
                    if variant.startswith("nogate"):
                        tensor._sample_wins = lambda *_, **__: True
                    if "floor" in variant:
                        tensor.CODER_BITS_PER_BIN = float(variant.split("floor")[1])
                else:
                    parser.error(f"unknown variant {variant!r}")
                if not variant.startswith(("gnrows", "gnabs", "gnlast")):
                    row_weights = rows_prior
                    changed = {n: round(sens[n] / base[n], 3) for n in base
                               if abs(sens[n] / base[n] - 1) > 1e-9}
                    say(f"{variant}: sensitivity ratios to the default's {json.dumps(changed)}")
                row, _, _ = judged(weights, judge, rate, variant, tmp, sensitivity=sens,
                                   row_weights=row_weights, **common)
                results.append(row)
                compress_module.SIZE_TARGET_FILL = fill
                tensor.TRELLIS_CODER, tensor.CODER_BITS_PER_BIN, tensor._sample_wins = coder
                tensor.TRELLIS_COLUMN = True
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| bpw target | variant | bpw | pooled SNR dB | mean cosine | 5th percentile | least "
          "| seconds |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rate']:g} | {r['variant']} | {r['bits_per_weight']:.4f} | "
              f"{r['snr_db']:.3f} | {r['cosine']:.5f} | {r['p5_cosine']:.5f} | "
              f"{r['min_cosine']:.4f} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
