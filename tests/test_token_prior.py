"""A data-free token prior for BERT vocabularies (`weightdna.bert.token_prior`), random tokens
drawn by it, and row weights in the rate control (`compress_model(row_weights=...)`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

from weightdna.bert import (
    PRIOR_CHARACTER_RANK,
    random_token_batch,
    read_vocabulary,
    token_prior,
)
from weightdna.codec import read_dna_file
from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target, apply_objective, tensor_candidates
from weightdna.errors import InvalidInputError
from weightdna.weights import ModelWeights

VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "!", "a", "é",
         "the", "of", "##s", "and", "zebra"]


def test_prior_follows_the_vocabulary_order() -> None:
    p = dict(zip(VOCAB, token_prior(VOCAB), strict=True))
    assert math.isclose(sum(p.values()), 1.0)
    # word pieces by their order, Zipf: rank 1, 2, 3, 4, 5
    assert p["[CLS]"] == p["[SEP]"] == p["the"]
    assert p["the"] / p["of"] == pytest.approx(2.0)
    assert p["the"] / p["zebra"] == pytest.approx(5.0)
    assert p["##s"] > p["and"] > p["zebra"]
    # ASCII characters at PRIOR_CHARACTER_RANK; other characters and the entries text
    # does not hold at the rarest rank (6: after the 5 ranked pieces)
    assert p["!"] == p["a"] == pytest.approx(p["the"] / PRIOR_CHARACTER_RANK)
    for rare in ("é", "[PAD]", "[unused0]", "[UNK]", "[MASK]"):
        assert p[rare] == pytest.approx(p["the"] / 6)
    uniform = token_prior(VOCAB, exponent=0.0)
    np.testing.assert_allclose(uniform, 1 / len(VOCAB))
    with pytest.raises(InvalidInputError):
        token_prior([])
    with pytest.raises(InvalidInputError):
        token_prior(VOCAB, exponent=-1.0)


def test_sampler_draws_by_the_prior(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    uniform, _ = random_token_batch(tmp_path, len(VOCAB), 400, 12, rng)
    weighted, mask = random_token_batch(tmp_path, len(VOCAB), 400, 12, rng, prior=True)
    inner = weighted[:, 1:-1][mask[:, 1:-1] == 1]
    inner = inner[inner != VOCAB.index("[SEP]")]
    counts = np.bincount(inner, minlength=len(VOCAB))
    expected = token_prior(VOCAB)
    drawn = [VOCAB.index(w) for w in VOCAB if not w.startswith("[")]
    expected = expected[drawn] / expected[drawn].sum()
    share = counts[drawn] / counts.sum()
    np.testing.assert_allclose(share, expected, atol=0.02)  # ~3,800 draws
    assert not counts[[VOCAB.index(w) for w in VOCAB if w.startswith("[") and w not in
                       ("[CLS]", "[SEP]")]].any()
    the = VOCAB.index("the")
    assert (weighted == the).sum() > 2 * (uniform == the).sum()


@requires_minilm
def test_minilm_prior_ranks_the_bundled_sentences_tokens() -> None:
    """On MiniLM's real vocabulary the prior puts [CLS], [SEP] and "the" first and agrees
    with the bundled sentences' token counts better than the uniform draw (Spearman > 0.2
    over the tokens text can hold) and better than 1/id."""
    from scipy.stats import spearmanr

    from weightdna.bert import load_tokenizer
    from weightdna.evaluate import load_sentences

    words = read_vocabulary(MINILM)
    prior = token_prior(words)
    top = [words[i] for i in np.argsort(-prior, kind="stable")[:5]]
    assert top[:2] in (["[CLS]", "[SEP]"], ["[SEP]", "[CLS]"]) and top[2:] == ["the", "of",
                                                                             "and"]
    assert prior[words.index("[unused7]")] == prior.min()
    ids, mask = load_tokenizer(MINILM, fast=False)(load_sentences()[:200])
    counts = np.bincount(ids[mask == 1], minlength=len(words))
    text = [i for i, w in enumerate(words) if not w.startswith("[unused")]
    ours = spearmanr(prior[text], counts[text]).correlation
    by_id = spearmanr(-np.arange(len(words))[text], counts[text]).correlation
    assert ours > 0.2 and ours > by_id


def embedding_like(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"emb.weight": torch.randn(256, 64, generator=g) * 0.05,
            "fc.weight": torch.randn(64, 64, generator=g) * 0.1}


def test_apply_objective_row_weights() -> None:
    tensor = embedding_like()["emb.weight"]
    info = ModelWeights.from_tensors({"emb.weight": tensor}).info("emb.weight")
    plain = tensor_candidates(info, tensor)
    apply_objective(plain, "layer")
    weighted = tensor_candidates(info, tensor)
    row_weight = np.where(np.arange(256) < 32, 100.0, 1.0)
    apply_objective(weighted, "layer", row_weight=row_weight)
    assert weighted.row_scale is not None
    # a heavy row's step is 10× finer than a light row's (ratios of the weights' roots),
    # whatever each row's own mean square: the weights replace the objective's
    # relative-to-the-row weighing (an embedding row's error counts against the sum it is
    # normalised in, not against the row)
    assert weighted.row_ms.max() > 1.5 * weighted.row_ms.min()
    scale = weighted.row_scale
    assert scale[:32].max() / scale[32:].min() == pytest.approx(0.1, rel=1e-6)
    np.testing.assert_allclose(scale[:32], scale[0])
    np.testing.assert_allclose(scale[32:], scale[-1])
    # scale-free; under "mse" the weights alone
    again = tensor_candidates(info, tensor)
    apply_objective(again, "layer", row_weight=row_weight * 7)
    np.testing.assert_allclose(again.row_scale, weighted.row_scale)
    np.testing.assert_allclose(again.sensitivity, weighted.sensitivity)
    mse = tensor_candidates(info, tensor)
    apply_objective(mse, "mse", row_weight=row_weight)
    assert mse.sensitivity == 1.0
    np.testing.assert_allclose(mse.row_scale[:32] / mse.row_scale[-1], 0.1)
    apply_objective(mse, "mse")
    assert mse.row_scale is None


def test_compress_with_row_weights(tmp_path: Path) -> None:
    """The heavy rows come back closer than without weights, the light ones less close; the
    size target still holds. Bad row weights are refused."""
    tensors = embedding_like()
    weights = ModelWeights.from_tensors(tensors)
    heavy = np.arange(256) < 32
    row_weight = np.where(heavy, 100.0, 1.0)
    errors = {}
    for label, rows in (("plain", None), ("weighted", {"emb.weight": row_weight})):
        out = tmp_path / f"{label}.dna"
        report = compress_model(weights, out, Target("bits_per_weight", 2.0), row_weights=rows)
        assert report.bits_per_weight <= 2.0
        restored = read_dna_file(out).tensor("emb.weight").double()
        error = ((restored - tensors["emb.weight"].double()) ** 2).mean(dim=1).numpy()
        errors[label] = (error[heavy].mean(), error[~heavy].mean())
    assert errors["weighted"][0] < 0.5 * errors["plain"][0]
    assert errors["weighted"][1] > errors["plain"][1]
    target = Target("bits_per_weight", 2.0)
    bad = [({"nope": row_weight}, "lacks"), ({"emb.weight": row_weight[:10]}, "needs"),
           ({"emb.weight": -row_weight}, "> 0"), ({"emb.weight": row_weight * np.nan}, "> 0")]
    for rows, message in bad:
        with pytest.raises(InvalidInputError, match=message):
            compress_model(weights, tmp_path / "x.dna", target, row_weights=rows)
    with pytest.raises(InvalidInputError, match="whole-model"):
        compress_model(weights, tmp_path / "x.dna", Target("snr", 20.0, per_tensor=True),
                       row_weights={"emb.weight": row_weight})
