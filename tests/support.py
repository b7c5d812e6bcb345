"""What several test files share: where the real MiniLM model is, and a skip marker for it;
one tensor compressed alone to an SNR target; a small BERT folder."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.errors import MissingDependencyError
from weightdna.weights import ModelWeights, minilm_path


def _minilm_folder() -> Path | None:
    try:
        return minilm_path()
    except MissingDependencyError:
        return None


MINILM = _minilm_folder()
requires_minilm = pytest.mark.skipif(MINILM is None, reason="all-MiniLM-L6-v2 is not installed")


def snr_db(original: torch.Tensor, restored: torch.Tensor) -> float:
    """10·log₁₀(Σw² / Σ(w − ŵ)²) over the finite elements of ``original``."""
    finite = torch.isfinite(original)
    error = (restored.double() - original.double())[finite]
    return 10 * math.log10(float((original.double()[finite] ** 2).sum())
                           / float((error**2).sum()))


def compressed_alone(folder: Path, tensor: np.ndarray, snr: float,
                     representations: Sequence[str]) -> tuple[str, float, float]:
    """(representation, bits per weight of its sections, measured SNR dB) of ``tensor``
    compressed alone by `compress_model` to a per-tensor SNR target."""
    from weightdna.codec import read_dna_file
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target

    source = torch.from_numpy(tensor)
    output = folder / "alone.dna"
    compress_model(ModelWeights.from_tensors({"layer.weight": source}), output,
                   Target("snr", snr, per_tensor=True), representations=representations,
                   overwrite=True)
    dna = read_dna_file(output)
    entry = dna.entries[0]
    bits = 8 * sum(length for _, length, _ in entry["sections"].values()) / source.numel()
    return entry["representation"], bits, snr_db(source, dna.tensor("layer.weight"))


def tiny_bert_folder(folder: Path, shard: str | None = None) -> Path:
    """A small BERT built with transformers' own config class, with MiniLM's tokenizer and
    sentence-transformers modules (pooling resized): a real folder of another size (needs
    transformers and MiniLM)."""
    import transformers

    shutil.copytree(MINILM, folder, ignore=shutil.ignore_patterns("*.safetensors", ".*"))

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128)
    model = transformers.BertModel(config)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kwargs)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = 32
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder
