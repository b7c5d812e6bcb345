"""Data-free bias correction of a BERT model whose weights were coded lossily.

Coding error shifts the mean of every layer's outputs: Ŵx̂ differs from Wx on average,
and mean-pooled sentence embeddings carry every such shift. After the weight matrices are
coded, each linear layer's bias and each LayerNorm's bias are moved by the shift of
their outputs' mean,

    b' = b + E[y] − E[ŷ],

y the original model's outputs and ŷ the coded model's, on random token sequences drawn
by `weightdna.bert.token_prior` (no data), one stage after another in the forward's
order, so each correction also absorbs the error left upstream (after the corrections
before it). The idea is Nagel et al. 2019 ("Data-Free Quantization"), there b − (Ŵ − W)·E[x]
with E[x] from the original model alone; measured on all-MiniLM-L6-v2 at 3 bits per
weight, mean cosine of the 540 bundled sentences 0.9845 → 0.9852 (that) → 0.9862 (this);
BENCHMARKS.md, "Data-free bias correction". The corrected biases are coded by their role,
as the source's would be: the same bound, the same bytes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.bert import BertConfig, BertEncoder, random_token_batch
from weightdna.errors import InvalidInputError

# Random token sequences (`weightdna.bert.random_token_batch`, drawn by the prior) whose
# outputs' means are matched. MiniLM at 3 bits per weight: 256 gave 0.98616, 1024 0.98623.
CORRECTION_SEQUENCES = 256
CORRECTION_LENGTH = 24

# The stages of one encoder layer, in the forward's order (relative to
# ``encoder.layer.{i}.``): the tensors of a stage read the same input, so they are
# corrected together. A key's bias is left alone: it moves every score of one query
# alike, which the softmax ignores.
LAYER_STAGES = (
    ("attention.self.query", "attention.self.value"),
    ("attention.output.dense",),
    ("attention.output.LayerNorm",),
    ("intermediate.dense",),
    ("output.dense",),
    ("output.LayerNorm",),
)

Adjust = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


class _Enough(Exception):
    """The outputs a stage asked for are in: the rest of the layer is not run."""


class _Means(BertEncoder):
    """A BERT encoder that keeps the mean over real tokens of every linear layer's and
    LayerNorm's output of its last forward; with ``wanted`` set, the forward stops once
    those outputs are in (`_Enough`): a stage's correction reads them alone, and the
    layer's later products (most of its work, for its first stages) would be thrown
    away."""

    keep: torch.Tensor
    means: dict[str, torch.Tensor]
    wanted: frozenset[str] = frozenset()

    def _record(self, name: str, y: torch.Tensor) -> torch.Tensor:
        self.means[name] = y[self.keep].to(torch.float64).mean(0)
        if self.wanted and self.wanted <= self.means.keys():
            raise _Enough
        return y

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self._record(name, super()._linear(x, name))

    def _layer_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self._record(name, super()._layer_norm(x, name))


def corrected_biases(original: Mapping[str, Any], restored: Mapping[str, Any],
                     config: BertConfig, token_ids: np.ndarray, mask: np.ndarray
                     ) -> dict[str, torch.Tensor]:
    """{bias name: corrected bias} of the BERT model ``restored`` (the coded tensors, same
    names as ``original``, the source's), on the inputs ``token_ids`` / ``mask``: each
    linear layer's and LayerNorm's bias moved by its outputs' mean shift, stage after
    stage (the module's docstring). The biases come back in their original dtype."""
    from weightdna.evaluate.sensitivity import _bert_prefix

    prefix = _bert_prefix(original)
    ids = torch.as_tensor(np.asarray(token_ids), dtype=torch.long)
    mask_t = torch.as_tensor(np.asarray(mask), dtype=torch.long)
    keep = mask_t.bool()
    source, coded = _Means(original, config), _Means(restored, config)
    for encoder in (source, coded):
        encoder.keep, encoder.means = keep, {}
    out: dict[str, torch.Tensor] = {}

    def shift(stage: Sequence[str]) -> None:
        for name in stage:
            key = f"{name}.bias"
            moved = (coded.tensors[key].to(torch.float64) + source.means[name]
                     - coded.means[name])
            coded.tensors[key] = moved.to(coded.tensors[key].dtype)
            out[prefix + key] = moved.to(original[prefix + key].dtype)

    with torch.no_grad():
        expected = source.embed(ids)
        coded.embed(ids)
        shift(("embeddings.LayerNorm",))
        hidden = coded.embed(ids)
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            source.means = {}
            after = source.layer(i, expected, mask_t)
            for stage in LAYER_STAGES:
                coded.means, coded.wanted = {}, frozenset(p + name for name in stage)
                try:
                    coded.layer(i, hidden, mask_t)
                except _Enough:
                    pass
                coded.wanted = frozenset()
                shift([p + name for name in stage])
            expected, hidden = after, coded.layer(i, hidden, mask_t)
    return out


def bert_bias_correction(path: str | Path, sequences: int = CORRECTION_SEQUENCES,
                         seed: int = 0) -> Adjust:
    """`weightdna.codec.compress.compress_model`'s ``adjust`` for the BERT model at
    ``path`` (a file or folder, config.json and vocab.txt beside it): given the coded
    tensors, its `corrected_biases` on ``sequences`` random token sequences drawn by the
    prior. The source's weights are read when it is called."""
    from weightdna.weights import load_weights

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = BertConfig.from_json(folder / "config.json")

    def adjust(restored: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        original = load_weights(path).state_dict()
        token_ids, mask = random_token_batch(
            folder, config.vocab_size, sequences,
            min(CORRECTION_LENGTH, config.max_position_embeddings),
            np.random.default_rng(seed), prior=True)
        coded = {name: restored[name] if name in restored else value
                 for name, value in original.items()}
        return corrected_biases(original, coded, config, token_ids, mask)

    return adjust


BIAS_CORRECTIONS = ("none", "synthetic")


def bias_correction_for(mode: str, path: str | Path, names: Sequence[str],
                        requested: str | None = None, target: Any = None,
                        note: Callable[[str], None] | None = None) -> Adjust | None:
    """The bias correction for the model at ``path`` (tensor ``names``) under sensitivity
    ``mode`` (`weightdna.evaluate.sensitivity.sensitivity_mode`), ``requested``
    (``--bias-correction``) and ``target`` (`weightdna.codec.ratecontrol.Target`).

    None, the default: a BERT model's `bert_bias_correction` with "synthetic"
    sensitivities; an ONNX graph's (`weightdna.evaluate.onnx_correction`) under a
    whole-model target where onnxruntime is installed, only where its image input goes
    through a Conv into a BatchNorm and the inputs are drawn to match that BatchNorm's
    running statistics (rapidocr's three nets: its recognizer at 3 bits per weight went
    from 3% to 64% of lines read as the original reads them, BENCHMARKS.md, "Data-free
    bias correction for ONNX graphs"); none for any other graph, whose standard-normal
    inputs are of no known scale (Silero VAD at 4 and 6 bits per weight kept 82% and 80%
    of its speech decisions with that correction, 95% and 99% without; BENCHMARKS.md, "No
    default bias correction on unmatched inputs"), nor for anything else. "none": none;
    "synthetic": a BERT model's or an ONNX graph's (on whatever inputs it has), refused for
    any other model and under a target that is not lossy. ``note`` hears what an ONNX
    graph's correction did, or why the default made none."""
    from weightdna.evaluate.calibration import is_onnx_file, require_onnxruntime
    from weightdna.evaluate.sensitivity import runs_as_bert

    if requested is not None and requested not in BIAS_CORRECTIONS:
        raise InvalidInputError(f"unknown bias correction {requested!r}; use one of "
                                f"{', '.join(BIAS_CORRECTIONS)}.")
    if requested == "none":
        return None
    if requested is None:
        if mode == "synthetic" and runs_as_bert(path, names):
            return bert_bias_correction(path)
        if (target is not None and target.whole_model and is_onnx_file(path)
                and importlib.util.find_spec("onnxruntime") is not None):
            from weightdna.evaluate.onnx_correction import (
                UNMATCHED,
                matched_inputs_possible,
                onnx_bias_correction,
            )

            if not matched_inputs_possible(path):
                if note is not None:
                    note(UNMATCHED)
                return None
            return onnx_bias_correction(path, note=note, matched_only=True)
        return None
    if target is not None and not target.rate_distortion:
        raise InvalidInputError("--bias-correction synthetic applies to bits-per-weight, SNR "
                                "and PSNR targets.")
    if runs_as_bert(path, names):
        return bert_bias_correction(path)
    if not is_onnx_file(path):
        raise InvalidInputError(f"--bias-correction synthetic corrects a BERT model's or an "
                                f"ONNX graph's biases; {path} is neither: use none.")
    require_onnxruntime("bias-correction")
    from weightdna.evaluate.onnx_correction import onnx_bias_correction

    return onnx_bias_correction(path, note=note)
