"""Calibration statistics of a model's linear maps: H = XᵀX / N for each weight matrix.

For a weight W (rows = outputs) applied as y = W x, H is the second moment of its inputs
x over calibration data; ‖(W − Ŵ) X‖² / N = tr((W − Ŵ) H (W − Ŵ)ᵀ), which the output-aware
quantiser `weightdna.codec.gptq` minimises. The calibration data are those of
`weightdna.evaluate.sensitivity`: digits training images for the engine's models (never
the test images), the bundled sentences for a BERT model such as all-MiniLM-L6-v2.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.bert import EMBEDDING_TENSORS, BertConfig, BertEncoder, load_tokenizer
from weightdna.data import load_digits
from weightdna.errors import InvalidInputError, ModelFileError
from weightdna.evaluate.accuracy import as_array, takes_images
from weightdna.evaluate.sensitivity import (
    _bert_prefix,
    _calibration_sentences,
    for_every_tensor,
    sensitivity,
)
from weightdna.evaluate.sentences import Progress
from weightdna.nn.conv import Conv2D
from weightdna.nn.layers import Dense
from weightdna.nn.model import Model, load_model
from weightdna.train import single_blas_thread
from weightdna.weights import load_weights, minilm_path

BATCH = 512  # calibration samples per forward batch


class _Moments:
    """Running Σ xxᵀ and count of input vectors, per weight name."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, inputs: np.ndarray) -> None:
        x = np.asarray(inputs, dtype=np.float64).reshape(-1, inputs.shape[-1])
        if name not in self.sums:
            self.sums[name] = np.zeros((x.shape[1], x.shape[1]))
            self.counts[name] = 0
        self.sums[name] += x.T @ x
        self.counts[name] += x.shape[0]

    def hessians(self) -> dict[str, np.ndarray]:
        return {n: s / max(self.counts[n], 1) for n, s in self.sums.items()}


def _conv_columns(layer: Conv2D) -> np.ndarray:
    """The last forward's im2col patches with columns in the torch weight's (c, u, v) order
    (the engine gathers them as (u, v, c)), so that a row of weight.reshape(out, -1) meets
    its inputs."""
    kh, kw = layer.kernel_size
    columns = layer.columns
    return columns.reshape(-1, kh, kw, layer.in_channels).transpose(0, 3, 1, 2).reshape(
        columns.shape[0], -1)


def engine_hessians(model: Model, inputs: np.ndarray,
                    last: int | None = None) -> dict[str, np.ndarray]:
    """{``layers.{i}.weight``: H} of every Dense and Conv2D layer over ``inputs``; with
    ``last``, of that layer only (the forward stops there)."""
    moments = _Moments()
    inputs = np.asarray(inputs)
    layers = model.layers if last is None else model.layers[: last + 1]
    with single_blas_thread():
        for start in range(0, len(inputs), BATCH):
            x = inputs[start : start + BATCH]
            for i, layer in enumerate(layers):
                wanted = last is None or i == last
                if wanted and isinstance(layer, Dense):
                    moments.add(f"layers.{i}.weight", x)
                if i == len(layers) - 1 and not isinstance(layer, Conv2D):
                    break
                x = layer.forward(x, training=False)
                if wanted and isinstance(layer, Conv2D):
                    moments.add(f"layers.{i}.weight", _conv_columns(layer))
    for layer in model.layers:  # drop what the forward kept for a backward
        if isinstance(layer, Conv2D):
            layer.columns = None
    return moments.hessians()


class SequentialHessians:
    """A `weightdna.codec.gptq.Calibration` of an engine model: the H of layer i is measured
    on the inputs that layer sees when layers 0..i−1 hold their restored (coded) values, so
    that GPTQ on layer i also makes up for the earlier layers' errors (the paper's
    sequential order)."""

    def __init__(self, model: Model, inputs: np.ndarray) -> None:
        self.model = copy.deepcopy(model)
        self.original = {n: v.copy() for n, v in self.model.state_dict().items()}
        self.inputs = np.asarray(inputs)
        self.names = [f"layers.{i}.weight" for i, layer in enumerate(model.layers)
                      if isinstance(layer, Dense | Conv2D)]

    def hessian(self, name: str, restored: Mapping[str, Any]) -> np.ndarray:
        index = int(name.split(".")[1])
        state = self.model.state_dict()
        for key, value in state.items():
            earlier = key in restored and int(key.split(".")[1]) < index
            np.copyto(value, as_array(restored[key]) if earlier else self.original[key])
        return engine_hessians(self.model, self.inputs, last=index)[name]


def bert_hessians(state_dict: Mapping[str, Any], sentences: Sequence[str],
                  folder: str | Path) -> dict[str, np.ndarray]:
    """{name: H} of every Linear weight of a BERT state dict (names as in the state dict),
    over the real (unpadded) tokens of ``sentences``."""
    folder = Path(folder)
    prefix = _bert_prefix(state_dict)
    encoder = BertEncoder(state_dict, BertConfig.from_json(folder / "config.json"))
    token_ids, mask = load_tokenizer(folder)(list(sentences))
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    mask_t = torch.as_tensor(mask, dtype=torch.long)
    moments = _Moments()
    linear = encoder._linear
    keep = mask_t.bool()

    def recording(x: torch.Tensor, name: str) -> torch.Tensor:
        rows = x[keep[: x.shape[0], : x.shape[1]]] if x.dim() == 3 else x
        moments.add(f"{prefix}{name}.weight", rows.double().numpy())
        return linear(x, name)

    encoder._linear = recording  # every Linear of the forward reports its input
    with torch.no_grad():
        for start in range(0, ids.shape[0], 64):
            batch = slice(start, start + 64)
            keep = mask_t[batch].bool()
            hidden = encoder.embed(ids[batch])
            for i in range(encoder.config.num_hidden_layers):
                hidden = encoder.layer(i, hidden, mask_t[batch])
    return moments.hessians()


def hessians(
    model: Model | Mapping[str, Any],
    calibration: np.ndarray | Sequence[str] | None = None,
    *,
    seed: int = 0,
    folder: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """{weight name: H = XᵀX/N} of the model's linear maps, for
    ``compress_model(..., calibration=...)``.

    model: an engine digits ``Model`` (calibration: its input images, default every digits
    training image of the split ``seed``), or a BERT state dict such as MiniLM's
    (calibration: sentences, default the 64 of the bundled set that `sensitivity` uses;
    folder: its config and tokenizer, default the installed all-MiniLM-L6-v2). Conv2D
    weights get H over their im2col patches, columns in the weight's (in, kh, kw) order.
    """
    if isinstance(model, Model):
        inputs = calibration
        if inputs is None:
            inputs = load_digits(seed=seed, image=takes_images(model))[0]
        return engine_hessians(model, np.asarray(inputs))
    folder = Path(folder) if folder is not None else minilm_path()
    sentences = list(calibration) if calibration is not None else _calibration_sentences()
    return bert_hessians(model, sentences, folder)


def reads_digits(model: Model) -> bool:
    """Whether the engine model takes the digits: 64 flat pixels, or 1×8×8 images."""
    first = model.layers[0] if model.layers else None
    if isinstance(first, Conv2D):
        return first.in_channels == 1
    return isinstance(first, Dense) and first.in_features == 64


def calibration_subject(path: str | Path, flag: str = "--calibration"
                        ) -> Model | tuple[dict[str, Any], Path]:
    """What calibrating the model at ``path`` runs: an engine digits ``Model`` (a file of
    `weightdna train mlp|cnn` or Model.save; its data: the digits training images), or a
    BERT state dict with its folder (a Hugging Face folder, or a weights file beside its
    config.json and tokenizer; its data: the bundled sentences). Any other model raises
    InvalidInputError naming ``flag``: there is no calibration data for it."""
    path = Path(path)
    try:
        model = load_model(path)
    except ModelFileError:
        model = None
    if model is not None:
        if not reads_digits(model):
            raise InvalidInputError(
                f"{path} is an engine model that does not read the 8×8 digits: there is no "
                f"calibration data for it; compress it without {flag}.")
        return model
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file():
        state = load_weights(path).state_dict()
        if any(name.endswith(EMBEDDING_TENSORS[0]) for name in state):
            return state, folder
    raise InvalidInputError(
        f"no calibration data for {path}: calibration knows engine digits models (written by "
        "`weightdna train mlp|cnn`) and BERT models with their config.json and tokenizer "
        f"(calibrated on the bundled sentences); compress it without {flag}.")


def hessians_for_file(path: str | Path) -> dict[str, np.ndarray] | SequentialHessians:
    """The calibration of the model stored at ``path`` (`calibration_subject`): an engine
    digits model sequentially on the digits training images (`SequentialHessians`), a
    BERT model on the bundled sentences."""
    subject = calibration_subject(path)
    if isinstance(subject, Model):
        return SequentialHessians(subject, load_digits(image=takes_images(subject))[0])
    state, folder = subject
    return hessians(state, folder=folder)


def sensitivity_for_file(path: str | Path, synthetic: bool = False,
                         progress: Progress | None = None) -> dict[str, float]:
    """Per-tensor output sensitivities (`weightdna.evaluate.sensitivity`) of the model at
    ``path`` on the data of its kind (`calibration_subject`), or with ``synthetic`` on
    random token sequences (BERT models only). Tensors the forward never reads (a pooler,
    say) get the median measured value (`for_every_tensor`)."""
    subject = calibration_subject(path, "--sensitivity")
    if isinstance(subject, Model):
        measured = sensitivity(subject, synthetic=synthetic, progress=progress)
        names = list(subject.state_dict())
    else:
        state, folder = subject
        measured = sensitivity(state, folder=folder, draws=1, synthetic=synthetic,
                               progress=progress)
        names = list(state)
    return for_every_tensor(measured, names)
