"""MiniLM without data: the word embedding's rows weighed by a token prior, and random tokens
drawn by it, against the default, in one run (issue 11).

    .venv/bin/python bench/minilm_prior.py [--rates 3] [--variants default,rows,rows+sampler]
        [--exponents 1] [--out results/minilm-prior.json]

Each variant compresses all-MiniLM-L6-v2 with `compress_model` at a bits-per-weight target
(objective "layer", data-free sensitivities), decompresses it and gives the mean cosine of
the 540 bundled sentences' embeddings (bench/panel.py's judge):

* ``uniform`` (the default before the prior): sensitivities on 32 random token sequences
  drawn uniformly, no row weights;
* ``rows``: the same sensitivities, and the word embedding's rows weighed by
  `weightdna.bert.token_prior` (Zipf over the vocabulary's order) to the power
  ``--exponents``;
* ``sampler``: the random tokens drawn by that prior, no row weights;
* ``rows+sampler``: both (the default now, at ``ROW_PRIOR_EXPONENT``);
* ``rows+sampler+gptq``: also GPTQ on 64 random token sequences drawn by the prior
  (`weightdna.evaluate.calibration.bert_hessians`), not a default.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from weightdna.bert import read_vocabulary, token_prior
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.sensitivity import ROW_PRIOR_EXPONENT, for_every_tensor, sensitivity
from weightdna.weights import load_weights, minilm_path

EMBEDDING = "embeddings.word_embeddings.weight"
VARIANTS = ("uniform", "rows", "sampler", "rows+sampler", "rows+sampler+gptq")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def minilm_judge(folder: Path):
    """bench/panel.py's MiniLM judge, all of `compare_embeddings`' figures: the 540 bundled
    sentences' embeddings, restored against original."""
    from weightdna.bert import BertConfig, BertEncoder, load_tokenizer
    from weightdna.evaluate import compare_embeddings, embed_sentences, load_sentences

    config, tokenizer = BertConfig.from_json(folder / "config.json"), load_tokenizer(folder)
    sentences = load_sentences()
    reference = embed_sentences(BertEncoder(load_weights(folder).state_dict(), config),
                                sentences, tokenizer)

    def judge(state: dict) -> dict:
        restored = embed_sentences(BertEncoder(state, config), sentences, tokenizer)
        return compare_embeddings(reference, restored)

    return judge


def judged_file(weights, judge, rate: float, variant: str, folder: Path,
                **options) -> dict:
    """One row of a MiniLM bench: ``weights`` compressed by `compress_model` at ``rate``
    bits per weight with ``options`` into ``folder``, decompressed and judged by ``judge``
    (`minilm_judge`); said on stderr as it comes."""
    dna, out = folder / "m.dna", folder / "r.safetensors"
    started = time.perf_counter()
    report = compress_model(weights, dna, Target("bits_per_weight", rate), overwrite=True,
                            **options)
    seconds = time.perf_counter() - started
    decompress_model(dna, out, overwrite=True)
    figures = judge(load_weights(out).state_dict())
    row = {"rate": rate, "variant": variant, "bits_per_weight": report.bits_per_weight,
           "cosine": figures["mean_cosine"], "p5_cosine": figures["p5_cosine"],
           "min_cosine": figures["min_cosine"], "seconds": seconds}
    say(json.dumps(row))
    return row


def write_judged(rows: list[dict], out: Path, label: str = "variant", digits: int = 4) -> None:
    """``rows`` (`judged_file`) as JSON in ``out`` and as a markdown table on stdout, the
    cosines to ``digits`` places."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"| bpw target | {label} | bpw | mean cosine | 5th percentile | least | seconds |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rate']:g} | {r['variant']} | {r['bits_per_weight']:.3f} | "
              f"{r['cosine']:.{digits}f} | {r['p5_cosine']:.{digits}f} | "
              f"{r['min_cosine']:.4f} | {r['seconds']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="3")
    parser.add_argument("--variants", default="uniform,rows+sampler")
    parser.add_argument("--exponents", default=str(ROW_PRIOR_EXPONENT))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/minilm-prior.json"))
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; use {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    folder = minilm_path()
    judge = minilm_judge(folder)
    weights = load_weights(folder)
    names = weights.names
    embedding = next(n for n in names if n.endswith(EMBEDDING))
    words = read_vocabulary(folder, weights.info(embedding).shape[0])
    measured: dict[bool, dict[str, float]] = {}

    def sensitivities(prior: bool) -> dict[str, float]:
        if prior not in measured:
            started = time.perf_counter()
            values = sensitivity(weights.state_dict(), folder=folder, draws=1, synthetic=True,
                                 prior=prior)
            measured[prior] = for_every_tensor(values, names)
            say(f"sensitivities ({'prior' if prior else 'uniform'} tokens) in "
                f"{time.perf_counter() - started:.0f} s; {embedding}: "
                f"{measured[prior][embedding]:.4g}")
        return measured[prior]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dna, out = Path(tmp) / "m.dna", Path(tmp) / "r.safetensors"
        for rate in (float(r) for r in args.rates.split(",")):
            for variant in args.variants.split(","):
                exponents = ([float(e) for e in args.exponents.split(",")]
                             if "rows" in variant else [None])
                for exponent in exponents:
                    sens = sensitivities("sampler" in variant)
                    row_weights = ({embedding: token_prior(words, exponent)}
                                   if exponent is not None else None)
                    calibration = None
                    if "gptq" in variant:
                        from weightdna.bert import random_token_batch
                        from weightdna.evaluate.calibration import bert_hessians

                        tokens = random_token_batch(folder, len(words), 64, 24,
                                                    np.random.default_rng(0), prior=True)
                        calibration = bert_hessians(weights.state_dict(), [], folder, tokens)
                    started = time.perf_counter()
                    report = compress_model(weights, dna, Target("bits_per_weight", rate),
                                            sensitivity=sens, row_weights=row_weights,
                                            calibration=calibration, overwrite=True,
                                            workers=args.workers)
                    seconds = time.perf_counter() - started
                    decompress_model(dna, out, overwrite=True)
                    figures = judge(load_weights(out).state_dict())
                    cosine = figures["mean_cosine"]
                    emb = next(t for t in report.tensors if t.name == embedding)
                    row = {"rate": rate, "variant": variant, "exponent": exponent,
                           "bits_per_weight": report.bits_per_weight, "cosine": cosine,
                           "p5_cosine": figures["p5_cosine"],
                           "min_cosine": figures["min_cosine"],
                           "embedding_bits_per_weight": 8 * emb.bytes / weights.info(
                               embedding).numel,
                           "embedding_snr_db": emb.snr_db, "seconds": seconds}
                    rows.append(row)
                    say(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print("| bpw target | variant | exponent | bpw | mean cosine | 5th percentile | "
          "embedding bits/weight | embedding SNR dB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rate']:g} | {r['variant']} | {r['exponent'] or ''} | "
              f"{r['bits_per_weight']:.3f} | {r['cosine']:.4f} | {r['p5_cosine']:.4f} | "
              f"{r['embedding_bits_per_weight']:.2f} | {r['embedding_snr_db']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
