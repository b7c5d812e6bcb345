"""Calibration (GPTQ's H = XᵀX/N per weight matrix) of any Hugging Face transformer: forward
hooks on the model transformers itself runs, on the bundled sentences or a text file,
tokenized by the folder's own tokenizer. On MiniLM it gives the H of our own BERT forward;
on a Llama built with transformers' config class it lowers the output error of a compress
at a size; GPT-2's Conv1D layers and a tied LM head are named, not calibrated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

import weightdna
from weightdna.cli import main
from weightdna.errors import InvalidInputError, ModelFileError
from weightdna.evaluate.calibration import (
    HuggingFaceModel,
    calibration_subject,
    hessians_for_file,
    hf_hessians,
    sensitivity_for_file,
)
from weightdna.evaluate.compare import evaluate_hf
from weightdna.evaluate.sentences import load_sentences
from weightdna.train import build_digits_mlp
from weightdna.weights import load_weights

TEXTS = ["The cat sits outside.", "A man is playing a guitar.", "Stocks fell sharply today.",
         "The new movie is awesome.", "A woman is slicing an onion.",
         "Rain is expected over the weekend.", "He forgot his keys at the office.",
         "Two dogs run across the snowy field."]


@pytest.fixture
def transformers(monkeypatch):  # noqa: ANN201
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("transformers")


def _vocabulary() -> dict[str, int]:
    """A word-level vocabulary of the bundled sentences and TEXTS: a real tokenizer of
    ~1,600 tokens, so that the models' embeddings stay small."""
    text = " ".join(load_sentences() + TEXTS).lower()
    words = sorted(set(re.findall(r"\w+|[^\w\s]", text)))
    return {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}


VOCABULARY = _vocabulary()


def _hf_folder(folder: Path, model, tokenizer: bool = True) -> Path:  # noqa: ANN001
    """``model`` saved with a tokenizer of VOCABULARY beside it (transformers' own
    BertTokenizer, saved by save_pretrained)."""
    import transformers

    model.save_pretrained(folder)
    if tokenizer:
        transformers.BertTokenizer(vocab=VOCABULARY).save_pretrained(folder)
    return folder


@requires_minilm
def test_minilm_generic_path_gives_the_bert_path_hessians(transformers) -> None:
    """The same H to float tolerance for every Linear both run; transformers also runs
    BertModel's pooler, which our BERT forward (sentence embeddings) skips."""
    ours = hessians_for_file(MINILM, TEXTS[:4])  # MiniLM on texts: our own BERT forward
    generic = hf_hessians(HuggingFaceModel(MINILM, MINILM), TEXTS[:4])
    assert set(generic) - set(ours) == {"pooler.dense.weight"} and len(ours) == 36
    for name in ("encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.2.attention.output.dense.weight",
                 "encoder.layer.5.intermediate.dense.weight",
                 "encoder.layer.5.output.dense.weight"):
        assert generic[name].shape == ours[name].shape
        np.testing.assert_allclose(generic[name], ours[name], rtol=1e-4,
                                   atol=1e-5 * np.abs(ours[name]).max())
    # MiniLM itself (model_type bert) stays on our own forward, which needs no transformers.
    assert isinstance(calibration_subject(MINILM), tuple)


def _llama(transformers, folder: Path) -> Path:  # noqa: ANN001
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(VOCABULARY), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=False))
    return _hf_folder(folder, model)


def test_llama_calibrates_end_to_end(tmp_path: Path, capsys, transformers) -> None:
    source = _llama(transformers, tmp_path / "llama")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n\n")
    subject = calibration_subject(source)
    assert isinstance(subject, HuggingFaceModel)
    found = hessians_for_file(source, texts)
    weights = load_weights(source)
    linear = {n for n in weights.names if n.endswith(("proj.weight", "lm_head.weight"))}
    assert set(found) == linear and len(linear) == 15
    for name, h in found.items():
        columns = weights.info(name).shape[1]
        assert h.shape == (columns, columns) and np.allclose(h, h.T)
        assert np.all(np.linalg.eigvalsh(h) > -1e-9 * np.abs(h).max())
    # the first layer's query reads the RMS-normed embeddings of the real tokens: its H is
    # their second moment, computed here without hooks
    model = transformers.LlamaForCausalLM.from_pretrained(str(source)).eval()
    batch = transformers.AutoTokenizer.from_pretrained(str(source))(
        TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        embedded = model.model.embed_tokens(batch["input_ids"])
        x = model.model.layers[0].input_layernorm(embedded)[batch["attention_mask"].bool()]
    x = x.double().numpy()
    assert x.shape[0] > 64
    np.testing.assert_allclose(found["model.layers.0.self_attn.q_proj.weight"],
                               x.T @ x / x.shape[0], rtol=1e-5, atol=1e-9)

    errors = {}
    for how in ("none", "auto"):
        out = tmp_path / f"{len(errors)}.dna"
        capsys.readouterr()
        assert main(["compress", str(source), "-o", str(out), "--bits-per-weight", "3",
                     "--representations", "quantized", "--calibration", how, "--check",
                     "none", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["bits_per_weight"] <= 3
        result = evaluate_hf(source, out, TEXTS)
        errors[how] = result["outputs"]["logits"]["relative_error"]
    # GPTQ on the bundled sentences: at the same size, the logits on other texts move less
    assert errors["auto"] < errors["none"]


def test_gpt2_conv1d_and_tied_heads_are_named_not_calibrated(tmp_path: Path, capsys,
                                                              transformers) -> None:
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(VOCABULARY), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    source = _hf_folder(tmp_path / "gpt2", gpt2)
    with pytest.raises(InvalidInputError) as caught:
        hessians_for_file(source)
    message = " ".join(str(caught.value).split())
    assert "4 Conv1D layers" in message and "(in, out)" in message
    assert "tied to another tensor" in message and "lm_head.weight" in message
    capsys.readouterr()
    assert main(["compress", str(source), "-o", str(tmp_path / "g.dna"), "--bits-per-weight",
                 "3", "--calibration", "auto"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Conv1D" in err and "without --calibration" in err and "Traceback" not in err
    assert not (tmp_path / "g.dna").exists()


def test_a_classifier_with_its_head(tmp_path: Path, transformers) -> None:
    """A BERT with a classification head but another activation than our forward's: run by
    transformers, its weights named with the checkpoint's ``bert.`` prefix, the head
    included; its unread pooler input of the padding is not counted."""
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=len(VOCABULARY), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=3, hidden_act="gelu_new"))
    source = _hf_folder(tmp_path / "classifier", model)
    found = hessians_for_file(source, TEXTS)
    assert "classifier.weight" in found and "bert.pooler.dense.weight" in found
    assert "bert.encoder.layer.0.attention.self.query.weight" in found
    assert found["classifier.weight"].shape == (32, 32)
    assert set(found) <= set(load_weights(source).names)


def test_calibration_file_and_tokenizer_errors(tmp_path: Path, capsys, transformers) -> None:
    source = _llama(transformers, tmp_path / "llama")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x80" * 8)
    for bad, words in ((empty, "holds no sentences"), (binary, "cannot read"),
                       (tmp_path / "missing.txt", "cannot read"), (tmp_path, "cannot read")):
        with pytest.raises(InvalidInputError, match=words):
            hessians_for_file(source, bad)
        capsys.readouterr()
        assert main(["compress", str(source), "-o", str(tmp_path / "x.dna"),
                     "--bits-per-weight", "3", "--calibration", str(bad)]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "one calibration text per line" in err and "Traceback" not in err
    torch.manual_seed(0)
    bare = _hf_folder(tmp_path / "bare", transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2)), tokenizer=False)
    with pytest.raises(ModelFileError, match="no tokenizer"):
        hessians_for_file(bare)
    assert main(["compress", str(bare), "-o", str(tmp_path / "x.dna"), "--bits-per-weight",
                 "3", "--calibration", "auto"]) == 1
    assert "no tokenizer" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(InvalidInputError, match="holds no sentences"):
        weightdna.compress(source, tmp_path / "x.dna", bits_per_weight=3, calibration=empty)
    with pytest.raises(InvalidInputError, match="--sensitivity none"):
        sensitivity_for_file(source)
    mlp = build_digits_mlp(seed=0, hidden=(8,)).save(tmp_path / "mlp.safetensors")
    with pytest.raises(InvalidInputError, match="digits training images"):
        hessians_for_file(mlp, TEXTS)
    assert not (tmp_path / "x.dna").exists()
