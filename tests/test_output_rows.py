"""Data-free output-side row weights of a BERT model's linear weights
(`weightdna.evaluate.sensitivity.output_row_weights`): they rank rows by how much an error in
them moves the sentence embedding, on inputs they were not measured on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightdna.bert import BertEncoder, random_token_batch
from weightdna.evaluate.sensitivity import output_row_weights
from weightdna.weights import load_weights, minilm_path


@pytest.fixture(scope="module")
def minilm() -> tuple:
    """MiniLM's path, tensor names, its row weights (16 sequences, 2 directions) and an
    encoder of it."""
    path = minilm_path()
    names = load_weights(path).names
    return path, names, output_row_weights(path, names, sequences=16, draws=2), \
        BertEncoder.from_folder(path)


@pytest.mark.parametrize("name", ["encoder.layer.2.intermediate.dense.weight",
                                  "encoder.layer.5.attention.self.key.weight",
                                  "encoder.layer.1.output.dense.weight"])
def test_rows_weighed_most_move_the_embedding_most(minilm: tuple, name: str) -> None:
    path, _, rows, encoder = minilm
    assert rows[name].shape == (encoder.tensors[name].shape[0],)
    ids, mask = random_token_batch(path, encoder.config.vocab_size, 24, 24,
                                   np.random.default_rng(11), prior=True)  # other tokens
    reference = encoder.encode(ids, mask)
    kept = encoder.tensors[name]
    order = np.argsort(rows[name])
    quarter = len(order) // 4
    rng = np.random.default_rng(0)
    moved = {}
    for label, chosen in (("least", order[:quarter]), ("most", order[-quarter:])):
        noise = torch.zeros_like(kept)
        noise[chosen] = torch.as_tensor(rng.standard_normal((quarter, kept.shape[1])),
                                        dtype=kept.dtype) * 0.3 * kept.square().mean().sqrt()
        encoder.tensors[name] = kept + noise
        moved[label] = float((encoder.encode(ids, mask) - reference).square().sum(1).mean())
        encoder.tensors[name] = kept
    # Measured with the 540 bundled sentences at 64 sequences: 3.3-7.4x.
    assert moved["most"] > 2 * moved["least"], moved


def test_a_weight_the_forward_never_reads_gets_none(minilm: tuple) -> None:
    _, names, rows, _ = minilm
    assert "pooler.dense.weight" in names and "pooler.dense.weight" not in rows
    assert len(rows) == 36 and all(np.all(w > 0) for w in rows.values())
