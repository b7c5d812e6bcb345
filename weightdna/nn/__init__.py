"""The from-scratch NumPy neural-network engine (seeds 001-004).

Every layer follows the contract in ``base.py``: ``forward(inputs, training)`` keeps what
backward needs, ``backward(dvalues)`` sets ``dinputs`` and the entries of ``grads``.
Parameters use PyTorch's names and layouts, so a saved engine model reads like any other
model file. This package needs only NumPy (and safetensors, imported lazily, to save).
"""

from weightdna.nn.activations import ReLU, Sigmoid, Sine, Softmax, Tanh
from weightdna.nn.base import Layer, Loss
from weightdna.nn.conv import AvgPool2D, Conv2D, MaxPool2D
from weightdna.nn.convolution import convolve, cross_correlate, flip, forward_difference
from weightdna.nn.layers import Dense, Dropout, Flatten
from weightdna.nn.losses import (
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    accuracy,
)
from weightdna.nn.model import Callback, Model, load_model
from weightdna.nn.optimizers import SGD, Adam, Optimizer

__all__ = [
    "SGD",
    "Adam",
    "AvgPool2D",
    "BinaryCrossEntropy",
    "Callback",
    "CategoricalCrossEntropy",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "Loss",
    "MaxPool2D",
    "MeanSquaredError",
    "Model",
    "Optimizer",
    "ReLU",
    "Sigmoid",
    "Sine",
    "Softmax",
    "SoftmaxCrossEntropy",
    "Tanh",
    "accuracy",
    "convolve",
    "cross_correlate",
    "flip",
    "forward_difference",
    "load_model",
]
