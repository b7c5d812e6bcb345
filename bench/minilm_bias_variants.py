"""Bias and LayerNorm corrections measured on MiniLM's restored weights, in memory (issue
11): which correction after coding, on which inputs, and where the cosine goes.

    .venv/bin/python bench/minilm_bias_variants.py RATE SEQUENCES VARIANTS [--workdir DIR]
    .venv/bin/python bench/minilm_bias_variants.py 3 256 blame

First compresses all-MiniLM-L6-v2 at RATE bits/weight with the default before the bias
correction (sensitivities on random tokens by the prior, rows by prior^0.65; no ``adjust``)
into DIR (default /tmp/minilm-bias; reused when there), then for each variant (comma
separated) edits the restored biases (and LayerNorm parameters) in memory and prints the
mean and 5th-percentile cosine of the 540 bundled sentences (bench/panel.py's judge).
SEQUENCES random token sequences drawn by the prior are the inputs of the data-free
variants. Variants: plain; nagel (b − (Ŵ − W)·E[x], E[x] of the original model); seq (each
linear bias moved by its outputs' mean shift, stage after stage, through the corrected
model: `weightdna.evaluate.correction`'s method for the linear layers); seq+ln-mean (and
each LayerNorm's bias too: the default now); seq+ln-affine (LayerNorm weight and bias by
least squares per channel); seq+ln-affine-moment (by mean and spread); lnonly-mean;
gain+ln-none / gain+ln-mean (also each linear row scaled by a least-squares gain, which
the format could not store without recoding the weights); nagel-sent, seq-sent,
sent+ln-mean, sent+ln-affine (64 bundled sentences instead of random tokens: an oracle,
the judge's data); blame (one group of tensors restored at a time, loss of mean cosine).
A scratch of measurements, not a library path.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from weightdna.bert import BertConfig, BertEncoder, load_tokenizer, random_token_batch
from weightdna.evaluate import compare_embeddings, embed_sentences, load_sentences
from weightdna.evaluate.sensitivity import _calibration_sentences
from weightdna.weights import load_weights, minilm_path

torch.set_num_threads(1)
folder = minilm_path()
config = BertConfig.from_json(folder / "config.json")
tok = load_tokenizer(folder)
sentences = load_sentences()
original = load_weights(folder).state_dict()
reference = embed_sentences(BertEncoder(original, config), sentences, tok)


def judge(state):
    f = compare_embeddings(reference, embed_sentences(BertEncoder(state, config), sentences, tok))
    return f["mean_cosine"], f["p5_cosine"]


LIN = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]


def recording_layer_norm(enc, ln, rec, keep):
    """``ln`` that records (normalized, output) of the kept positions into rec."""

    def rln(x, name):
        y = ln(x, name)
        n = torch.nn.functional.layer_norm(
            x, (x.shape[-1],), None, None, enc.config.layer_norm_eps
        )
        rec[name] = (n[keep].double(), y[keep].double())
        return y

    return rln


def run_layer(enc, i, hidden, mask, rec):
    """run layer i recording linear outputs and LN (normalized, output) into rec."""
    lin, ln = enc._linear, enc._layer_norm
    keep = mask.bool()

    def rlin(x, name):
        y = lin(x, name)
        rec[name] = y[keep].double()
        return y

    rln = recording_layer_norm(enc, ln, rec, keep)

    enc._linear, enc._layer_norm = rlin, rln
    try:
        with torch.no_grad():
            return hidden if i < 0 else enc.layer(i, hidden, mask)
    finally:
        enc._linear, enc._layer_norm = lin, ln


def embed_rec(enc, ids, mask, rec):
    ln = enc._layer_norm
    keep = mask.bool()

    rln = recording_layer_norm(enc, ln, rec, keep)

    enc._layer_norm = rln
    try:
        with torch.no_grad():
            return enc.embed(ids)
    finally:
        enc._layer_norm = ln


def correct(restored, ids, mask, linear=True, ln="none", lns_only_last=False, gain=False):
    ids = torch.as_tensor(ids)
    mask = torch.as_tensor(mask)
    eo = BertEncoder(original, config)
    er = BertEncoder(restored, config)
    out = {}

    def fix_ln(name, ro, rr):
        if ln == "none" or (
            lns_only_last
            and name != f"encoder.layer.{config.num_hidden_layers - 1}.output.LayerNorm"
        ):
            return False
        (_, yo), (nr, yr) = ro[name], rr[name]
        if ln == "mean":
            shift = yo.mean(0) - yr.mean(0)
            er.tensors[name + ".bias"] = (er.tensors[name + ".bias"].double() + shift).float()
        else:  # affine LS: yo ~ g nr + c
            mn = nr.mean(0)
            my = yo.mean(0)
            cov = ((nr - mn) * (yo - my)).mean(0)
            var = ((nr - mn) ** 2).mean(0)
            g = cov / var.clamp(min=1e-12)
            if ln == "affine-moment":
                g = torch.sign(cov) * ((yo - my) ** 2).mean(0).sqrt() / var.clamp(min=1e-12).sqrt()
            er.tensors[name + ".weight"] = g.float()
            er.tensors[name + ".bias"] = (my - g * mn).float()
        out[name + ".weight"] = er.tensors[name + ".weight"]
        out[name + ".bias"] = er.tensors[name + ".bias"]
        return True

    ro, rr = {}, {}
    ho = embed_rec(eo, ids, mask, ro)
    hr = embed_rec(er, ids, mask, rr)
    if fix_ln("embeddings.LayerNorm", ro, rr):
        rr = {}
        hr = embed_rec(er, ids, mask, rr)
    for i in range(config.num_hidden_layers):
        ro = {}
        ho_next = run_layer(eo, i, ho, mask, ro)
        p = f"encoder.layer.{i}."
        stages = [
            [p + n for n in LIN[:3]],
            [p + LIN[3]],
            [p + "attention.output.LayerNorm"],
            [p + LIN[4]],
            [p + LIN[5]],
            [p + "output.LayerNorm"],
        ]
        for st in stages:
            rr = {}
            run_layer(er, i, hr, mask, rr)
            for name in st:
                if name.endswith("LayerNorm"):
                    fix_ln(name, ro, rr)
                elif gain:
                    b = er.tensors[name + ".bias"].double()
                    z = rr[name] - b
                    yo = ro[name]
                    mz, my = z.mean(0), yo.mean(0)
                    g = ((z - mz) * (yo - my)).mean(0) / ((z - mz) ** 2).mean(0).clamp(min=1e-12)
                    er.tensors[name + ".weight"] = (
                        er.tensors[name + ".weight"].double() * g[:, None]
                    ).float()
                    er.tensors[name + ".bias"] = (my - g * mz).float()
                    out[name + ".weight"] = er.tensors[name + ".weight"]
                    out[name + ".bias"] = er.tensors[name + ".bias"]
                elif linear:
                    shift = ro[name].mean(0) - rr[name].mean(0)
                    er.tensors[name + ".bias"] = (
                        er.tensors[name + ".bias"].double() + shift
                    ).float()
                    out[name + ".bias"] = er.tensors[name + ".bias"]
        rr = {}
        hr = run_layer(er, i, hr, mask, rr)
        ho = ho_next
    new = dict(restored)
    new.update(out)
    return new


def nagel(restored, ids, mask):
    """one-shot: b - (What-W) E[x], E[x] from original."""
    ids = torch.as_tensor(ids)
    mask = torch.as_tensor(mask)
    eo = BertEncoder(original, config)
    rec = {}
    lin = eo._linear
    keep = mask.bool()

    def rlin(x, name):
        rec[name] = x[keep].double().mean(0)
        return lin(x, name)

    eo._linear = rlin
    with torch.no_grad():
        h = eo.embed(ids)
        for i in range(config.num_hidden_layers):
            h = eo.layer(i, h, mask)
    new = dict(restored)
    for name, m in rec.items():
        d = restored[name + ".weight"].double() - original[name + ".weight"].double()
        new[name + ".bias"] = (restored[name + ".bias"].double() - d @ m).float()
    return new


def restored_file(rate: str, workdir: Path) -> Path:
    from weightdna.bert import read_vocabulary, token_prior
    from weightdna.codec.compress import compress_model, decompress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.evaluate.sensitivity import ROW_PRIOR_EXPONENT, for_every_tensor, sensitivity

    out = workdir / f"r{rate}.safetensors"
    if out.exists():
        return out
    workdir.mkdir(parents=True, exist_ok=True)
    weights = load_weights(folder)
    names = weights.names
    emb = next(n for n in names if n.endswith("embeddings.word_embeddings.weight"))
    words = read_vocabulary(folder, weights.info(emb).shape[0])
    sens = for_every_tensor(
        sensitivity(weights.state_dict(), folder=folder, draws=1, synthetic=True, prior=True),
        names,
    )
    compress_model(
        weights,
        workdir / f"m{rate}.dna",
        Target("bits_per_weight", float(rate)),
        sensitivity=sens,
        row_weights={emb: token_prior(words, ROW_PRIOR_EXPONENT)},
        overwrite=True,
    )
    decompress_model(workdir / f"m{rate}.dna", out, overwrite=True)
    return out


GROUPS = {
    "word": lambda n: "word_emb" in n,
    **{f"layer{i}": (lambda n, i=i: f"layer.{i}." in n) for i in range(6)},
    "q": lambda n: "query" in n,
    "k": lambda n: "key" in n,
    "v": lambda n: "value" in n,
    "attn.out": lambda n: "attention.output.dense" in n,
    "ffn.in": lambda n: "intermediate" in n,
    "ffn.out": lambda n: "output.dense" in n and "attention" not in n,
}


if __name__ == "__main__":
    rate, n, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    workdir = (
        Path(sys.argv[5])
        if len(sys.argv) > 5 and sys.argv[4] == "--workdir"
        else Path("/tmp/minilm-bias")
    )
    restored = load_weights(restored_file(rate, workdir)).state_dict()
    ids, mask = random_token_batch(
        folder, config.vocab_size, n, 24, np.random.default_rng(0), prior=True
    )
    sids, smask = tok(_calibration_sentences())
    for v in variants:
        t = time.time()
        if v == "blame":
            m, p = judge(restored)
            print("all", round(1 - m, 5), flush=True)
            for g, f in GROUPS.items():
                m, p = judge({k: (restored[k] if f(k) else original[k]) for k in original})
                print(g, round(1 - m, 5), flush=True)
            continue
        if v == "plain":
            s = restored
        elif v == "nagel":
            s = nagel(restored, ids, mask)
        elif v == "nagel-sent":
            s = nagel(restored, sids, smask)
        elif v == "seq":
            s = correct(restored, ids, mask)
        elif v == "seq-sent":
            s = correct(restored, sids, smask)
        elif v.startswith("seq+ln"):  # seq+ln-mean, seq+ln-affine, seq+ln-affine-moment
            s = correct(restored, ids, mask, ln=v[len("seq+ln-") :])
        elif v.startswith("gain+ln-"):
            s = correct(restored, ids, mask, ln=v[len("gain+ln-") :], gain=True)
        elif v.startswith("lnonly-"):
            s = correct(restored, ids, mask, linear=False, ln=v[len("lnonly-") :])
        elif v.startswith("seq+last-"):
            s = correct(restored, ids, mask, ln=v[len("seq+last-") :], lns_only_last=True)
        elif v.startswith("sent+ln-"):
            s = correct(restored, sids, smask, ln=v[len("sent+ln-") :])
        c = time.time() - t
        m, p5 = judge(s)
        print(
            json.dumps(
                {
                    "rate": rate,
                    "n": n,
                    "variant": v,
                    "mean": round(m, 5),
                    "p5": round(p5, 5),
                    "s": round(c, 1),
                }
            ),
            flush=True,
        )
