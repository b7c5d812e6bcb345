"""Does the restored network still do its job? Downstream fidelity and per-tensor sensitivity.

``accuracy_of_restored`` compares an engine digits model with its restored weights on the
held-out digits; ``sentence_fidelity`` compares MiniLM sentence embeddings before and after;
``sensitivity`` measures how much each tensor's error moves a model's outputs, the weight a
rate allocator gives that tensor's squared error.
"""

from weightdna.evaluate.accuracy import accuracy_of_restored
from weightdna.evaluate.sensitivity import sensitivity
from weightdna.evaluate.sentences import (
    SENTENCES_FILE,
    compare_embeddings,
    embed_sentences,
    load_sentences,
    sentence_fidelity,
)

__all__ = [
    "SENTENCES_FILE",
    "accuracy_of_restored",
    "compare_embeddings",
    "embed_sentences",
    "load_sentences",
    "sensitivity",
    "sentence_fidelity",
]
