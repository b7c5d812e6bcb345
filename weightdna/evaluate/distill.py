"""Calibration inputs distilled from an engine classifier itself, with no data.

Data-free quantisation (ZeroQ, DeepInversion) makes inputs the network treats as its
own: start from noise and optimise the inputs, not the weights, until the network is
confident of a chosen class for each one, under a prior that keeps them image-like. The
engine's models have no BatchNorm statistics to match, so the priors are the input range
and smoothness:

* every input lies in [0, 1] (the optimised variable is its logit; the engine's digits
  models read pixel values in [0, 1]);
* an image pays ``SMOOTHNESS`` × the sum of squared differences between neighbouring
  pixels (total variation): the input of a Conv2D first layer, and a flat input (a Dense
  first layer) of a square number of values, read as a square image (the digits MLP
  reads 8×8 images row by row; GPTQ on its distilled inputs lost 0.61 points at 3 bits
  per weight over ten seeds without this prior, 0.25 with it, plain rounding 0.58); any
  other flat input pays a tenth of that weight for its distance from 0.5.

``SAMPLES`` inputs, their classes in turn (0, 1, …, K−1, 0, …), ``STEPS`` Adam steps of
``LEARNING_RATE`` on the cross-entropy of those classes. GPTQ on these inputs keeps the
digits CNN working at 2 bits per weight where plain rounding does not (BENCHMARKS.md,
"Function on the model panel"): `weightdna compress` uses them by default for an engine
model under a whole-model bits-per-weight target (`weightdna.evaluate.calibration.
calibration_mode`).
"""

from __future__ import annotations

import copy
import functools
import math
import os
from pathlib import Path

import numpy as np

from weightdna.errors import InvalidInputError
from weightdna.nn.activations import Softmax
from weightdna.nn.conv import Conv2D
from weightdna.nn.layers import Dense
from weightdna.nn.losses import CategoricalCrossEntropy, SoftmaxCrossEntropy
from weightdna.nn.model import Model
from weightdna.train import single_blas_thread

SAMPLES = 128
STEPS = 150
LEARNING_RATE = 0.1
SMOOTHNESS = 0.05
IMAGE_SIDE = 8  # the engine's convolutional models read 8×8 images


def input_shape(model: Model) -> tuple[int, ...]:
    """The shape of one input of ``model``: (in_features,) after a Dense first layer,
    (in_channels, 8, 8) after a Conv2D one. Raises InvalidInputError for any other."""
    first = model.layers[0] if model.layers else None
    if isinstance(first, Dense):
        return (first.in_features,)
    if isinstance(first, Conv2D):
        return (first.in_channels, IMAGE_SIDE, IMAGE_SIDE)
    raise InvalidInputError("distilled inputs need an engine model whose first layer is "
                            "Dense or Conv2D.")


def _smoothness_gradient(x: np.ndarray) -> np.ndarray:
    """The gradient of Σ squared neighbour differences over the last two axes."""
    across, down = np.diff(x, axis=-1), np.diff(x, axis=-2)
    grad = np.zeros_like(x)
    grad[..., :, 1:] += 2 * across
    grad[..., :, :-1] -= 2 * across
    grad[..., 1:, :] += 2 * down
    grad[..., :-1, :] -= 2 * down
    return grad


def distilled_inputs(model: Model, samples: int = SAMPLES, steps: int = STEPS,
                     seed: int = 0) -> np.ndarray:
    """``samples`` inputs of ``model`` (float32, in [0, 1]) on which it is confident of
    the classes 0, 1, …, K−1 in turn (module docstring); ``model`` is not changed."""
    if samples < 1 or steps < 0:
        raise InvalidInputError("distilled inputs need samples ≥ 1 and steps ≥ 0.")
    shape = input_shape(model)
    net = copy.deepcopy(model)  # its backward keeps gradients and activations
    ends_in_softmax = bool(net.layers) and isinstance(net.layers[-1], Softmax)
    loss = CategoricalCrossEntropy() if ends_in_softmax else SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (samples, *shape)).astype(np.float32)
    with single_blas_thread():
        classes = net.forward(np.full((1, *shape), 0.5, np.float32)).shape[1]
        labels = np.arange(samples) % classes
        first, second = np.zeros_like(logits), np.zeros_like(logits)
        for t in range(1, steps + 1):
            x = 1.0 / (1.0 + np.exp(-logits))
            out = net.forward(x)
            loss.forward(out, labels)
            grad = net.backward(loss, out, labels) * samples  # per input, not per batch
            if len(shape) == 3:
                grad = grad + SMOOTHNESS * _smoothness_gradient(x)
            elif math.isqrt(shape[0]) ** 2 == shape[0]:
                side = math.isqrt(shape[0])
                square = x.reshape(-1, side, side)
                grad = grad + SMOOTHNESS * _smoothness_gradient(square).reshape(x.shape)
            else:
                grad = grad + 0.1 * SMOOTHNESS * 2.0 * (x - 0.5)
            grad = grad * x * (1.0 - x)
            first = 0.9 * first + 0.1 * grad
            second = 0.999 * second + 0.001 * grad * grad
            logits -= (LEARNING_RATE * (first / (1 - 0.9**t))
                       / (np.sqrt(second / (1 - 0.999**t)) + 1e-8)).astype(np.float32)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _distilled_for(path: str, mtime_ns: int, size: int) -> np.ndarray:
    from weightdna.nn.model import load_model

    inputs = distilled_inputs(load_model(path))
    inputs.setflags(write=False)
    return inputs


def distilled_for_file(path: str | os.PathLike[str]) -> np.ndarray:
    """`distilled_inputs` of the engine model file at ``path`` (read-only), made once per
    file content for both the sensitivities and the calibration of one compress."""
    stat = os.stat(path)
    return _distilled_for(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)
