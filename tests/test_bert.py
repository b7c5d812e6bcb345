"""Our BERT forward: MiniLM sentence embeddings, tokenisation, and agreement with transformers."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

from weightdna.bert import BertConfig, BertEncoder, WordPieceTokenizer, load_tokenizer, mean_pool
from weightdna.errors import InvalidInputError

HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The central bank raised interest rates again.",
    "Inflation pushed the bank to lift its rates.",
    "A cat sleeps on the warm windowsill.",
]


@pytest.fixture(scope="module")
def encoder():
    return BertEncoder.from_folder(MINILM)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


@requires_minilm
def test_minilm_embeddings_are_unit_norm_and_384_wide(encoder, tokenizer):
    emb = encoder.encode_texts(SENTENCES, tokenizer)
    assert emb.shape == (len(SENTENCES), 384)
    assert emb.dtype == torch.float32
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-6)


@requires_minilm
def test_similar_sentences_score_higher_than_unrelated(encoder, tokenizer):
    emb = encoder.encode_texts(SENTENCES, tokenizer)
    cos = (emb @ emb.T).numpy()
    # Pairs (0, 1) and (2, 3) paraphrase each other; every cross pair is unrelated.
    for a, b in ((0, 1), (2, 3)):
        unrelated = [cos[a, j] for j in range(len(SENTENCES)) if j not in (a, b)]
        assert cos[a, b] > max(unrelated) + 0.2


@requires_minilm
def test_padding_does_not_change_an_embedding(encoder, tokenizer):
    alone = encoder.encode_texts(["short"], tokenizer)
    batched = encoder.encode_texts(["short", SENTENCES[2]], tokenizer)[:1]
    # Plain comparisons: torch.testing.assert_close costs seconds of imports on first use.
    assert (alone - batched).abs().max().item() < 1e-6


@requires_minilm
def test_our_wordpiece_matches_the_tokenizers_package():
    if not HAS_TOKENIZERS:
        pytest.skip("the tokenizers package is not installed")
    ours = load_tokenizer(MINILM, fast=False)
    theirs = load_tokenizer(MINILM, fast=True)
    texts = [
        *SENTENCES,
        "Don't panic: résumé, naïve café — 42% off!!",
        "unaffable hyperparameterisation of GPT-4's tokenizer",
        "中文 text\tand\ttabs\n  newlines",
    ]
    for text in texts:
        assert ours.tokenize(text) == theirs.tokenize(text), text
    for a, b in zip(ours(texts), theirs(texts), strict=True):
        np.testing.assert_array_equal(a, b)


def test_wordpiece_basic_splitting_and_longest_match():
    vocab = {
        t: i
        for i, t in enumerate(
            [
                "[PAD]",
                "[UNK]",
                "[CLS]",
                "[SEP]",
                "hello",
                ",",
                "world",
                "!",
                "un",
                "##aff",
                "##able",
                "cafe",
            ]
        )
    }
    tok = WordPieceTokenizer(vocab, max_length=6)
    assert tok.tokenize("Hello,  WORLD!") == ["hello", ",", "world", "!"]
    assert tok.tokenize("unaffable Café") == ["un", "##aff", "##able", "cafe"]
    assert tok.tokenize("unknownword") == ["[UNK]"]
    ids, mask = tok(["hello world", "hello, world! hello"])
    assert ids.tolist() == [[2, 4, 6, 3, 0, 0], [2, 4, 5, 6, 7, 3]]  # truncated to 6
    assert mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    pooled = mean_pool(hidden, torch.tensor([[1, 1, 0]]))
    assert pooled.tolist() == [[2.0, 3.0]]


def test_config_and_state_dict_errors():
    with pytest.raises(InvalidInputError, match="hidden_act"):
        BertConfig.from_dict({"hidden_act": "relu"})
    with pytest.raises(InvalidInputError, match="not a BERT state dict"):
        BertEncoder({"layers.0.weight": np.zeros((2, 2))}, BertConfig())


@requires_minilm
def test_matches_transformers_bert_model(encoder, tokenizer):
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed (optional extra 'peers')")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertModel

    reference = BertModel.from_pretrained(str(MINILM), add_pooling_layer=False).eval()
    ids, mask = tokenizer(SENTENCES)
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)
        ).last_hidden_state
    ours = encoder.hidden_states(ids, mask)
    real = torch.as_tensor(mask).bool()  # padded positions are never pooled
    assert (ours - theirs)[real].abs().max().item() < 1e-5
    pooled = torch.nn.functional.normalize(mean_pool(theirs, torch.as_tensor(mask)), dim=1)
    assert (encoder.encode(ids, mask) - pooled).abs().max().item() < 1e-5
