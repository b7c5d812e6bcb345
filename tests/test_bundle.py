"""A .dna file is the whole model: a Hugging Face folder → .dna → folder that
`transformers.AutoModel` and `sentence_transformers.SentenceTransformer` load offline with
nothing copied by hand, embeddings matching `weightdna evaluate`'s cosine; a sharded source
comes back sharded; files that are not small text go in only when asked for, and each one
left out is named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import MINILM, requires_minilm, tiny_bert_folder

import weightdna
from weightdna.cli import main

transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

SENTENCES = ["A man is playing a guitar.", "The new movie is awesome.",
             "The cat sits outside.", "Stocks fell sharply on Monday.",
             "A woman is slicing an onion.", "Two dogs run through the snow."]


@pytest.fixture(autouse=True)
def offline(monkeypatch) -> None:
    """No hub: everything must come from the folder itself."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _source_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".safetensors"}


def _embed(folder: Path) -> torch.Tensor:
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    return model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)


def _evaluate(original: Path, restored: Path, tmp_path: Path, capsys) -> dict:
    texts = tmp_path / "sentences.txt"
    texts.write_text("\n".join(SENTENCES))
    capsys.readouterr()
    assert main(["evaluate", str(original), str(restored), "--sentences", str(texts),
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@requires_minilm
def test_minilm_folder_round_trip(tmp_path: Path, capsys) -> None:
    """Lossless, so that the test is quick: every weight and file comes back, and the
    folder alone makes the same model in both frameworks."""
    report = weightdna.compress(MINILM, tmp_path / "minilm.dna", lossless=True)
    assert {"config.json", "tokenizer.json", "vocab.txt", "modules.json",
            "1_Pooling/config.json", "sentence_bert_config.json"} <= set(report.files)
    assert report.files_bytes > 0 and report.left_out == ()
    out = tmp_path / "restored"
    assert main(["decompress", str(tmp_path / "minilm.dna"), "-o", f"{out}/"]) == 0
    assert _source_files(out) == _source_files(MINILM)
    restored = load_file(out / "model.safetensors")
    original = load_file(MINILM / "model.safetensors")
    assert all(torch.equal(restored[n], original[n]) for n in original)
    assert (out / "model.safetensors").read_bytes() == (MINILM / "model.safetensors").read_bytes()

    model = transformers.AutoModel.from_pretrained(str(out))
    assert type(model).__name__ == "BertModel"
    cosine = torch.nn.functional.cosine_similarity(_embed(out), _embed(MINILM), dim=1)
    measured = _evaluate(MINILM, out / "model.safetensors", tmp_path, capsys)
    assert measured["sentences"] == len(SENTENCES)
    assert cosine.mean().item() == pytest.approx(measured["mean_cosine"], abs=1e-5)
    assert cosine.min().item() == pytest.approx(1.0, abs=1e-5)


@requires_minilm
def test_a_lossy_folder_loads_and_matches_evaluate(tmp_path: Path, capsys) -> None:
    source = tiny_bert_folder(tmp_path / "tiny")
    report = weightdna.compress(source, tmp_path / "tiny.dna", bits_per_weight=3,
                                representations=["quantized"])
    assert report.snr_db < 30  # lossy for real
    out = tmp_path / "restored"
    weightdna.decompress(tmp_path / "tiny.dna", f"{out}/")
    transformers.AutoModel.from_pretrained(str(out))
    cosine = torch.nn.functional.cosine_similarity(_embed(out), _embed(source), dim=1)
    measured = _evaluate(source, out, tmp_path, capsys)
    print(f"sentence-transformers cosine mean {cosine.mean().item():.6f} min "
          f"{cosine.min().item():.6f}; evaluate {measured['mean_cosine']:.6f} "
          f"{measured['min_cosine']:.6f}")
    assert cosine.min().item() < 0.99999  # the weights changed, and so did the embeddings
    assert cosine.mean().item() == pytest.approx(measured["mean_cosine"], abs=1e-4)
    assert cosine.min().item() == pytest.approx(measured["min_cosine"], abs=1e-4)


@requires_minilm
def test_a_sharded_folder_comes_back_sharded(tmp_path: Path) -> None:
    source = tiny_bert_folder(tmp_path / "sharded", shard="1MB")
    shards = sorted(p.name for p in source.glob("*.safetensors"))
    assert len(shards) > 1 and (source / "model.safetensors.index.json").is_file()
    weightdna.compress(source, tmp_path / "s.dna", lossless=True)
    out = weightdna.decompress(tmp_path / "s.dna", f"{tmp_path / 'restored'}{os.sep}")
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    assert (out / "model.safetensors.index.json").read_bytes() == \
        (source / "model.safetensors.index.json").read_bytes()
    for shard in shards:
        original, restored = load_file(source / shard), load_file(out / shard)
        assert sorted(original) == sorted(restored)
        assert all(torch.equal(original[n], restored[n]) for n in original)
    transformers.AutoModel.from_pretrained(str(out))


def test_other_files_only_on_request(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    torch.manual_seed(0)
    weightdna.weights.save_weights({"layer.weight": torch.randn(8, 8)},
                                   folder / "model.safetensors")
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"\x08\x07\x12\x00\xff\xfe")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs")
    report = weightdna.compress(folder, tmp_path / "a.dna", lossless=True)
    assert report.files == ("config.json",)
    assert [path for path, _ in report.left_out] == ["logo.png", "onnx/model.onnx"]
    assert all("not text" in why for _, why in report.left_out)

    assert main(["compress", str(folder), "-o", str(tmp_path / "b.dna"), "--lossless",
                 "--include", "*.png", "--include", "onnx/*", "--check", "none"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "stored 3 files" in text and "logo.png" in text
    (tmp_path / "restored").mkdir()  # an existing, empty folder: written into
    out = weightdna.decompress(tmp_path / "b.dna", tmp_path / "restored")
    assert (out / "logo.png").read_bytes() == (folder / "logo.png").read_bytes()
    assert (out / "onnx" / "model.onnx").read_bytes() == \
        (folder / "onnx" / "model.onnx").read_bytes()
    assert not (out / ".gitattributes").exists()
    capsys.readouterr()
    assert main(["info", str(tmp_path / "b.dna"), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [(f["path"], f["kind"], f["bytes"]) for f in files] == [
        ("config.json", "file", 22), ("logo.png", "file", 264),
        ("onnx/model.onnx", "file", 6)]

    assert main(["compress", str(folder), "-o", str(tmp_path / "c.dna"), "--lossless",
                 "--check", "none"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "left out logo.png" in err and "left out onnx/model.onnx" in err
    assert main(["compress", str(folder), "-o", str(tmp_path / "d.dna"), "--lossless",
                 "--include", "*.gif"]) == 1
    assert "matches no file" in " ".join(capsys.readouterr().err.split())
