"""`evaluate` on any model: two callables and their inputs (the Python API), any Hugging
Face folder (here GPT-2, built with transformers' own config class, and a BERT with a
classification head), any ONNX file; anything else is an error that lists what is
supported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

import weightdna
from weightdna.cli import main
from weightdna.errors import InvalidInputError
from weightdna.evaluate.compare import compare_outputs


def test_compare_outputs_of_two_callables() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 4, generator=generator)
    inputs = [torch.randn(8, 16, generator=generator) for _ in range(3)]
    same = compare_outputs(lambda x: {"logits": x @ weight}, lambda x: {"logits": x @ weight},
                           inputs)
    assert same["worst_cosine"] == 1.0
    assert same["outputs"]["logits"] == {"samples": 24, "mean_cosine": 1.0, "min_cosine": 1.0,
                                         "relative_error": 0.0, "argmax_agreement": 1.0}
    noisy = weight + 0.5 * torch.randn(16, 4, generator=generator)
    changed = compare_outputs(lambda x: (x @ weight, x.sum(1)),
                              lambda x: (x @ noisy, x.sum(1)), inputs, logits=["output0"])
    figures = changed["outputs"]["output0"]
    assert 0.5 < figures["mean_cosine"] < 1.0 and 0.05 < figures["relative_error"] < 1.0
    assert 0.3 < figures["argmax_agreement"] < 1.0
    assert changed["outputs"]["output1"]["relative_error"] == 0.0
    with pytest.raises(InvalidInputError, match="different outputs"):
        compare_outputs(lambda x: {"a": x}, lambda x: {"b": x}, inputs)



def test_one_value_per_sample_is_compared_as_one_vector() -> None:
    # A probability per sample, fed one sample at a time (as `weightdna evaluate` feeds
    # Silero VAD): each sample's own cosine would be its sign, 1 for any two positive
    # values; the column of all of them is compared instead.
    batches = [np.array([[p]]) for p in (0.1, 0.2, 0.3)]
    result = compare_outputs(lambda x: x, lambda x: 0.4 - x, batches)
    figures = result["outputs"]["output"]
    assert figures["samples"] == 3 and "argmax_agreement" not in figures
    assert abs(figures["min_cosine"] - 0.10 / 0.14) < 1e-9
    same = compare_outputs(lambda x: x, lambda x: x, batches)
    assert same["worst_cosine"] == 1.0

def _json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_any_onnx_file(tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from weightdna.evaluate.panel import BatchNormCNN, export_onnx

    torch.manual_seed(0)
    source = export_onnx(BatchNormCNN().eval(), tmp_path / "cnn.onnx")
    weightdna.compress(source, tmp_path / "m.dna", bits_per_weight=8)
    restored = weightdna.decompress(tmp_path / "m.dna", tmp_path / "r.onnx")
    seeded = _json(capsys, ["evaluate", str(source), str(restored)])
    assert seeded["task"] == "onnx" and list(seeded["outputs"]) == ["logits"]
    logits = seeded["outputs"]["logits"]
    assert logits["samples"] == 8 and 0.999 <= seeded["worst_cosine"] < 1.0
    assert 0 < logits["relative_error"] < 0.05 and "argmax_agreement" in logits
    # The .dna file itself: its weights put into the original graph give the same outputs.
    direct = _json(capsys, ["evaluate", str(source), str(tmp_path / "m.dna")])
    assert direct["outputs"] == seeded["outputs"]
    batch = tmp_path / "batch.npz"
    np.savez(batch, image=np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32))
    given = _json(capsys, ["evaluate", str(source), str(restored), "--inputs", str(batch)])
    assert given["outputs"]["logits"]["samples"] == 5
    np.savez(batch, other=np.zeros(3))
    assert main(["evaluate", str(source), str(restored), "--inputs", str(batch)]) == 1
    assert "the model's inputs are" in " ".join(capsys.readouterr().err.split())


def _hf_folder(folder: Path, model) -> Path:  # noqa: ANN001
    """``model`` saved with MiniLM's tokenizer beside it."""
    folder.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(MINILM / name, folder / name)
    model.save_pretrained(folder)
    return folder


@requires_minilm
def test_any_hugging_face_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=30522, n_embd=64, n_layer=2, n_head=2, n_positions=128))
    source = _hf_folder(tmp_path / "gpt2", gpt2)
    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sits outside.\nA man is playing a guitar.\nStocks fell.\n")
    argv = ["--texts", str(texts)]
    itself = _json(capsys, ["evaluate", str(source), str(source), *argv])
    assert itself["task"] == "hf" and itself["model"] == "GPT2LMHeadModel"
    assert itself["worst_cosine"] == 1.0
    assert itself["outputs"]["logits"]["argmax_agreement"] == 1.0

    weightdna.compress(source, tmp_path / "g.dna", bits_per_weight=3,
                       representations=["quantized"])
    out = weightdna.decompress(tmp_path / "g.dna", f"{tmp_path / 'restored'}/")
    restored = _json(capsys, ["evaluate", str(source), str(out), *argv])
    hidden = restored["outputs"]["last_hidden_state"]
    assert hidden["samples"] == itself["outputs"]["last_hidden_state"]["samples"] > 10
    assert 0.5 < hidden["mean_cosine"] < 1.0 and hidden["relative_error"] > 0
    assert 0 < restored["outputs"]["logits"]["argmax_agreement"] <= 1.0
    direct = _json(capsys, ["evaluate", str(source), str(tmp_path / "g.dna"), *argv])
    for name, figures in restored["outputs"].items():  # the .dna file, loaded into the model
        assert direct["outputs"][name] == pytest.approx(figures)


@requires_minilm
def test_a_classification_head(tmp_path: Path, capsys, monkeypatch) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=5))
    source = _hf_folder(tmp_path / "classifier", model)
    weightdna.compress(source, tmp_path / "c.dna", bits_per_weight=4,
                       representations=["quantized"])
    result = _json(capsys, ["evaluate", str(source), str(tmp_path / "c.dna")])
    assert result["task"] == "hf" and result["model"] == "BertForSequenceClassification"
    logits = result["outputs"]["logits"]
    assert logits["samples"] == 540 and 0.5 < logits["argmax_agreement"] <= 1.0


def test_other_models_are_refused_with_the_list(tmp_path: Path, capsys) -> None:
    weightdna.weights.save_weights({"w": torch.zeros(2, 2)}, tmp_path / "plain.safetensors")
    assert main(["evaluate", str(tmp_path / "plain.safetensors"),
                 str(tmp_path / "plain.safetensors")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Hugging Face model folder" in err and "ONNX file" in err and "Traceback" not in err


def test_a_dna_file_is_a_restored_model_for_every_task(tmp_path: Path, capsys) -> None:
    from weightdna.train import train_digits_mlp

    path = train_digits_mlp(epochs=2).model.save(tmp_path / "mlp.safetensors")
    weightdna.compress(path, tmp_path / "mlp.dna", lossless=True)
    result = _json(capsys, ["evaluate", str(path), str(tmp_path / "mlp.dna")])
    assert result["task"] == "digits" and result["agreement"] == 1.0
