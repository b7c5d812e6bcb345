"""Test accuracy of an engine digits model with its original and its restored weights."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from weightdna.data import load_digits
from weightdna.nn.conv import Conv2D
from weightdna.nn.model import Model, load_model
from weightdna.train import single_blas_thread


def as_model(model: Model | str | os.PathLike[str]) -> Model:
    """``model`` itself, or the engine model saved at that path."""
    return model if isinstance(model, Model) else load_model(model)


def takes_images(model: Model) -> bool:
    """Whether the model reads (N, 1, 8, 8) images (it starts with a convolution)."""
    return bool(model.layers) and isinstance(model.layers[0], Conv2D)


def as_array(value: Any) -> np.ndarray:
    """A NumPy array from a NumPy array or a torch tensor (bfloat16 widened to float32)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if not value.dtype.is_floating_point or value.dtype.itemsize >= 4:
            return value.numpy()
        return value.float().numpy()
    return np.asarray(value)


def with_weights(model: Model, state_dict: Mapping[str, Any]) -> Model:
    """A copy of ``model`` holding ``state_dict`` (every parameter, cast to its dtype)."""
    restored = copy.deepcopy(model)
    restored.load_state_dict({name: as_array(v) for name, v in state_dict.items()}, strict=True)
    return restored


def accuracy_of_restored(
    model: Model | str | os.PathLike[str],
    restored_state_dict: Mapping[str, Any],
    seed: int = 0,
) -> dict[str, float]:
    """Held-out digits accuracy of ``model`` and of the same model with the restored weights.

    seed: the train/test split's seed (the training recipes' seed). ``delta_points`` is
    restored minus original in percentage points; ``agreement`` is the fraction of test
    images on which both predict the same class.
    """
    original = as_model(model)
    restored = with_weights(original, restored_state_dict)
    _, X_test, _, y_test = load_digits(seed=seed, image=takes_images(original))
    with single_blas_thread():
        before = original.predict(X_test).argmax(axis=1)
        after = restored.predict(X_test).argmax(axis=1)
    original_accuracy = float(np.mean(before == y_test))
    restored_accuracy = float(np.mean(after == y_test))
    return {
        "test_images": len(y_test),
        "original_accuracy": original_accuracy,
        "restored_accuracy": restored_accuracy,
        "delta_points": 100.0 * (restored_accuracy - original_accuracy),
        "agreement": float(np.mean(before == after)),
    }
