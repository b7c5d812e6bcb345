"""Convolution and pooling layers on NCHW batches (seed 003), laid out as PyTorch lays them.

``Conv2D`` computes what deep learning calls convolution and mathematics calls
cross-correlation: the kernel slides over the input unflipped (see
``weightdna.nn.convolution`` for the difference). It is vectorised as im2col: the
receptive fields are gathered once, channels-last, into a contiguous matrix, and the layer
is one BLAS matmul forward and two backward (the weight gradient, and the input gradient
as a transposed correlation). Pooling loops over the kh·kw kernel offsets only, each step
a strided view of the whole batch; nothing loops over samples or pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import DTypeLike

from weightdna.errors import InvalidInputError
from weightdna.nn.base import Layer
from weightdna.nn.initializers import RngLike, initialize, make_rng

Pair = int | tuple[int, int]

_CONV_INITS = ("he", "xavier")


class Conv2D(Layer):
    """2-D cross-correlation with stride and zero padding, matching ``torch.nn.Conv2d``.

    ``output[n, o, i, j] = bias[o] + Σ_{c, u, v} weight[o, c, u, v] ·
    padded[n, c, i·sh + u, j·sw + v]`` for inputs (N, C_in, H, W); ``params["weight"]`` is
    (C_out, C_in, kh, kw) and ``params["bias"]`` is (C_out,), as in PyTorch.

    kernel_size, stride, padding: an int or an (height, width) pair; padding is zeros on
    both sides of each spatial axis.
    init: "he" or "xavier" normal, with PyTorch's fans (fan-in = C_in·kh·kw, fan-out =
    C_out·kh·kw); biases start at zero.
    l2: λ of the penalty ``λ Σ W²`` (gradient ``2λW``) on the weight only, as ``Dense``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair = 0,
        init: str = "he",
        l2: float = 0.0,
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise InvalidInputError(
                f"Conv2D needs positive channel counts, got in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        if init not in _CONV_INITS:
            raise InvalidInputError(
                f"unknown init {init!r} for Conv2D; choose one of {list(_CONV_INITS)}"
            )
        if l2 < 0:
            raise InvalidInputError(f"l2 must be >= 0, got {l2}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", minimum=1)
        self.stride = _pair(stride, "stride", minimum=1)
        self.padding = _pair(padding, "padding", minimum=0)
        self.init = init
        self.l2 = float(l2)
        self.dtype = np.dtype(dtype)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        weight = initialize(init, shape, rng=make_rng(rng), dtype=self.dtype)
        bias = np.zeros(self.out_channels, dtype=self.dtype)
        self.params = {"weight": weight, "bias": bias}
        self.grads = {"weight": np.zeros_like(weight), "bias": np.zeros_like(bias)}
        self.input_shape: tuple[int, ...] | None = None
        self.columns: np.ndarray | None = None

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        """Cross-correlate (N, C_in, H, W) inputs with the kernels: (N, C_out, H_out, W_out)."""
        _check_nchw(inputs, self.in_channels, "Conv2D")
        n = inputs.shape[0]
        self.input_shape = inputs.shape
        columns, (out_h, out_w) = _im2col(inputs, self.kernel_size, self.stride, self.padding)
        self.columns = columns
        output = columns @ self._weight_matrix().T
        output += self.params["bias"]
        # The product is channels-last (N·H_out·W_out, C_out); the NCHW result is a
        # transposed view of it. Element-wise NumPy ops keep that memory order, so the next
        # Conv2D's channels-last gather and this layer's backward need no extra copy.
        self.output = output.reshape(n, out_h, out_w, self.out_channels).transpose(0, 3, 1, 2)
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        """dW = δᵀ·columns, db = Σδ over batch and pixels, dX = δ correlated with rotated W."""
        weight = self.params["weight"]
        # Channels-last rows, matching the rows of self.columns.
        delta = dvalues.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
        out, c_in, kh, kw = weight.shape
        dweight = (delta.T @ self.columns).reshape(out, kh, kw, c_in).transpose(0, 3, 1, 2)
        dweight = np.ascontiguousarray(dweight)
        if self.l2 > 0:
            dweight += 2.0 * self.l2 * weight
        self.grads["weight"] = dweight
        self.grads["bias"] = delta.sum(axis=0)
        self.dinputs = _input_gradient(
            delta.reshape(dvalues.shape[0], dvalues.shape[2], dvalues.shape[3], -1),
            weight,
            self.input_shape,
            self.stride,
            self.padding,
        )
        return self.dinputs

    def _weight_matrix(self) -> np.ndarray:
        """The weight as (C_out, kh·kw·C_in), columns in the (u, v, c) order of ``_im2col``."""
        weight = self.params["weight"]
        return weight.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)

    def regularization_loss(self) -> float:
        """λ Σ W² (zero when l2 is 0)."""
        if self.l2 == 0:
            return 0.0
        weight = self.params["weight"]
        return self.l2 * float(np.sum(weight * weight))

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "init": self.init,
            "l2": self.l2,
            "dtype": self.dtype.name,
        }


class MaxPool2D(Layer):
    """Max over each kernel window of NCHW inputs, matching ``torch.nn.MaxPool2d``.

    stride defaults to kernel_size; padding pads with −∞ (it never wins the max). The
    gradient goes to the first maximum of each window in row-major order, as in PyTorch;
    where windows overlap, a pixel that wins several collects all their gradients.
    """

    def __init__(
        self, kernel_size: Pair = 2, stride: Pair | None = None, padding: Pair = 0
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = _pool_geometry(kernel_size, stride, padding)
        self.padded: np.ndarray | None = None

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H_out, W_out), the maximum of each window."""
        _check_nchw(inputs, None, "MaxPool2D")
        padded = _pad(inputs, self.padding, value=-np.inf)
        self.padded = padded
        # A running maximum over the kh·kw window offsets, each a strided view of the whole
        # batch. Which offset won is found in backward, so inference does not pay for it.
        views = _offset_views(padded, self.kernel_size, self.stride)
        best = next(views).copy(order="K")
        for view in views:
            np.maximum(best, view, out=best)
        self.output = best
        return best

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        """Route each window's gradient to its maximum (the first, in row-major order)."""
        # Work in the memory order of the input (channels-last after a Conv2D), so that
        # the strided views stay cheap and the Conv2D before gets a gradient it reads freely.
        grad = np.empty_like(self.output, dtype=dvalues.dtype)
        grad[...] = dvalues
        grid = np.zeros_like(self.padded, dtype=dvalues.dtype)
        unclaimed = np.ones_like(self.output, dtype=bool)
        disjoint = all(s >= k for s, k in zip(self.stride, self.kernel_size, strict=True))
        views = _offset_views(self.padded, self.kernel_size, self.stride)
        targets = _offset_views(grid, self.kernel_size, self.stride)
        for view, target in zip(views, targets, strict=True):
            hit = view == self.output
            hit &= unclaimed  # ties: an earlier offset already took this window
            unclaimed ^= hit
            if disjoint:
                np.copyto(target, grad, where=hit)
            else:
                target += np.where(hit, grad, 0)
        self.dinputs = _crop_padding(grid, self.padding)
        return self.dinputs

    def config(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}


class AvgPool2D(Layer):
    """Mean over each kernel window of NCHW inputs, matching ``torch.nn.AvgPool2d``.

    stride defaults to kernel_size; padding is zeros that count in the mean (PyTorch's
    default ``count_include_pad=True``), so every window divides by kh·kw.
    """

    def __init__(
        self, kernel_size: Pair = 2, stride: Pair | None = None, padding: Pair = 0
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = _pool_geometry(kernel_size, stride, padding)
        self.padded_shape: tuple[int, ...] | None = None

    def forward(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H_out, W_out), the mean of each window."""
        _check_nchw(inputs, None, "AvgPool2D")
        padded = _pad(inputs, self.padding, value=0)
        self.padded_shape = padded.shape
        views = _offset_views(padded, self.kernel_size, self.stride)
        total = next(views).copy(order="K")
        for view in views:
            total += view
        self.output = total / (self.kernel_size[0] * self.kernel_size[1])
        return self.output

    def backward(self, dvalues: np.ndarray) -> np.ndarray:
        """Spread each window's gradient evenly over its kh·kw pixels."""
        share = dvalues / (self.kernel_size[0] * self.kernel_size[1])
        grid = np.zeros(self.padded_shape, dtype=share.dtype)
        for view in _offset_views(grid, self.kernel_size, self.stride):
            view += share
        self.dinputs = _crop_padding(grid, self.padding)
        return self.dinputs

    def config(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}


def _pool_geometry(
    kernel_size: Pair, stride: Pair | None, padding: Pair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = _pair(kernel_size, "kernel_size", minimum=1)
    steps = kernel if stride is None else _pair(stride, "stride", minimum=1)
    pads = _pair(padding, "padding", minimum=0)
    if any(2 * p > k for p, k in zip(pads, kernel, strict=True)):
        raise InvalidInputError(
            f"padding {pads} must be at most half of kernel_size {kernel} (as in PyTorch), "
            f"or some windows would hold only padding"
        )
    return kernel, steps, pads


def _offset_views(
    padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]
) -> Iterator[np.ndarray]:
    """For each kernel offset (u, v), row-major, the (N, C, H_out, W_out) view of the pixels
    at that offset in every window. Writing into a view writes into ``padded``."""
    height, width = padded.shape[2:]
    kh, kw = kernel
    sh, sw = stride
    if height < kh or width < kw:
        raise InvalidInputError(
            f"pooling window {kernel} is larger than the padded input ({height}, {width})"
        )
    out_h = (height - kh) // sh + 1
    out_w = (width - kw) // sw + 1
    for u in range(kh):
        for v in range(kw):
            yield padded[:, :, u : u + sh * (out_h - 1) + 1 : sh, v : v + sw * (out_w - 1) + 1 : sw]


def _crop_padding(grid: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    return grid[:, :, ph : grid.shape[2] - ph, pw : grid.shape[3] - pw]


def _pair(value: Pair, name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < minimum for v in pair):
        raise InvalidInputError(
            f"{name} must be an int >= {minimum} or a pair of them, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def _check_nchw(inputs: np.ndarray, channels: int | None, layer: str) -> None:
    if inputs.ndim != 4 or (channels is not None and inputs.shape[1] != channels):
        expected = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise InvalidInputError(
            f"{layer} expects NCHW inputs shaped {expected}, got shape {inputs.shape}"
        )


def _pad(inputs: np.ndarray, padding: tuple[int, int], value: float) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return inputs
    n, c, h, w = inputs.shape
    # Writing into a preallocated buffer is several times faster than np.pad here.
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=inputs.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = inputs
    return padded


def _im2col(
    inputs: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """Receptive fields of NCHW inputs as rows: (N·H_out·W_out, kh·kw·C), rows ordered
    (n, i, j) and columns (u, v, c)."""
    n, c, height, width = inputs.shape
    ph, pw = padding
    if height + 2 * ph < kernel[0] or width + 2 * pw < kernel[1]:
        raise InvalidInputError(
            f"kernel {kernel} is larger than the padded input ({height + 2 * ph}, {width + 2 * pw})"
        )
    # Channels-last: with C innermost every run the gather copies is contiguous, which makes
    # it about ten times faster than gathering (c, u, v) rows from NCHW memory.
    padded = np.zeros((n, height + 2 * ph, width + 2 * pw, c), dtype=inputs.dtype)
    padded[:, ph : ph + height, pw : pw + width, :] = inputs.transpose(0, 2, 3, 1)
    return _patches(padded, kernel, stride)


def _patches(
    padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """(N·H_out·W_out, kh·kw·C) windows of a channels-last (N, H, W, C) array."""
    n = padded.shape[0]
    windows = sliding_window_view(padded, kernel, axis=(1, 2))[:, :: stride[0], :: stride[1]]
    out_h, out_w = windows.shape[1:3]
    rows = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * out_h * out_w, -1)
    return rows, (out_h, out_w)


def _input_gradient(
    delta: np.ndarray,
    weight: np.ndarray,
    input_shape: tuple[int, ...],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """dL/dX of a strided, padded cross-correlation, as a transposed correlation.

    delta is dL/dY channels-last, (N, H_out, W_out, C_out). Spread it out by the stride
    (zeros between rows and columns), pad it by k − 1 − p (plus the input rows and columns
    the last window did not reach), and cross-correlate it at stride 1 with the kernel
    rotated by 180° and its channel axes swapped: one gather and one matmul, which measured
    about twice as fast as adding the kh·kw column blocks back one offset at a time.
    Returns NCHW logically, channels-last in memory (a transposed view).
    """
    n, c, height, width = input_shape
    out_channels, _, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    _, out_h, out_w, _ = delta.shape
    top, left = kh - 1 - ph, kw - 1 - pw
    bottom = top + (height + 2 * ph - kh) % sh
    right = left + (width + 2 * pw - kw) % sw
    spread_h, spread_w = (out_h - 1) * sh + 1, (out_w - 1) * sw + 1
    # Padding beyond k − 1 makes top/left negative: build with the positive part, then crop.
    t, b, l, r = (max(v, 0) for v in (top, bottom, left, right))
    grid = np.zeros((n, t + spread_h + b, l + spread_w + r, out_channels), dtype=delta.dtype)
    grid[:, t : t + spread_h : sh, l : l + spread_w : sw, :] = delta
    grid = grid[
        :,
        max(-top, 0) : grid.shape[1] - max(-bottom, 0),
        max(-left, 0) : grid.shape[2] - max(-right, 0),
    ]
    rows, _ = _patches(grid, (kh, kw), (1, 1))
    rotated = weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * out_channels, c)
    return (rows @ rotated).reshape(n, height, width, c).transpose(0, 3, 1, 2)
