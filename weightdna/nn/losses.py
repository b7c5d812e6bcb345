"""Losses (batch means) and the accuracy metric (seeds 001 and 002)."""

from __future__ import annotations

import numpy as np

from weightdna.errors import InvalidInputError
from weightdna.nn.activations import softmax
from weightdna.nn.base import Loss

# Predictions are clipped to [EPS, 1 − EPS] before a log; 1e-7 stays representable next to 1
# in float32 (1 − 1e-7 rounds to 1 − 2⁻²³), so the logs are finite in both precisions.
EPS = 1e-7


class MeanSquaredError(Loss):
    """mean((y − ŷ)²) over every element; ∂/∂ŷ = −2(y − ŷ)/n with n = number of elements.

    The mean is over all elements, not only over samples (as ``torch.nn.MSELoss()``), so the
    gradient divides by the element count n = N·outputs; seed 001's ``len(y_true)`` is the
    same for a single output.
    """

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        diff = y_pred - _match_shape(y_true, y_pred)
        return float(np.mean(diff * diff))

    def backward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        y_true = _match_shape(y_true, y_pred)
        dinputs = -2 * (y_true - y_pred) / y_pred.size
        self.dinputs = dinputs.astype(y_pred.dtype, copy=False)
        return self.dinputs


class BinaryCrossEntropy(Loss):
    """−mean(y log p + (1 − y) log(1 − p)) over every element, p clipped to [eps, 1 − eps].

    Takes probabilities (e.g. after Sigmoid); finite even at predictions of exactly 0 and 1.
    """

    def __init__(self, eps: float = EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        y_true = _match_shape(y_true, y_pred)
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        losses = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))
        return float(np.mean(losses))

    def backward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        y_true = _match_shape(y_true, y_pred)
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        dinputs = (-(y_true / p) + (1 - y_true) / (1 - p)) / y_pred.size
        self.dinputs = dinputs.astype(y_pred.dtype, copy=False)
        return self.dinputs


class CategoricalCrossEntropy(Loss):
    """−mean over samples of Σ y log p; y_true integer labels (N,) or one-hot (N, K).

    Takes probabilities (e.g. after Softmax), clipped to [eps, 1 − eps].
    """

    def __init__(self, eps: float = EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        labels = _integer_labels(y_true, y_pred)
        if labels is not None:
            picked = p[np.arange(len(p)), labels]
            return float(-np.mean(np.log(picked)))
        return float(-np.mean(np.sum(y_true * np.log(p), axis=1)))

    def backward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        onehot = _one_hot_like(y_true, y_pred)
        dinputs = -onehot / p / len(y_pred)
        self.dinputs = dinputs.astype(y_pred.dtype, copy=False)
        return self.dinputs


class SoftmaxCrossEntropy(Loss):
    """Softmax and categorical cross-entropy fused: takes logits; gradient (P − y)/N.

    The log-probabilities come from a log-sum-exp with the row maximum subtracted, so the
    loss is finite for any finite logits without clipping. ``probabilities`` keeps the
    softmax of the last forward.
    """

    def __init__(self) -> None:
        super().__init__()
        self.probabilities: np.ndarray | None = None
        self._logits: np.ndarray | None = None

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        shifted = y_pred - np.max(y_pred, axis=1, keepdims=True)
        exp = np.exp(shifted)
        sums = np.sum(exp, axis=1, keepdims=True)
        self.probabilities = exp / sums
        self._logits = y_pred
        log_p = shifted - np.log(sums)
        labels = _integer_labels(y_true, y_pred)
        if labels is not None:
            return float(-np.mean(log_p[np.arange(len(log_p)), labels]))
        return float(-np.mean(np.sum(y_true * log_p, axis=1)))

    def backward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        # Reuse the forward's softmax when backward is called on the same logits array.
        if self._logits is not y_pred or self.probabilities is None:
            self.probabilities = softmax(y_pred)
            self._logits = y_pred
        self.dinputs = softmax_cross_entropy_gradient(self.probabilities, y_true)
        return self.dinputs


def accuracy(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """Fraction of correct predictions.

    y_pred: class scores or probabilities (N, K) with K > 1 (the argmax is the prediction);
    or (N,)/(N, 1) probabilities of a binary problem (thresholded at 0.5); or integer class
    labels (N,). y_true: integer labels (N,) or one-hot (N, K); binary targets 0/1.
    """
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_pred.ndim == 2 and y_pred.shape[1] > 1:
        predicted = np.argmax(y_pred, axis=1)
        labels = _integer_labels(y_true, y_pred)
        if labels is None:
            labels = np.argmax(y_true, axis=1)
    else:
        y_pred = y_pred.reshape(len(y_pred))
        labels = y_true.reshape(len(y_true))
        is_integer = np.issubdtype(y_pred.dtype, np.integer)
        predicted = y_pred if is_integer else (y_pred > 0.5).astype(labels.dtype)
    if len(predicted) != len(labels):
        raise InvalidInputError(
            f"accuracy needs as many labels as predictions, got {len(labels)} and {len(predicted)}"
        )
    return float(np.mean(predicted == labels))


def _match_shape(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    # (N,) targets against (N, 1) predictions would broadcast to (N, N) silently.
    y_true = np.asarray(y_true)
    if y_true.shape == y_pred.shape:
        return y_true
    if y_true.size == y_pred.size:
        return y_true.reshape(y_pred.shape)
    raise InvalidInputError(
        f"targets of shape {y_true.shape} do not match predictions of shape {y_pred.shape}"
    )


def softmax_cross_entropy_gradient(probabilities: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """(P − y)/N, the gradient of softmax + cross-entropy w.r.t. the logits (integer or
    one-hot labels); also the fused path of a model ending in Softmax under CCE."""
    n = len(probabilities)
    labels = _integer_labels(y_true, probabilities)
    if labels is not None:
        dinputs = probabilities.copy()
        dinputs[np.arange(n), labels] -= 1
    else:
        dinputs = (probabilities - y_true).astype(probabilities.dtype, copy=False)
    dinputs /= n
    return dinputs


def _integer_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray | None:
    """y_true as an integer label vector, or None when it is one-hot like y_pred."""
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape == y_pred.shape:
        return None
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.ndim == 1 and len(y_true) == len(y_pred):
        return y_true.astype(np.intp, copy=False)
    raise InvalidInputError(
        f"labels must be integers of shape ({len(y_pred)},) or one-hot of shape "
        f"{y_pred.shape}, got shape {y_true.shape}"
    )


def _one_hot_like(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    labels = _integer_labels(y_true, y_pred)
    if labels is None:
        return y_true
    onehot = np.zeros_like(y_pred)
    onehot[np.arange(len(y_pred)), labels] = 1
    return onehot
