"""Probes behind the choice of the default objective (issue: keep unseen networks working).

    .venv/bin/python bench/probes.py blame [--rate 3]     # MiniLM: what loses the cosine
    .venv/bin/python bench/probes.py outliers                  # exact sparse outliers: do they pay?
    .venv/bin/python bench/probes.py floor [--seeds 0,1,2,3,4,5] [--floors none,7,9]
    .venv/bin/python bench/probes.py bias [--rate 3]           # data-free bias correction on MiniLM
    .venv/bin/python bench/probes.py rows [--rate 3]           # word-embedding rows by token counts
    .venv/bin/python bench/probes.py tokens                    # a token's error by its prior rank

Each prints what BENCHMARKS.md ("Function on the model panel") quotes. None of them changes
the codec: ``floor`` reweighs tensors through ``compress_model``'s ``sensitivity``, ``bias``
edits the restored biases in memory, ``rows`` wraps the objective in this process only.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target, floored_row_ms
from weightdna.weights import load_weights, minilm_path

State = dict[str, torch.Tensor]


def restored_at(path: Path, rate: float, workdir: Path, **kwargs) -> tuple[State, object]:
    """(restored state dict, compression report) of the model at ``path`` at ``rate``."""
    report = compress_model(load_weights(path), workdir / "m.dna", Target("bits_per_weight", rate),
                            overwrite=True, **kwargs)
    decompress_model(workdir / "m.dna", workdir / "r.safetensors", overwrite=True)
    return load_weights(workdir / "r.safetensors").state_dict(), report


def minilm_judge():
    from weightdna.bert import BertConfig, BertEncoder, load_tokenizer
    from weightdna.evaluate import compare_embeddings, embed_sentences, load_sentences

    folder = minilm_path()
    config, tokenizer = BertConfig.from_json(folder / "config.json"), load_tokenizer(folder)
    sentences = load_sentences()
    original = load_weights(folder).state_dict()
    reference = embed_sentences(BertEncoder(original, config), sentences, tokenizer)

    def judge(state: State) -> float:
        restored = embed_sentences(BertEncoder(state, config), sentences, tokenizer)
        return compare_embeddings(reference, restored)["mean_cosine"]

    return folder, original, judge


GROUPS = {
    "word embeddings": lambda n: "word_embeddings" in n,
    "position, type": lambda n: "position_emb" in n or "token_type" in n,
    "query": lambda n: n.endswith("query.weight"),
    "key": lambda n: n.endswith("key.weight"),
    "value": lambda n: n.endswith("value.weight"),
    "attention output": lambda n: n.endswith("attention.output.dense.weight"),
    "FFN in": lambda n: n.endswith("intermediate.dense.weight"),
    "FFN out": lambda n: n.endswith("output.dense.weight") and "attention" not in n,
}


def blame(rate: float) -> None:
    """MiniLM at ``rate``: the loss of mean cosine with one group of tensors restored and
    every other tensor original."""
    folder, original, judge = minilm_judge()
    with tempfile.TemporaryDirectory() as tmp:
        restored, report = restored_at(folder, rate, Path(tmp))
    by_name = {t.name: t for t in report.tensors}
    print(f"all tensors restored: loss {1 - judge(restored):.4f}")
    print("| tensors | share of weights | bits/weight | SNR dB (min–max) | loss of mean cosine |")
    print("|---|---:|---:|---:|---:|")
    total = sum(v.numel() for v in original.values())
    for group, member in GROUPS.items():
        names = [n for n in original if member(n)]
        state = dict(original)
        state.update({n: restored[n] for n in names})
        numel = sum(original[n].numel() for n in names)
        bits = 8 * sum(by_name[n].bytes for n in names) / numel
        snrs = [by_name[n].snr_db for n in names]
        print(f"| {group} | {numel / total:.3f} | {bits:.2f} | {min(snrs):.1f}–{max(snrs):.1f} | "
              f"{1 - judge(state):.4f} |", flush=True)


def outliers() -> None:
    """MiniLM's most heavy-tailed matrices coded by the trellis at three steps, with the
    largest 0.1% and 0.5% of |w| taken out and kept exactly (fp16, plus an ideal gap code
    of log₂(N/k) + 1.5 bits per position), against all of it coded."""
    from weightdna.codec.tensor import decode_tensor, encode_tensor

    weights = load_weights(minilm_path())
    names = ["encoder.layer.2.output.dense.weight", "encoder.layer.3.output.dense.weight",
             "encoder.layer.0.attention.self.query.weight"]
    for name in names:
        a = weights.numpy(name).astype(np.float32)
        f, n = a.astype(np.float64), a.size
        energy = float((f * f).sum())
        rms = math.sqrt(energy / n)
        kurtosis = float(np.mean(f**4) / np.mean(f**2) ** 2)
        print(f"{name} (kurtosis {kurtosis:.0f}): bits/weight, SNR dB at steps rms/2, /4, /8")
        for share in (0.0, 0.001, 0.005):
            k = int(share * n)
            index = np.argpartition(np.abs(a).ravel(), -k)[-k:] if k else np.array([], int)
            bulk = a.copy()
            bulk.ravel()[index] = 0.0
            side = k * (16 + math.log2(n / max(k, 1)) + 1.5)
            points = []
            for fraction in (0.5, 0.25, 0.125):
                entry, sections = encode_tensor(torch.from_numpy(bulk), step=fraction * rms,
                                                quantizer="trellis")
                r = decode_tensor(entry, sections).numpy().astype(np.float64)
                r.ravel()[index] = a.ravel()[index].astype(np.float16)
                bits = 8 * sum(len(b) for b in sections.values()) + side
                snr = 10 * math.log10(energy / float(((f - r) ** 2).sum()))
                points.append(f"{bits / n:.3f} b, {snr:.2f} dB")
            print(f"  exact outliers {share:.1%}: " + " | ".join(points), flush=True)


def _layer_weights(path: Path) -> dict[str, float]:
    """Each tensor's weight under the "layer" objective, as a sensitivity: mean(1/ms_r)/N."""
    from weightdna.codec.quantize import as_rows

    weights = load_weights(path)
    out = {}
    for info in weights.infos:
        a = weights.numpy(info.name).astype(np.float64)
        rows = as_rows(a) if a.ndim >= 2 else a.reshape(1, -1)
        ms = (rows * rows).mean(axis=1)
        if not ms.mean() > 0:
            out[info.name] = 1.0
            continue
        ms = floored_row_ms(ms, float(ms.mean()))
        out[info.name] = float((1.0 / ms).mean()) / info.numel
    return out


def floor(seeds: list[int], floors: list[float | None], rate: float, kind: str) -> None:
    """The digits models at ``rate`` with a floor on each weight tensor's SNR: a tensor
    below it has its weight raised by the deficit and the model is coded again (4 rounds)."""
    from weightdna.evaluate import accuracy_of_restored
    from weightdna.train import train_digits_cnn, train_digits_mlp

    changes: dict[str, list[float]] = {str(f): [] for f in floors}
    for seed in seeds:
        run = (train_digits_cnn if kind == "cnn" else train_digits_mlp)(seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            path = run.model.save(workdir / "m.safetensors")
            base = accuracy_of_restored(run.model, load_weights(path).state_dict())
            base = base["restored_accuracy"]
            for level in floors:
                weights = _layer_weights(path)
                for _ in range(4 if level is not None else 1):
                    restored, report = restored_at(path, rate, workdir, sensitivity=weights)
                    low = {t.name: t.snr_db for t in report.tensors
                           if t.role in ("matrix", "conv") and level is not None
                           and t.snr_db < level}
                    if not low:
                        break
                    for name, snr in low.items():
                        weights[name] *= 10 ** ((level - snr) / 10)
                accuracy = accuracy_of_restored(run.model, restored)["restored_accuracy"]
                changes[str(level)].append(100 * (accuracy - base))
                snrs = [f"{t.snr_db:.1f}" for t in report.tensors if t.role in ("matrix", "conv")]
                print(f"{kind} seed {seed} floor {level}: {100 * (accuracy - base):+.2f} points, "
                      f"weight SNRs {', '.join(snrs)} dB", flush=True)
    for level, values in changes.items():
        print(f"{kind} at {rate:g} bits/weight, floor {level}: mean {np.mean(values):+.2f}, "
              f"worst {np.min(values):+.2f} points")


def bias(rate: float) -> None:
    """MiniLM at ``rate`` with each linear layer's bias corrected for the mean shift of its
    outputs, b − (Ŵ − W)·E[x] (data-free bias correction), E[x] measured on 64 bundled
    sentences or on 64 random token sequences."""
    from weightdna.bert import BertConfig, BertEncoder, load_tokenizer, random_token_batch
    from weightdna.evaluate.sensitivity import _calibration_sentences

    folder, original, judge = minilm_judge()
    config = BertConfig.from_json(folder / "config.json")

    def input_means(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        encoder = BertEncoder(original, config)
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        linear = encoder._linear
        keep = torch.as_tensor(mask).bool()

        def record(x: torch.Tensor, name: str) -> torch.Tensor:
            rows = x[keep].double()
            sums[name] = sums.get(name, 0) + rows.sum(0).numpy()
            counts[name] = counts.get(name, 0) + rows.shape[0]
            return linear(x, name)

        encoder._linear = record
        with torch.no_grad():
            hidden = encoder.embed(torch.as_tensor(ids))
            for i in range(config.num_hidden_layers):
                hidden = encoder.layer(i, hidden, torch.as_tensor(mask))
        return {name: sums[name] / counts[name] for name in sums}

    def corrected(restored: State, means: dict[str, np.ndarray]) -> State:
        out = dict(restored)
        for name, mean in means.items():
            shift = (restored[f"{name}.weight"].double() - original[f"{name}.weight"].double())
            out[f"{name}.bias"] = (restored[f"{name}.bias"].double()
                                   - shift @ torch.as_tensor(mean)).float()
        return out

    real = input_means(*load_tokenizer(folder)(_calibration_sentences()))
    synthetic = input_means(*random_token_batch(folder, config.vocab_size, 64, 24,
                                                np.random.default_rng(0)))
    with tempfile.TemporaryDirectory() as tmp:
        restored, _ = restored_at(folder, rate, Path(tmp))
    print(f"MiniLM at {rate:g} bits/weight, mean cosine: plain {judge(restored):.4f}, "
          f"bias-corrected on sentences {judge(corrected(restored, real)):.4f}, "
          f"on random tokens {judge(corrected(restored, synthetic)):.4f}")


def rows(rate: float) -> None:
    """MiniLM at ``rate`` with the word embedding's rows weighed by how often their token
    occurs, on top of "layer": the bundled sentences' own counts (+½: an oracle, the judge's
    data) or a Zipf prior on the vocabulary's order (BERT's WordPiece ids run roughly from
    frequent to rare; 1/(id + 10), [unusedN] rows at the least)."""
    import importlib

    from weightdna.bert import load_tokenizer
    from weightdna.codec import ratecontrol
    from weightdna.evaluate import load_sentences

    compress = importlib.import_module("weightdna.codec.compress")
    folder, original, judge = minilm_judge()
    ids, mask = load_tokenizer(folder)(load_sentences())
    name = next(n for n in original if n.endswith("word_embeddings.weight"))
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    size = original[name].shape[0]
    counts = np.bincount(np.asarray(ids)[np.asarray(mask) == 1], minlength=size) + 0.5
    zipf = 1.0 / (np.arange(size) + 10.0)
    zipf[[i for i, w in enumerate(vocab[:size]) if w.startswith("[unused")]] = zipf.min()
    plain = ratecontrol.apply_objective

    def weighed(importance: np.ndarray):
        def apply(tc, objective: str, measured: bool = False) -> None:
            plain(tc, objective, measured)
            if tc.info.name == name:
                ms = floored_row_ms(tc.row_ms, tc.signal / tc.info.numel)
                weight = importance / importance.mean() / ms
                tc.row_scale = np.sqrt(float(weight.mean()) / weight)
        return apply

    for label, importance in (("sentence counts (oracle)", counts), ("Zipf by id", zipf)):
        compress.apply_objective = weighed(importance)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                restored, _ = restored_at(folder, rate, Path(tmp))
        finally:
            compress.apply_objective = plain
        print(f"MiniLM at {rate:g} bits/weight, word-embedding rows by {label}: "
              f"mean cosine {judge(restored):.4f}", flush=True)


def held_out_texts(count: int = 300) -> list[str]:
    """Lines of prose that are not the judge's: the long descriptions in the METADATA of the
    Python packages installed beside weightdna (so they differ between environments)."""
    import random
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    lines = []
    skip = ("Requires", "Classifier", "Provides", "Metadata", "License", "Home", "Author",
            "Project", "Keywords", "Platform", "Download", "Summary", "Version", "Name")
    for path in sorted(site.glob("*.dist-info/METADATA")):
        text = path.read_text(encoding="utf-8", errors="ignore")
        lines += [line.strip() for line in text.splitlines()
                  if len(line.split()) >= 6 and line[:1].isalpha() and not line.startswith(skip)]
    random.Random(1).shuffle(lines)
    return lines[:count]


def tokens() -> None:
    """MiniLM on held-out texts (`held_out_texts`): noise at 10 dB below each row's mean
    square on the word-embedding rows of the tokens in one band of `token_prior` ranks that
    the texts hold, every other weight original; the loss of mean cosine per occurrence
    and per occurrence-weighted squared error. Flat per occurrence would make a token's
    weight its frequency; rising with rank, less than that."""
    from weightdna.bert import (
        BertConfig,
        BertEncoder,
        load_tokenizer,
        read_vocabulary,
        token_prior,
    )
    from weightdna.evaluate import compare_embeddings, embed_sentences

    folder = minilm_path()
    config, tokenizer = BertConfig.from_json(folder / "config.json"), load_tokenizer(folder)
    texts = held_out_texts()
    state = load_weights(folder).state_dict()
    name = next(n for n in state if n.endswith("word_embeddings.weight"))
    table = state[name].double()
    reference = embed_sentences(BertEncoder(state, config), texts, tokenizer)
    ids, mask = tokenizer(texts)
    counts = np.bincount(np.asarray(ids)[np.asarray(mask) == 1],
                         minlength=table.shape[0]).astype(np.float64)
    prior = token_prior(read_vocabulary(folder, table.shape[0]))
    rank = np.empty(prior.size)
    rank[np.argsort(-prior, kind="stable")] = np.arange(1, prior.size + 1)
    ms = (table * table).mean(dim=1).numpy()
    generator = torch.Generator().manual_seed(0)
    print(f"{len(texts)} held-out texts, {int(counts.sum())} tokens")
    print("| prior rank | rows the texts hold | occurrences | loss of mean cosine | "
          "loss per occurrence | loss per occurrence-weighted squared error |")
    print("|---|---:|---:|---:|---:|---:|")
    for low, high in ((1, 3), (3, 30), (30, 300), (300, 3000), (3000, 10000), (10000, 40000)):
        band = (rank >= low) & (rank < high) & (counts > 0)
        noise = torch.randn(table.shape, generator=generator, dtype=torch.float64)
        noise *= torch.from_numpy(np.sqrt(ms * 0.1))[:, None]
        noise[~torch.from_numpy(band)] = 0
        restored = dict(state)
        restored[name] = (table + noise).float()
        loss = 1 - compare_embeddings(reference, embed_sentences(
            BertEncoder(restored, config), texts, tokenizer))["mean_cosine"]
        weighted = float((counts[band] * ms[band] * 0.1 * table.shape[1]).sum())
        print(f"| {low}–{high - 1} | {int(band.sum())} | {int(counts[band].sum())} | "
              f"{loss:.5f} | {loss / counts[band].sum():.3g} | {loss / weighted:.3g} |",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=("blame", "outliers", "floor", "bias", "rows",
                                          "tokens"))
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--seeds", default="0,1,2,3,4,5")
    parser.add_argument("--floors", default="none,7,9")
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.probe == "blame":
        blame(args.rate or 3.0)
    elif args.probe == "outliers":
        outliers()
    elif args.probe == "floor":
        floors = [None if f == "none" else float(f) for f in args.floors.split(",")]
        floor([int(s) for s in args.seeds.split(",")], floors, args.rate or 2.0, args.model)
    elif args.probe == "bias":
        bias(args.rate or 3.0)
    elif args.probe == "tokens":
        tokens()
    else:
        rows(args.rate or 3.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
