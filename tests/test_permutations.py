"""Permuting hidden units keeps a network's function; the canonical order raises smoothness."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import MINILM, requires_minilm

from weightdna.bert import BertConfig, BertEncoder, load_tokenizer
from weightdna.data import load_digits
from weightdna.errors import InvalidInputError
from weightdna.nn.activations import ReLU, Tanh
from weightdna.nn.layers import Dense, Dropout
from weightdna.nn.model import Model
from weightdna.permutations import (
    canonicalize,
    inverse_permutation,
    nearest_neighbour_order,
    neighbour_correlation,
    permute,
    random_permutations,
    restore_order,
    unit_groups,
    unit_vectors,
)
from weightdna.train import build_digits_cnn, train_digits_cnn, train_digits_mlp
from weightdna.weights import load_weights

# ---------------------------------------------------------------------------------------
# Engine models


def _mlp(seed: int = 0) -> Model:
    return Model(
        [
            Dense(64, 48, rng=seed),
            ReLU(),
            Dense(48, 32, rng=seed + 1),
            Tanh(),
            Dropout(0.1, rng=seed + 2),
            Dense(32, 10, rng=seed + 3),
        ]
    )


@pytest.fixture(scope="module")
def trained_mlp():
    # The engine's recipe (64 → 128 → 64 → 10, ReLU), 10 of its 30 epochs to stay quick.
    return train_digits_mlp(epochs=10).model, load_digits()[1]


@pytest.fixture(scope="module")
def trained_cnn():
    # conv(16) → pool → conv(32) → pool → Flatten (32·2·2) → dense(64) → 10.
    return train_digits_cnn(epochs=5).model, load_digits(image=True)[1]


def _with_state(model: Model, state: dict, dtype=None) -> Model:
    copy = Model.from_architecture(model.architecture())
    copy.load_state_dict({k: np.asarray(v) for k, v in model.state_dict().items()})
    if dtype is not None:
        copy.astype(dtype)
        state = {k: np.asarray(v, dtype=dtype) for k, v in state.items()}
    copy.load_state_dict(state)
    return copy


def _assert_same_function(model: Model, state: dict, X: np.ndarray) -> None:
    # float32 (as trained): only the summation order differs, so agreement to 1e-5.
    np.testing.assert_allclose(
        _with_state(model, state).predict(X), model.predict(X), rtol=1e-5, atol=1e-5
    )
    # float64: the same function up to rounding far below the float32 check.
    original = _with_state(model, model.state_dict(), np.float64).predict(X.astype(np.float64))
    permuted = _with_state(model, state, np.float64).predict(X.astype(np.float64))
    np.testing.assert_allclose(permuted, original, rtol=0, atol=1e-10)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_canonical_engine_model_keeps_outputs_and_raises_neighbour_correlation(
    which, trained_mlp, trained_cnn
):
    model, X_test = trained_mlp if which == "mlp" else trained_cnn
    state = model.state_dict()
    new, perms = canonicalize(state, model)
    expected = {"mlp": {"layers.0", "layers.2"}, "cnn": {"layers.0", "layers.3", "layers.7"}}
    assert set(perms) == expected[which]
    for name, perm in perms.items():
        assert not np.array_equal(perm, np.arange(len(perm)))
        weight = f"{name}.weight"
        assert neighbour_correlation(new[weight]) > neighbour_correlation(state[weight]) + 0.05
    _assert_same_function(model, new, X_test)


def test_flatten_moves_whole_channel_blocks(trained_cnn):
    model, _ = trained_cnn
    state = model.state_dict()
    perm = np.roll(np.arange(32), 1)
    new = permute(state, unit_groups(state, model), {"layers.3": perm})
    # Channel perm[k] of conv layers.3 is now channel k, so the Dense columns after
    # pooling and Flatten move as blocks of H·W = 2·2.
    for k in range(32):
        np.testing.assert_array_equal(
            new["layers.7.weight"][:, 4 * k : 4 * (k + 1)],
            state["layers.7.weight"][:, 4 * perm[k] : 4 * (perm[k] + 1)],
        )
        np.testing.assert_array_equal(new["layers.3.weight"][k], state["layers.3.weight"][perm[k]])


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_restore_order_gives_back_the_exact_engine_tensors(which, trained_mlp, trained_cnn):
    model, _ = trained_mlp if which == "mlp" else trained_cnn
    state = model.state_dict()
    new, perms = canonicalize(state, model)
    back = restore_order(new, model, perms)
    assert back.keys() == state.keys()
    for name, value in state.items():
        assert back[name].dtype == value.dtype
        np.testing.assert_array_equal(back[name], value)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), which=st.sampled_from(["mlp", "cnn"]))
def test_random_permutations_preserve_engine_function(seed, which):
    model = _mlp(seed % 1000) if which == "mlp" else build_digits_cnn(seed % 1000)
    X = np.random.default_rng(seed).random((7, 64) if which == "mlp" else (7, 1, 8, 8))
    state = model.state_dict()
    groups = unit_groups(state, model)
    perms = random_permutations(groups, seed)
    new = permute(state, groups, perms)
    _assert_same_function(model, new, X.astype(np.float32))
    back = permute(new, groups, {k: inverse_permutation(p) for k, p in perms.items()})
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value)


def test_architecture_may_be_class_names_or_model_architecture():
    model = _mlp()
    state = model.state_dict()
    names = ["Dense", "ReLU", "Dense", "Tanh", "Dropout", "Dense"]
    assert unit_groups(state, names) == unit_groups(state, model.architecture())
    assert unit_groups(state, names) == unit_groups(state, model)


def test_unknown_layer_between_units_leaves_them_in_place():
    model = _mlp()
    groups = unit_groups(
        model.state_dict(), ["Dense", "Mystery", "Dense", "Tanh", "Dropout", "Dense"]
    )
    assert [g.name for g in groups] == ["layers.2"]


def test_mismatched_architecture_and_bad_permutations_raise():
    model = _mlp()
    state = model.state_dict()
    with pytest.raises(InvalidInputError, match="does not match"):
        unit_groups(state, ["Dense", "ReLU", "Dense", "Tanh", "Dropout", "Conv2D"])
    groups = unit_groups(state, model)
    with pytest.raises(InvalidInputError, match="each of 0..47 once"):
        permute(state, groups, {"layers.0": np.zeros(48, dtype=int)})
    with pytest.raises(InvalidInputError, match="unknown unit groups"):
        permute(state, groups, {"layers.9": np.arange(3)})
    with pytest.raises(InvalidInputError, match="num_heads"):
        canonicalize({"encoder.layer.0.intermediate.dense.weight": np.zeros((4, 2))}, "bert")


# ---------------------------------------------------------------------------------------
# The ordering and the statistic


def test_neighbour_correlation_on_known_matrices():
    row = np.array([1.0, 2.0, 0.0, -1.0])
    assert neighbour_correlation(np.stack([row, row, 2 * row + 3])) == pytest.approx(1.0)
    assert neighbour_correlation(np.stack([row, -row, row])) == pytest.approx(-1.0)
    x = np.random.default_rng(0).standard_normal((5, 7))
    assert neighbour_correlation(x, axis=1) == pytest.approx(neighbour_correlation(x.T))
    with pytest.raises(InvalidInputError):
        neighbour_correlation(np.ones((1, 4)))


def test_nearest_neighbour_order_chains_similar_units():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, 32))
    # Three noisy copies of each of four directions, shuffled: the chain must visit each
    # cluster's members consecutively.
    units = np.repeat(centres, 3, axis=0) + 0.01 * rng.standard_normal((12, 32))
    shuffle = rng.permutation(12)
    order = nearest_neighbour_order(units[shuffle])
    clusters = shuffle[order] // 3
    assert sorted(order.tolist()) == list(range(12))
    assert np.count_nonzero(np.diff(clusters)) == 3
    assert order[0] == np.argmax(np.linalg.norm(units[shuffle], axis=1))
    assert nearest_neighbour_order(units, start=5)[0] == 5


def test_ordering_1536_units_is_fast():
    units = np.random.default_rng(0).standard_normal((1536, 384)).astype(np.float32)
    start = time.perf_counter()
    nearest_neighbour_order(units)
    # About 0.1 s on one core; the bound leaves room for a loaded machine.
    assert time.perf_counter() - start < 3.0


# ---------------------------------------------------------------------------------------
# BERT


def _tiny_bert(seed: int) -> tuple[dict, BertConfig]:
    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=12,
    )
    rng = np.random.default_rng(seed)
    h, f = config.hidden_size, config.intermediate_size
    state = {
        "embeddings.word_embeddings.weight": rng.standard_normal((40, h)),
        "embeddings.position_embeddings.weight": rng.standard_normal((12, h)),
        "embeddings.token_type_embeddings.weight": rng.standard_normal((2, h)),
        "embeddings.LayerNorm.weight": 1 + 0.1 * rng.standard_normal(h),
        "embeddings.LayerNorm.bias": 0.1 * rng.standard_normal(h),
    }
    shapes = {
        "attention.self.query": (h, h),
        "attention.self.key": (h, h),
        "attention.self.value": (h, h),
        "attention.output.dense": (h, h),
        "intermediate.dense": (f, h),
        "output.dense": (h, f),
    }
    for i in range(2):
        for name, shape in shapes.items():
            p = f"encoder.layer.{i}.{name}"
            state[p + ".weight"] = rng.standard_normal(shape) / np.sqrt(shape[1])
            state[p + ".bias"] = 0.1 * rng.standard_normal(shape[0])
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            state[f"encoder.layer.{i}.{norm}.weight"] = 1 + 0.1 * rng.standard_normal(h)
            state[f"encoder.layer.{i}.{norm}.bias"] = 0.1 * rng.standard_normal(h)
    return state, config


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_permutations_preserve_a_bert_forward(seed):
    state, config = _tiny_bert(seed % 1000)
    groups = unit_groups(state, config)
    assert {g.name for g in groups} == {
        f"encoder.layer.{i}.{part}"
        for i in range(2)
        for part in ("intermediate", "attention.heads")
    }
    new = permute(state, groups, random_permutations(groups, seed))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 40, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    before = BertEncoder(state, config, torch.float64).hidden_states(ids, mask)
    after = BertEncoder(new, config, torch.float64).hidden_states(ids, mask)
    # torch.testing.assert_close costs seconds of lazy imports on first use; compare directly.
    assert (after - before).abs().max().item() < 1e-10


def test_head_permutation_moves_blocks_of_head_dim():
    state, config = _tiny_bert(0)
    groups = unit_groups(state, "bert", num_heads=4)
    perm = np.array([2, 0, 3, 1])
    new = permute(state, groups, {"encoder.layer.1.attention.heads": perm})
    p = "encoder.layer.1.attention."
    for k in range(4):
        for t in ("query", "key", "value"):
            np.testing.assert_array_equal(
                new[f"{p}self.{t}.weight"][4 * k : 4 * k + 4],
                state[f"{p}self.{t}.weight"][4 * perm[k] : 4 * perm[k] + 4],
            )
        np.testing.assert_array_equal(
            new[p + "output.dense.weight"][:, 4 * k : 4 * k + 4],
            state[p + "output.dense.weight"][:, 4 * perm[k] : 4 * perm[k] + 4],
        )
    assert (
        new["encoder.layer.0.attention.self.query.weight"]
        is (state["encoder.layer.0.attention.self.query.weight"])
    )


def test_prefixed_bert_names_are_found():
    state, config = _tiny_bert(0)
    prefixed = {"bert." + k: v for k, v in state.items()}
    names = [g.name for g in unit_groups(prefixed, config)]
    assert names[0] == "bert.encoder.layer.0.intermediate"
    new, perms = canonicalize(prefixed, config)
    back = restore_order(new, config, perms)
    for name, value in prefixed.items():
        np.testing.assert_array_equal(back[name], value)


@pytest.fixture(scope="module")
def minilm():
    state = load_weights(MINILM).state_dict()
    config = BertConfig.from_json(MINILM / "config.json")
    new, perms = canonicalize(state, config)
    tokenizer = load_tokenizer(MINILM)
    ids, mask = tokenizer(
        ["A man is playing a guitar.", "Interest rates rose again.", "Cats sleep a lot."]
    )
    return state, config, new, perms, ids, mask


@requires_minilm
def test_canonical_minilm_layers_keep_outputs_while_ffn_correlation_rises(minilm):
    state, config, new, perms, ids, mask = minilm
    original, permuted = BertEncoder(state, config), BertEncoder(new, config)
    hidden = original.embed(torch.as_tensor(ids))
    assert torch.equal(permuted.embed(torch.as_tensor(ids)), hidden)
    mask_t = torch.as_tensor(mask)
    with torch.no_grad():
        for i in range(config.num_hidden_layers):
            name = f"encoder.layer.{i}.intermediate.dense.weight"
            assert neighbour_correlation(new[name]) > neighbour_correlation(state[name]) + 0.1
            heads = perms[f"encoder.layer.{i}.attention.heads"]
            assert not np.array_equal(heads, np.arange(config.num_attention_heads))
            expected = original.layer(i, hidden, mask_t)
            got = permuted.layer(i, hidden, mask_t)
            assert (got - expected).abs().max().item() < 1e-5


@requires_minilm
def test_canonical_minilm_gives_the_same_embeddings(minilm):
    state, config, new, _, ids, mask = minilm
    before = BertEncoder(state, config).encode(ids, mask)
    after = BertEncoder(new, config).encode(ids, mask)
    assert (after - before).abs().max().item() < 1e-5


@requires_minilm
def test_restore_order_gives_back_the_exact_minilm_tensors(minilm):
    state, config, new, perms, _, _ = minilm
    back = restore_order(new, config, perms)
    assert back.keys() == state.keys()
    for name, value in state.items():
        assert back[name].dtype == value.dtype
        assert torch.equal(back[name], value), name


@requires_minilm
def test_unit_vectors_of_heads_concatenate_query_key_value(minilm):
    state, config, _, _, _, _ = minilm
    heads = unit_groups(state, config)[1]
    assert heads.name == "encoder.layer.0.attention.heads"
    assert unit_vectors(state, heads).shape == (12, 3 * 32 * 384)


def test_outgoing_unit_vectors_follow_flatten_blocks(trained_cnn):
    model, _ = trained_cnn
    state = model.state_dict()
    conv = unit_groups(state, model)[1]
    assert conv.name == "layers.3"
    outgoing = unit_vectors(state, conv, "outgoing")
    assert outgoing.shape == (32, 64 * 4)
    np.testing.assert_array_equal(outgoing[2].reshape(64, 4), state["layers.7.weight"][:, 8:12])
    assert unit_vectors(state, conv, "both").shape == (32, 16 * 9 + 64 * 4)
    with pytest.raises(InvalidInputError, match="features"):
        unit_vectors(state, conv, "sideways")


@requires_minilm
def test_ordering_by_both_sides_smooths_ffn_rows_and_output_columns(minilm):
    state, config, _, _, _, _ = minilm
    new, _ = canonicalize(state, config, features="both")
    for i in range(config.num_hidden_layers):
        rows = f"encoder.layer.{i}.intermediate.dense.weight"
        cols = f"encoder.layer.{i}.output.dense.weight"
        assert neighbour_correlation(new[rows]) > neighbour_correlation(state[rows]) + 0.1
        assert neighbour_correlation(new[cols], 1) > neighbour_correlation(state[cols], 1) + 0.1
