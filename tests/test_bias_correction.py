"""Data-free bias correction (`weightdna.evaluate.correction`) and the encoder's hook that
codes corrected tensors after the weights (`compress_model(adjust=...)`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

from weightdna.codec import read_dna_file
from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target
from weightdna.weights import ModelWeights


def small_model() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"lin.weight": torch.randn(32, 64, generator=generator),
            "lin.bias": torch.randn(32, generator=generator) * 0.1}


def test_adjust_recodes_tensors_after_the_weights(tmp_path: Path) -> None:
    tensors = small_model()
    weights = ModelWeights.from_tensors(tensors)
    target = Target("bits_per_weight", 2.0)
    seen = {}

    def adjust(restored):
        seen.update({name: restored[name].clone() for name in restored})
        return {"lin.bias": tensors["lin.bias"] + restored["lin.weight"].sum(1)}

    plain = compress_model(weights, tmp_path / "plain.dna", target)
    moved = compress_model(weights, tmp_path / "moved.dna", target, adjust=adjust)
    assert moved.bits_per_weight <= 2.0
    before, after = read_dna_file(tmp_path / "plain.dna"), read_dna_file(tmp_path / "moved.dna")
    # the weights are coded as without adjust; adjust saw them as they decode
    assert torch.equal(before.tensor("lin.weight"), after.tensor("lin.weight"))
    assert torch.equal(seen["lin.weight"], after.tensor("lin.weight"))
    # the bias is coded from its new value, by its role (within 2⁻¹⁰ of its max |b|)
    wanted = tensors["lin.bias"] + after.tensor("lin.weight").sum(1)
    error = (after.tensor("lin.bias") - wanted).abs().max()
    assert 0 < error <= wanted.abs().max() * 2.0**-10
    assert not torch.allclose(before.tensor("lin.bias"), after.tensor("lin.bias"))
    assert plain.file_bytes > 0
    # only tensors coded by role may change
    with pytest.raises(ValueError, match="lin.weight"):
        compress_model(weights, tmp_path / "x.dna", target, overwrite=True,
                       adjust=lambda restored: {"lin.weight": restored["lin.weight"] * 2})


def test_an_adjustment_that_breaks_the_size_target_goes_back(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = {"lin.weight": torch.randn(32, 64, generator=generator),
               "lin.bias": torch.zeros(32)}
    weights = ModelWeights.from_tensors(tensors)
    target = Target("bits_per_weight", 2.0)
    noisy = torch.randn(32, generator=generator)
    plain = compress_model(weights, tmp_path / "plain.dna", target)
    # a zero bias costs almost nothing; 32 random values do not fit in what is left
    moved = compress_model(weights, tmp_path / "moved.dna", target,
                           adjust=lambda restored: {"lin.bias": noisy})
    assert plain.bits_per_weight <= moved.bits_per_weight <= 2.0
    before, after = read_dna_file(tmp_path / "plain.dna"), read_dna_file(tmp_path / "moved.dna")
    assert torch.equal(after.tensor("lin.bias"), before.tensor("lin.bias"))
    assert moved.file_bytes == plain.file_bytes


def test_an_adjustment_whose_sections_shrink_but_misses_the_target_goes_back() -> None:
    """`_recode_adjusted`: where the file misses its size target though no adjusted
    tensor's sections grew (the header grew: a step written in more digits), every
    adjusted tensor goes back to its first coding (a GPTQ-coded angle classifier at 3.05
    bits per weight was refused at 3.051 before)."""
    from weightdna.codec.compress import _Coder, _recode_adjusted
    from weightdna.codec.roles import encode_bounded

    generator = torch.Generator().manual_seed(0)
    tensors = {"lin.weight": torch.randn(32, 64, generator=generator),
               "lin.bias": torch.randn(32, generator=generator)}
    weights = ModelWeights.from_tensors(tensors)
    coder = _Coder(weights)
    coder.add("lin.bias", encode_bounded(tensors["lin.bias"], "lin.bias"))
    first = coder.coded["lin.bias"]
    # zeros cost fewer bytes than the first coding: no tensor grew
    _recode_adjusted(weights, coder, {"lin.bias": torch.zeros(32)},
                     lambda: coder.coded["lin.bias"] is first)
    assert coder.coded["lin.bias"] is first


@requires_minilm
def test_bias_correction_brings_minilm_back() -> None:
    """MiniLM with every weight matrix rounded to a coarse step: the corrected biases
    (8 random sequences, no data) bring the bundled sentences' embeddings closer; on
    the original weights they are the original biases."""
    from weightdna.bert import BertConfig, BertEncoder, load_tokenizer, random_token_batch
    from weightdna.evaluate import load_sentences
    from weightdna.evaluate.correction import corrected_biases
    from weightdna.weights import load_weights

    torch.set_num_threads(1)
    original = load_weights(MINILM).state_dict()
    config = BertConfig.from_json(MINILM / "config.json")
    ids, mask = random_token_batch(MINILM, config.vocab_size, 8, 24,
                                   np.random.default_rng(0), prior=True)
    same = corrected_biases(original, original, config, ids, mask)
    assert len(same) == 1 + 7 * config.num_hidden_layers
    for name, value in same.items():
        torch.testing.assert_close(value, original[name], atol=1e-5, rtol=0)

    restored = dict(original)
    for name, value in original.items():
        if value.dim() == 2 and "embeddings" not in name:
            step = 0.75 * float(value.pow(2).mean().sqrt())
            restored[name] = torch.round(value / step) * step
    fixed = {**restored, **corrected_biases(original, restored, config, ids, mask)}
    sentences = load_sentences()[::27]
    tokens, attention = load_tokenizer(MINILM)(sentences)

    reference = BertEncoder(original, config).encode(tokens, attention)

    def loss(state) -> float:
        restored_ = BertEncoder(state, config).encode(tokens, attention)
        return float(1 - (reference * restored_).sum(1).mean())

    before, after = loss(restored), loss(fixed)
    assert after < 0.9 * before, (before, after)  # measured 0.155 → 0.119


def test_bias_correction_for_bert_models_only(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from weightdna.evaluate.correction import bias_correction_for

    path = tmp_path / "m.safetensors"
    save_file(small_model(), str(path))
    assert bias_correction_for("synthetic", path, list(small_model())) is None
    if MINILM is not None:
        names = load_names(MINILM)
        assert bias_correction_for("none", MINILM, names) is None
        assert callable(bias_correction_for("synthetic", MINILM, names))


def load_names(folder: Path) -> list[str]:
    from weightdna.weights import load_weights

    return load_weights(folder).names
