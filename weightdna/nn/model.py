"""The model container: a sequence of layers that trains, predicts, and saves as safetensors.

Parameters are named ``layers.{i}.weight`` / ``layers.{i}.bias`` with ``i`` the layer's
index in the sequence, as a torch module holding ``self.layers = nn.Sequential(...)`` names
them, so a saved engine model reads like any other model file. The architecture travels in
the safetensors metadata as JSON, so ``Model.load`` rebuilds the model without code.

The engine never prints: ``fit`` reports progress to ``Callback`` objects, and the CLI
supplies one that draws a progress bar.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from weightdna.atomic import atomic_output
from weightdna.errors import InvalidInputError, ModelFileError
from weightdna.nn.activations import Softmax
from weightdna.nn.base import Layer, Loss
from weightdna.nn.losses import (
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    SoftmaxCrossEntropy,
    accuracy,
    softmax_cross_entropy_gradient,
)
from weightdna.nn.optimizers import Optimizer

ARCHITECTURE_KEY = "weightdna.architecture"
FORMAT_VERSION = 1
# Where load() looks up a layer class by the name stored in the file.
_LAYER_MODULES = ("weightdna.nn.layers", "weightdna.nn.activations", "weightdna.nn.conv")


class Callback:
    """Hooks ``Model.fit`` calls; override the ones you need (all do nothing here)."""

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        """Called once before the first epoch."""

    def on_batch_end(self, epoch: int, batch: int) -> None:
        """Called after each optimisation step (epoch and batch count from 0)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch with that epoch's entries of the history."""

    def on_train_end(self, history: dict[str, list[float]]) -> None:
        """Called once after the last epoch."""


class Model:
    """A sequence of layers; ``forward`` runs them in order, ``backward`` in reverse."""

    def __init__(self, layers: Iterable[Layer] = ()) -> None:
        self.layers: list[Layer] = []
        for layer in layers:
            self.add(layer)

    def add(self, layer: Layer) -> Model:
        """Append a layer; returns the model so calls can be chained."""
        if not isinstance(layer, Layer):
            raise InvalidInputError(f"Model.add takes an engine Layer, got {type(layer).__name__}")
        self.layers.append(layer)
        return self

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Model({inner}\n)" if inner else "Model()"

    # ------------------------------------------------------------------ passes

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        """Run every layer; ``training`` switches Dropout on."""
        output = inputs
        for layer in self.layers:
            output = layer.forward(output, training=training)
        return output

    def backward(self, loss: Loss, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        """Backpropagate ``loss`` from the last forward; returns the gradient w.r.t. the input.

        A final Softmax under CategoricalCrossEntropy takes the fused path: the gradient
        w.r.t. the logits is (P − y)/N directly, which is cheaper and better conditioned
        than the two Jacobians multiplied (clipping in the loss would also bias it).
        """
        layers = self.layers
        if _ends_in_softmax_cce(self, loss):
            dvalues = softmax_cross_entropy_gradient(y_pred, y_true)
            layers = layers[:-1]
        else:
            dvalues = loss.backward(y_pred, y_true)
        for layer in reversed(layers):
            dvalues = layer.backward(dvalues)
        return dvalues

    def regularization_loss(self) -> float:
        """The sum of the layers' L2 penalties."""
        return float(sum(layer.regularization_loss() for layer in self.layers))

    @property
    def trainable_layers(self) -> list[Layer]:
        """The layers that hold parameters."""
        return [layer for layer in self.layers if layer.params]

    def num_parameters(self) -> int:
        """How many scalar parameters the model has."""
        return int(sum(p.size for layer in self.layers for p in layer.params.values()))

    # ------------------------------------------------------------------ training

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int = 32,
        optimizer: Optimizer,
        loss: Loss,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        shuffle: bool = True,
        seed: int | np.random.Generator | None = 0,
        callbacks: Sequence[Callback] = (),
    ) -> dict[str, list[float]]:
        """Train with mini-batches; returns the history, one entry per epoch.

        optimizer: an engine optimizer (SGD, Adam); it keeps its state across calls, so
        fit can be called again to train further. seed: the generator of the shuffling
        order, so a run repeats.
        The history has ``loss`` (data loss, the mean over the epoch's batches) and, for
        classification losses, ``accuracy``; with validation data, ``val_loss`` and
        ``val_accuracy`` measured in inference mode after the epoch.
        """
        X = np.asarray(X)
        y = np.asarray(y)
        if len(X) != len(y):
            raise InvalidInputError(f"X has {len(X)} samples but y has {len(y)}")
        if epochs < 1 or batch_size < 1:
            raise InvalidInputError(
                f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}"
            )
        if len(X) == 0:
            raise InvalidInputError("fit needs at least one training sample")
        rng = np.random.default_rng(seed)
        classify = _is_classification(loss)
        n = len(X)
        batches = -(-n // batch_size)
        history: dict[str, list[float]] = {"loss": []}
        if classify:
            history["accuracy"] = []
        if validation_data is not None:
            history["val_loss"] = []
            if classify:
                history["val_accuracy"] = []
        for callback in callbacks:
            callback.on_train_begin(epochs, batches)
        trainable = self.trainable_layers
        for epoch in range(epochs):
            order = rng.permutation(n) if shuffle else np.arange(n)
            loss_sum = 0.0
            correct = 0.0
            for b in range(batches):
                index = order[b * batch_size : (b + 1) * batch_size]
                X_batch, y_batch = X[index], y[index]
                y_pred = self.forward(X_batch, training=True)
                loss_sum += loss.forward(y_pred, y_batch) * len(index)
                if classify:
                    correct += accuracy(y_pred, y_batch) * len(index)
                self.backward(loss, y_pred, y_batch)
                optimizer.pre_update_params()
                for layer in trainable:
                    optimizer.update_params(layer)
                optimizer.post_update_params()
                for callback in callbacks:
                    callback.on_batch_end(epoch, b)
            logs = {"loss": loss_sum / n}
            if classify:
                logs["accuracy"] = correct / n
            if validation_data is not None:
                val_loss, val_accuracy = self.evaluate(*validation_data, loss=loss)
                logs["val_loss"] = val_loss
                if classify:
                    logs["val_accuracy"] = val_accuracy
            for key, value in logs.items():
                history[key].append(float(value))
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
        for callback in callbacks:
            callback.on_train_end(history)
        return history

    def predict(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The last layer's output in inference mode (logits if the model ends in Dense)."""
        X = np.asarray(X)
        if len(X) == 0:
            raise InvalidInputError("predict needs at least one sample")
        # Batches bound the memory of wide layers and im2col on large inputs.
        parts = [
            self.forward(X[start : start + batch_size], training=False)
            for start in range(0, len(X), batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def evaluate(
        self, X: np.ndarray, y: np.ndarray, loss: Loss, batch_size: int = 1024
    ) -> tuple[float, float]:
        """(loss, accuracy) in inference mode; accuracy is NaN for a non-classification loss."""
        y = np.asarray(y)
        y_pred = self.predict(X, batch_size=batch_size)
        value = float(loss.forward(y_pred, y))
        if not _is_classification(loss):
            return value, float("nan")
        return value, float(accuracy(y_pred, y))

    # ------------------------------------------------------------------ weights

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters by name, ``layers.{i}.{weight,bias}``; the arrays themselves, not copies."""
        return {
            f"layers.{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in layer.params.items()
        }

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy ``state`` into the parameters in place (their dtype is kept).

        strict: every parameter must be given and no other name may appear.
        """
        own = self.state_dict()
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise InvalidInputError(
                    f"state dict does not match the model: missing {missing or 'none'}, "
                    f"unexpected {unexpected or 'none'}"
                )
        for name, value in state.items():
            if name not in own:
                continue
            value = np.asarray(value)
            if value.shape != own[name].shape:
                raise InvalidInputError(
                    f"{name} has shape {value.shape} in the state dict but "
                    f"{own[name].shape} in the model"
                )
            np.copyto(own[name], value, casting="same_kind")

    def astype(self, dtype: DTypeLike) -> Model:
        """Cast every parameter and gradient to ``dtype`` in place; returns the model."""
        dtype = np.dtype(dtype)
        for layer in self.layers:
            for store in (layer.params, layer.grads):
                for name in store:
                    store[name] = store[name].astype(dtype)
            if hasattr(layer, "dtype"):
                layer.dtype = dtype
        return self

    def architecture(self) -> list[dict[str, Any]]:
        """The layers as ``{"type": class name, "config": constructor arguments}``."""
        return [{"type": type(layer).__name__, "config": layer.config()} for layer in self.layers]

    @classmethod
    def from_architecture(cls, architecture: list[dict[str, Any]]) -> Model:
        """Build a model (freshly initialised) from ``architecture()``'s output."""
        layers = []
        for i, spec in enumerate(architecture):
            if not isinstance(spec, dict) or "type" not in spec:
                raise InvalidInputError(f"layer {i} of the architecture has no type: {spec!r}")
            layer_cls = _layer_class(spec["type"])
            try:
                layers.append(layer_cls(**spec.get("config", {})))
            except TypeError as exc:
                raise InvalidInputError(
                    f"layer {i} ({spec['type']}) cannot be built from {spec.get('config')}: {exc}"
                ) from exc
        return cls(layers)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights and the architecture as one safetensors file, atomically.

        The file is written next to its destination and renamed over it, so a reader never
        sees half a file and a crash leaves the old file intact.
        """
        from safetensors.numpy import save as safetensors_bytes

        path = Path(path)
        metadata = {
            "format": "np",
            ARCHITECTURE_KEY: json.dumps(
                {"version": FORMAT_VERSION, "layers": self.architecture()}, default=_json_default
            ),
        }
        tensors = {k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}
        payload = safetensors_bytes(tensors, metadata=metadata)
        with atomic_output(path) as handle:
            handle.write(payload)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model:
        """Rebuild a model written by ``save``; a missing or bad file raises ModelFileError."""
        tensors, metadata = _read_safetensors(Path(path))
        raw = metadata.get(ARCHITECTURE_KEY)
        if raw is None:
            raise ModelFileError(
                f"{path} holds tensors but no engine architecture (metadata key "
                f"{ARCHITECTURE_KEY!r}); only files written by Model.save can be loaded as a Model"
            )
        try:
            spec = json.loads(raw)
            model = cls.from_architecture(spec["layers"])
            model.load_state_dict(tensors, strict=True)
        except (ValueError, KeyError, TypeError, InvalidInputError) as exc:
            raise ModelFileError(f"{path} has an unusable engine architecture: {exc}") from exc
        return model


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load an engine model written by ``Model.save``."""
    return Model.load(path)


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    if not path.exists():
        raise ModelFileError(f"no model file at {path}; check the path")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file; give the path of a .safetensors file")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own (Rust) error types for bad files.
        raise ModelFileError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or "
            f"of another format — write it again with Model.save"
        ) from exc
    return tensors, metadata


def _layer_class(name: str) -> type[Layer]:
    for module_name in _LAYER_MODULES:
        module = importlib.import_module(module_name)
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, Layer):
            return found
    raise InvalidInputError(f"unknown layer type {name!r}; this engine has no such layer")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a model's architecture")


def _is_classification(loss: Loss) -> bool:
    return isinstance(loss, CategoricalCrossEntropy | SoftmaxCrossEntropy | BinaryCrossEntropy)


def _ends_in_softmax_cce(model: Model, loss: Loss) -> bool:
    return (
        bool(model.layers)
        and isinstance(model.layers[-1], Softmax)
        and isinstance(loss, CategoricalCrossEntropy)
    )
