"""MiniLM sentence embeddings of original and restored weights, and how far they agree.

The sentence set ships with the package (``sentences.txt``, one plain English sentence a
line: science, daily life, sport, food, travel, technology, history, with paraphrase pairs,
near-duplicates and contrasts mixed in so that the pairwise similarities spread widely).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from weightdna.bert import BertConfig, BertEncoder, Tokenizer, load_tokenizer
from weightdna.errors import InvalidInputError
from weightdna.weights import minilm_path

SENTENCES_FILE = "sentences.txt"
Progress = Callable[[str, int, int], None]  # (stage, done, total), as the codec reports
BATCH_SIZE = 64


def load_sentences(path: str | Path | None = None) -> list[str]:
    """The non-empty lines of ``path`` (default: the bundled sentence set), stripped."""
    if path is None:
        text = resources.files(__package__).joinpath(SENTENCES_FILE).read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read sentences from {path}: {exc}") from exc
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise InvalidInputError(f"{path or SENTENCES_FILE} holds no sentences; one per line")
    return sentences


def embed_sentences(
    encoder: BertEncoder,
    sentences: Sequence[str],
    tokenizer: Tokenizer,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    stage: str = "embedding",
) -> torch.Tensor:
    """Unit-norm sentence embeddings (len(sentences), hidden), float32, in input order.

    Sentences are batched by token length so that little of each batch is padding.
    """
    if not sentences:
        raise InvalidInputError("no sentences to embed")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    report = progress or (lambda stage, done, total: None)
    lengths = [len(tokenizer.tokenize(s)) for s in sentences]
    order = np.argsort(lengths, kind="stable")
    out = torch.empty(len(sentences), encoder.config.hidden_size, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            report(stage, start, len(order))
            rows = order[start : start + batch_size]
            batch = encoder.encode_texts([sentences[i] for i in rows], tokenizer)
            out[torch.from_numpy(rows)] = batch.to(torch.float32)
    report(stage, len(order), len(order))
    return out


def compare_embeddings(original: torch.Tensor, restored: torch.Tensor) -> dict[str, float]:
    """Cosine between each sentence's two embeddings (mean, min, 5th percentile) and the
    Spearman correlation of the upper triangles of the two pairwise-cosine matrices."""
    if original.shape != restored.shape or original.ndim != 2:
        raise InvalidInputError(
            f"embeddings differ in shape: {tuple(original.shape)} vs {tuple(restored.shape)}"
        )
    a = torch.nn.functional.normalize(original.to(torch.float64), dim=1)
    b = torch.nn.functional.normalize(restored.to(torch.float64), dim=1)
    cosine = (a * b).sum(dim=1).clamp(-1.0, 1.0).numpy()
    upper = np.triu_indices(len(a), k=1)
    spearman = float("nan")
    if len(upper[0]) >= 2:
        spearman = float(spearmanr((a @ a.T).numpy()[upper], (b @ b.T).numpy()[upper])[0])
    return {
        "sentences": len(cosine),
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "p5_cosine": float(np.percentile(cosine, 5)),
        "spearman": spearman,
    }


def sentence_fidelity(
    original_state_dict: Mapping[str, Any],
    restored_state_dict: Mapping[str, Any],
    sentences: Sequence[str] | None = None,
    folder: str | Path | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Embed ``sentences`` (default: the bundled set) with both weight sets and compare them.

    folder: the Hugging Face folder with ``config.json`` and the tokenizer (default: the
    installed all-MiniLM-L6-v2).
    """
    folder = Path(folder) if folder is not None else minilm_path()
    sentences = load_sentences() if sentences is None else list(sentences)
    config = BertConfig.from_json(folder / "config.json")
    tokenizer = load_tokenizer(folder)
    start = time.perf_counter()
    embeddings = [
        embed_sentences(BertEncoder(state, config), sentences, tokenizer, batch_size, progress,
                        stage)
        for stage, state in (("original", original_state_dict), ("restored", restored_state_dict))
    ]
    result = compare_embeddings(*embeddings)
    result["seconds"] = time.perf_counter() - start
    return result
