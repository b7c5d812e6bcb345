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


# The integer type of each float width, to compare floats bit for bit.
BITS = {4: torch.int32, 2: torch.int16}


def minilm_tensor(name: str = "encoder.layer.0.attention.self.query.weight") -> torch.Tensor:
    """One of MiniLM's tensors, read alone from its safetensors file."""
    from safetensors import safe_open

    from weightdna.weights.minilm import minilm_path

    with safe_open(str(minilm_path() / "model.safetensors"), "pt") as f:
        return f.get_tensor(name)


def with_special_values(t: torch.Tensor) -> torch.Tensor:
    """``t`` (a float tensor the caller owns, 12+ elements) with its first elements set to
    NaNs (payloads too), ±Inf, ±0, subnormals and the extremes."""
    flat = t.view(-1)
    info = torch.finfo(t.dtype)
    flat[:10] = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 0.0, info.tiny / 2,
                              -info.tiny / 8, info.max, -info.max, info.tiny]).to(t.dtype)
    bits = flat.view(BITS[t.element_size()])
    bits[10] = 0x7FC12345 if t.dtype == torch.float32 else 0x7E55  # a NaN payload
    bits[11] = -1  # all ones: a negative NaN
    return t


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors hold the same dtype, shape and bits (NaN payloads included)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.view(BITS[a.element_size()]), b.view(BITS[b.element_size()]))
