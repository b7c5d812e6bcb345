"""Downstream fidelity: accuracy of restored digits models, sentence-embedding agreement,
per-tensor sensitivity, and `weightdna evaluate` end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

from weightdna.bert import EMBEDDING_TENSORS, LAYER_TENSORS, BertConfig
from weightdna.cli import main
from weightdna.data import load_digits
from weightdna.errors import InvalidInputError
from weightdna.evaluate import (
    accuracy_of_restored,
    compare_embeddings,
    load_sentences,
    sensitivity,
    sentence_fidelity,
)
from weightdna.evaluate.sentences import SENTENCES_FILE
from weightdna.nn.activations import ReLU
from weightdna.nn.layers import Dense
from weightdna.nn.model import Model
from weightdna.train import train_digits_cnn, train_digits_mlp
from weightdna.weights import save_weights

WORDS = ("the cat dog sat ran on a mat park fast slow red blue big small "
         "bird sings sleeps house car").split()
TINY = BertConfig(vocab_size=len(WORDS) + 4, hidden_size=8, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
TINY_SENTENCES = [
    "the cat sat on a mat", "the dog sat on a mat", "a red car ran fast",
    "a blue car ran slow", "the bird sings", "the big dog sleeps", "a small house",
    "the red bird sings on the house", "the dog ran in the park", "a cat sleeps",
]




def noisy(state: dict, snr_db: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Every floating-point tensor plus Gaussian noise at ``snr_db`` below its power."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in state.items():
        value = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if value.dtype.kind != "f":
            out[name] = value
            continue
        sigma = np.sqrt(np.mean(value.astype(np.float64) ** 2) * 10 ** (-snr_db / 10))
        out[name] = (value + rng.normal(0, sigma, value.shape)).astype(value.dtype)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny forwards: extra intra-op threads only spin, and on a loaded machine slow them
    tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mlp() -> Model:
    return train_digits_mlp(epochs=5).model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A two-layer BERT with random weights, its config.json and vocab.txt in a folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "config.json").write_text(json.dumps(
        {**dataclasses.asdict(TINY), "hidden_act": "gelu", "model_type": "bert"}))
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS]))
    gen = torch.Generator().manual_seed(0)
    h, inner = TINY.hidden_size, TINY.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (TINY.vocab_size, h),
        "embeddings.position_embeddings.weight": (TINY.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (TINY.type_vocab_size, h),
    }
    for i in range(TINY.num_hidden_layers):
        for t in LAYER_TENSORS:
            name = f"encoder.layer.{i}.{t}"
            if "LayerNorm" in t:
                shapes[name] = (h,)
            elif t.startswith("intermediate"):
                shapes[name] = (inner, h) if t.endswith("weight") else (inner,)
            elif t.startswith("output.dense"):
                shapes[name] = (h, inner) if t.endswith("weight") else (h,)
            else:
                shapes[name] = (h, h) if t.endswith("weight") else (h,)
    state = {n: 0.5 * torch.randn(s, generator=gen) for n, s in shapes.items()}
    for name in [*EMBEDDING_TENSORS, *shapes]:
        if "LayerNorm.weight" in name:
            state[name] = 1 + 0.1 * torch.randn(h, generator=gen)
        elif "LayerNorm.bias" in name:
            state[name] = 0.1 * torch.randn(h, generator=gen)
    save_weights(state, folder / "model.safetensors")
    return folder, state


# ------------------------------------------------------------------ the sentence set


def test_the_bundled_sentence_set_has_500_distinct_sentences() -> None:
    path = Path(__file__).resolve().parents[1] / "weightdna" / "evaluate" / SENTENCES_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() == line and line for line in lines)
    assert len(set(lines)) == len(lines) >= 500
    assert load_sentences() == lines  # found through the package, as installed


def test_load_sentences_rejects_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(InvalidInputError, match="no sentences"):
        load_sentences(tmp_path / "empty.txt")


# ------------------------------------------------------------------ digits accuracy


def test_identical_weights_lose_no_accuracy(mlp: Model) -> None:
    result = accuracy_of_restored(mlp, {k: v.copy() for k, v in mlp.state_dict().items()})
    assert result["delta_points"] == 0.0
    assert result["agreement"] == 1.0
    assert result["restored_accuracy"] == result["original_accuracy"] > 0.8


def test_heavy_noise_costs_accuracy(mlp: Model) -> None:
    light = accuracy_of_restored(mlp, noisy(mlp.state_dict(), snr_db=30))
    heavy = accuracy_of_restored(mlp, noisy(mlp.state_dict(), snr_db=-5))
    assert abs(light["delta_points"]) <= 2.0
    assert heavy["delta_points"] < -30.0
    assert heavy["agreement"] < 0.7 < light["agreement"]
    # The original model is left as it was.
    assert accuracy_of_restored(mlp, mlp.state_dict())["delta_points"] == 0.0


def test_a_cnn_is_judged_on_images(tmp_path: Path) -> None:
    model = train_digits_cnn(epochs=2).model
    path = model.save(tmp_path / "cnn.safetensors")
    restored = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    result = accuracy_of_restored(path, restored)  # a path, and torch tensors
    assert result["delta_points"] == 0.0 and result["test_images"] == 360


def test_restored_weights_must_match_the_model(mlp: Model) -> None:
    state = dict(mlp.state_dict())
    state.pop("layers.0.bias")
    with pytest.raises(InvalidInputError, match="missing"):
        accuracy_of_restored(mlp, state)


# ------------------------------------------------------------------ sentence embeddings


def test_compare_embeddings_identity_and_noise() -> None:
    rng = np.random.default_rng(0)
    emb = torch.from_numpy(rng.normal(size=(60, 16)))
    same = compare_embeddings(emb, emb.clone())
    assert same["mean_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert same["min_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert same["spearman"] == pytest.approx(1.0, abs=1e-12)
    moved = compare_embeddings(emb, emb + torch.from_numpy(rng.normal(size=(60, 16))) * 2)
    assert moved["mean_cosine"] < 0.6 and moved["spearman"] < 0.5
    assert moved["min_cosine"] <= moved["p5_cosine"] <= moved["mean_cosine"]
    with pytest.raises(InvalidInputError):
        compare_embeddings(emb, emb[:10])


def test_sentence_fidelity_of_a_tiny_bert(tiny_bert) -> None:
    folder, state = tiny_bert
    calls = []
    same = sentence_fidelity(state, dict(state), TINY_SENTENCES, folder, batch_size=4,
                             progress=lambda stage, done, total: calls.append((stage, total)))
    assert same["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert same["spearman"] == pytest.approx(1.0, abs=1e-9)
    assert same["sentences"] == len(TINY_SENTENCES)
    assert {stage for stage, _ in calls} == {"original", "restored"}
    worse = sentence_fidelity(state, noisy(state, snr_db=0), TINY_SENTENCES, folder)
    assert worse["mean_cosine"] < 0.95 and worse["spearman"] < 0.9


@requires_minilm
def test_minilm_identity_and_noise() -> None:
    from weightdna.weights import load_weights

    state = load_weights(MINILM).state_dict()
    sentences = load_sentences()[:16]
    same = sentence_fidelity(state, state, sentences)
    assert same["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert same["spearman"] == pytest.approx(1.0, abs=1e-6)
    worse = sentence_fidelity(state, noisy(state, snr_db=10), sentences)
    assert worse["mean_cosine"] < 0.98


# ------------------------------------------------------------------ sensitivity


def test_sensitivity_ranks_a_live_layer_above_a_dead_one() -> None:
    rng = np.random.default_rng(0)
    model = Model([Dense(4, 8, rng=rng), ReLU(), Dense(8, 3, rng=rng)])
    model.layers[0].params["bias"][...] = -100.0  # every hidden unit dead on these inputs
    inputs = rng.uniform(-1, 1, size=(64, 4)).astype(np.float32)
    for kwargs in ({"snr_db": 30.0}, {"step": 0.05}):
        s = sensitivity(model, inputs, **kwargs)
        assert set(s) == {"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"}
        assert s["layers.0.weight"] == 0.0
        assert s["layers.2.bias"] > 0.5  # a bias shifts every output by its own error
        assert s["layers.2.bias"] > s["layers.0.weight"]


def test_sensitivity_of_a_trained_mlp_is_positive_and_first_order(mlp: Model) -> None:
    before = {k: v.copy() for k, v in mlp.state_dict().items()}
    s30 = sensitivity(mlp, snr_db=30.0)
    s40 = sensitivity(mlp, snr_db=40.0)
    assert set(s30) == set(before) and all(v > 0 for v in s30.values())
    for name in s30:  # per unit of squared error, the figure barely depends on the noise level
        assert s40[name] == pytest.approx(s30[name], rel=0.5)
    for name, value in mlp.state_dict().items():  # the model is left as it was
        np.testing.assert_array_equal(value, before[name])


def test_attention_key_biases_do_not_matter(tiny_bert) -> None:
    """softmax(q·k + q·b) = softmax(q·k): a key bias shifts every score of a query alike."""
    folder, state = tiny_bert
    s = sensitivity(state, TINY_SENTENCES, folder=folder)
    assert set(s) == set(state)
    key_bias = max(s[f"encoder.layer.{i}.attention.self.key.bias"] for i in range(2))
    assert key_bias < 1e-6
    assert s["encoder.layer.1.attention.self.value.weight"] > 1e-4


def test_synthetic_sensitivities_need_no_data(tiny_bert, mlp: Model) -> None:
    """Random token sequences instead of sentences: the same softmax invariance shows (a
    key bias moves nothing), the tensors that carry the signal are measured; an engine
    model is measured on inputs distilled from itself (every tensor, seeded); refused
    with data given."""
    folder, state = tiny_bert
    s = sensitivity(state, folder=folder, synthetic=True)
    assert set(s) == set(state)
    assert max(s[f"encoder.layer.{i}.attention.self.key.bias"] for i in range(2)) < 1e-6
    assert s["encoder.layer.1.attention.self.value.weight"] > 1e-4
    assert s == sensitivity(state, folder=folder, synthetic=True)  # seeded
    engine = sensitivity(mlp, synthetic=True)
    assert set(engine) == set(mlp.state_dict()) and min(engine.values()) > 0
    assert engine == sensitivity(mlp, synthetic=True)
    with pytest.raises(InvalidInputError, match="no calibration data"):
        sensitivity(mlp, load_digits()[0][:8], synthetic=True)
    with pytest.raises(InvalidInputError, match="no calibration data"):
        sensitivity(state, TINY_SENTENCES, folder=folder, synthetic=True)


@requires_minilm
def test_random_token_batch_frames_ordinary_tokens() -> None:
    """[CLS], 8 or more ordinary tokens (no [PAD], [UNK], [unusedN], [MASK]), [SEP], then
    padding; seeded."""
    from weightdna.bert import random_token_batch

    vocab = (MINILM / "vocab.txt").read_text(encoding="utf-8").splitlines()
    ids, mask = random_token_batch(MINILM, len(vocab), 200, 24, np.random.default_rng(3))
    assert ids.shape == mask.shape == (200, 24)
    lengths = mask.sum(axis=1)
    assert lengths.min() == 10 and lengths.max() == 24  # 8..22 tokens between the ends
    for row, n in zip(ids, lengths, strict=True):
        assert vocab[row[0]] == "[CLS]" and vocab[row[n - 1]] == "[SEP]"
        assert not any(vocab[t].startswith("[") and vocab[t].endswith("]") for t in row[1 : n - 1])
        assert not row[n:].any()
    assert len(set(ids[:, 1:5].reshape(-1).tolist())) > 700  # spread over the vocabulary
    again, _ = random_token_batch(MINILM, len(vocab), 200, 24, np.random.default_rng(3))
    np.testing.assert_array_equal(ids, again)


def test_sensitivity_needs_a_model_it_knows() -> None:
    with pytest.raises(InvalidInputError, match="BERT"):
        sensitivity({"w": np.zeros(3)})
    with pytest.raises(InvalidInputError, match="step"):
        sensitivity(Model([Dense(2, 2)]), np.zeros((2, 2), np.float32), step=0.0)


# ------------------------------------------------------------------ the command


def test_evaluate_command_on_digits(tmp_path: Path, mlp: Model, capsys) -> None:
    original = mlp.save(tmp_path / "mlp.safetensors")
    exact = save_weights(mlp.state_dict(), tmp_path / "exact.safetensors")
    broken = save_weights(noisy(mlp.state_dict(), snr_db=-5), tmp_path / "noisy.safetensors")
    assert main(["evaluate", str(original), str(exact), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "digits" and result["delta_points"] == 0.0
    assert main(["evaluate", str(original), str(broken)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "points" in out
    assert main(["evaluate", str(original), str(tmp_path / "missing.safetensors")]) == 1
    assert main(["evaluate", str(original), str(exact), "--task", "sentences"]) == 1
    assert "config.json" in capsys.readouterr().err


def test_evaluate_command_on_sentences(tmp_path: Path, tiny_bert, capsys) -> None:
    folder, state = tiny_bert
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(TINY_SENTENCES))
    restored = save_weights(noisy(state, snr_db=20), tmp_path / "restored.safetensors")
    code = main(["evaluate", str(folder), str(restored), "--sentences", str(sentences),
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "sentences" and result["sentences"] == len(TINY_SENTENCES)
    assert 0.5 < result["mean_cosine"] < 1.0
    assert main(["evaluate", str(folder / "model.safetensors"), str(restored),
                 "--sentences", str(sentences)]) == 0
    assert "Spearman" in capsys.readouterr().out


def test_every_tensor_gets_a_sensitivity() -> None:
    """Measured 0 → the least positive one; never read → the median one (so an unread
    pooler is not rounded to nothing); nothing positive → 1."""
    from weightdna.evaluate.sensitivity import for_every_tensor

    measured = {"a": 4.0, "b": 1.0, "c": 0.0, "d": 9.0}
    assert for_every_tensor(measured, ["a", "b", "c", "d", "pooler"]) == {
        "a": 4.0, "b": 1.0, "c": 1.0, "d": 9.0, "pooler": 4.0}
    assert for_every_tensor({"c": 0.0}, ["c", "x"]) == {"c": 1.0, "x": 1.0}
    # Perturbed, a Pow's exponent made the outputs NaN: the most sensitive measured, not
    # NaN (which compress refuses: "the sensitivity of ... must be > 0").
    nan = {**measured, "exponent": float("nan"), "huge": float("inf")}
    assert for_every_tensor(nan, ["a", "exponent", "huge"]) == {
        "a": 4.0, "exponent": 9.0, "huge": 9.0}


def test_compress_measures_synthetic_sensitivities_of_a_bert_by_default(
        tiny_bert, mlp: Model, tmp_path: Path, capsys) -> None:
    """A BERT folder under a whole-model target: data-free sensitivities unless told
    otherwise; an engine model: none by default, and inputs distilled from it when asked
    for."""
    from weightdna.evaluate.sensitivity import runs_as_bert

    folder, state = tiny_bert
    assert runs_as_bert(folder, list(state))
    renamed = [n.replace("encoder.layer.", "transformer.layer.") for n in state]
    assert not runs_as_bert(folder, renamed)  # DistilBERT's names: not BERT's forward

    def compress(path: Path, *extra: str) -> tuple[int, dict | str]:
        code = main(["compress", str(path), "-o", str(tmp_path / "m.dna"), "--force",
                     "--snr", "30", "--check", "none", "--json", *extra])
        captured = capsys.readouterr()
        return code, json.loads(captured.out) if code == 0 else captured.err

    code, report = compress(folder)
    assert code == 0, report
    assert report["sensitivity"] == "synthetic"
    # ... with the word embedding's rows weighed by the vocabulary's token prior
    from weightdna.bert import read_vocabulary, token_prior
    from weightdna.evaluate.sensitivity import ROW_PRIOR_EXPONENT, row_weights_for

    rows = row_weights_for("synthetic", folder, list(state))
    np.testing.assert_allclose(rows.pop("embeddings.word_embeddings.weight"),
                               token_prior(read_vocabulary(folder)) ** ROW_PRIOR_EXPONENT)
    # ... and every linear weight's rows by how much their outputs move the embedding
    linear = sorted(n for n in state if n.startswith("encoder.layer.") and n.endswith(
        ("query.weight", "key.weight", "value.weight", "dense.weight")))
    assert sorted(rows) == linear and linear
    for name, weight in rows.items():
        assert weight.shape == (state[name].shape[0],) and np.all(weight > 0), name
    assert row_weights_for("none", folder, list(state)) == {}
    assert row_weights_for("auto", folder, list(state)) == {}
    code, report = compress(folder, "--sensitivity", "none")
    assert code == 0 and report["sensitivity"] == "none"
    engine = mlp.save(tmp_path / "mlp.safetensors")
    code, report = compress(engine)
    assert code == 0 and report["sensitivity"] == "none"
    code, report = compress(engine, "--sensitivity", "synthetic")
    assert code == 0 and report["sensitivity"] == "synthetic"
    assert row_weights_for("synthetic", engine, list(mlp.state_dict())) == {}
