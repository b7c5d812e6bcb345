"""Conv2D, MaxPool2D and AvgPool2D against PyTorch autograd and finite differences (float64).

PyTorch's ``conv2d``/``max_pool2d``/``avg_pool2d`` are the judge of forward and backward
(1e-6 relative, the helpers of ``test_nn_torch``); central differences check the same
gradients independently (``test_nn_gradients``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_nn_gradients import check_layer
from test_nn_torch import close, compare_layer, leaf

from weightdna.errors import InvalidInputError
from weightdna.nn.conv import AvgPool2D, Conv2D, MaxPool2D
from weightdna.nn.convolution import convolve, cross_correlate, flip

# (batch, in_channels, height, width, out_channels, kernel_size, stride, padding)
CONV_CASES = [
    (2, 3, 7, 7, 4, 3, 1, 0),
    (2, 3, 7, 7, 4, 3, 1, 1),
    (2, 3, 8, 6, 5, 3, 2, 1),
    (3, 2, 9, 9, 3, 5, 2, 2),
    (2, 1, 8, 8, 16, 3, 1, 1),  # the first layer of the digits CNN
    (2, 3, 6, 6, 2, 4, 2, 0),  # stride 2 leaves the last row and column unused
    (1, 2, 5, 5, 2, 1, 1, 0),  # 1×1 kernel: a per-pixel Dense
    (2, 4, 6, 7, 3, (2, 3), (1, 2), (0, 1)),  # non-square kernel, stride and padding
    (2, 2, 7, 5, 3, (3, 1), (2, 1), (2, 0)),
    (2, 2, 5, 4, 3, (1, 2), (2, 1), (2, 1)),  # padding beyond kernel − 1
    (1, 3, 8, 7, 2, 3, 3, 1),  # stride 3: rows and columns the last window does not reach
]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def make_conv(
    rng: np.random.Generator, c_in: int, c_out: int, k: object, s: object, p: object, l2=0.0
) -> Conv2D:
    layer = Conv2D(c_in, c_out, k, stride=s, padding=p, l2=l2, rng=rng, dtype=np.float64)
    # A non-zero bias, so that a wrong bias gradient or broadcast shows.
    layer.params["bias"] = rng.normal(size=c_out)
    return layer


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(rng: np.random.Generator, case: tuple) -> None:
    n, c_in, h, w, c_out, k, s, p = case
    layer = make_conv(rng, c_in, c_out, k, s, p)
    x = rng.normal(size=(n, c_in, h, w))
    reference = F.conv2d(
        torch.as_tensor(x), torch.as_tensor(layer.params["weight"]), stride=s, padding=p
    )
    g = rng.normal(size=tuple(reference.shape))
    compare_layer(layer, lambda t, weight, bias: F.conv2d(t, weight, bias, s, p), x, g)


def test_conv2d_l2_matches_torch_penalty(rng: np.random.Generator) -> None:
    lam = 0.05
    layer = make_conv(rng, 3, 4, 3, 1, 1, l2=lam)
    x = rng.normal(size=(2, 3, 6, 6))
    g = rng.normal(size=(2, 4, 6, 6))
    compare_layer(
        layer,
        lambda t, weight, bias: F.conv2d(t, weight, bias, 1, 1),
        x,
        g,
        extra_loss=lambda weight, bias: lam * torch.sum(weight**2),
    )


@pytest.mark.parametrize("case", CONV_CASES[:4] + CONV_CASES[-2:])
def test_conv2d_finite_differences(rng: np.random.Generator, case: tuple) -> None:
    n, c_in, h, w, c_out, k, s, p = case
    x = rng.normal(size=(min(n, 2), c_in, h, w))
    check_layer(lambda: make_conv(rng, c_in, c_out, k, s, p), x)


def test_conv2d_l2_finite_differences(rng: np.random.Generator) -> None:
    x = rng.normal(size=(2, 2, 5, 5))
    layer = check_layer(lambda: make_conv(rng, 2, 3, 3, 1, 1, l2=0.3), x)
    weight = layer.params["weight"]
    assert layer.regularization_loss() == pytest.approx(0.3 * np.sum(weight**2), rel=1e-12)


def test_conv2d_layout_is_torch_conv2d(rng: np.random.Generator) -> None:
    """params load into torch.nn.Conv2d by name and give the same output."""
    layer = make_conv(rng, 3, 5, (2, 3), (2, 1), (1, 0))
    assert layer.params["weight"].shape == (5, 3, 2, 3)
    assert layer.params["bias"].shape == (5,)
    module = torch.nn.Conv2d(3, 5, (2, 3), stride=(2, 1), padding=(1, 0)).double()
    module.load_state_dict({name: torch.as_tensor(v) for name, v in layer.params.items()})
    x = rng.normal(size=(2, 3, 7, 6))
    close(layer.forward(x), module(torch.as_tensor(x)))


def test_conv2d_is_cross_correlation_not_convolution() -> None:
    """The kernel slides unflipped: a one-hot kernel at (0, 0) reads the top-left pixel."""
    layer = Conv2D(1, 1, 2, dtype=np.float64)
    layer.params["weight"][:] = [[[[1.0, 0.0], [0.0, 0.0]]]]
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(layer.forward(x)[0, 0], [[0.0, 1.0], [3.0, 4.0]])


def test_conv2d_is_the_cross_correlation_of_seed_003(rng: np.random.Generator) -> None:
    """One channel in and out: Conv2D is ``cross_correlate(kernel, image, "valid")``, i.e.
    the true convolution of the image with the flipped kernel."""
    layer = make_conv(rng, 1, 1, (3, 2), 1, 0)
    image = rng.normal(size=(6, 5))
    kernel = layer.params["weight"][0, 0]
    out = layer.forward(image[None, None])[0, 0] - layer.params["bias"][0]
    np.testing.assert_allclose(out, cross_correlate(kernel, image, "valid"), rtol=1e-12)
    np.testing.assert_allclose(out, convolve(flip(kernel), image, "valid"), rtol=1e-12)


def test_stacked_layers_match_torch(rng: np.random.Generator) -> None:
    """Conv → ReLU → Conv → MaxPool, the digits CNN's body, end to end against torch.

    The engine hands channels-last views from layer to layer; this checks that the layouts
    meet correctly in both directions.
    """
    c1 = make_conv(rng, 1, 4, 3, 1, 1)
    c2 = make_conv(rng, 4, 6, 3, 1, 1)
    pool = MaxPool2D(2)
    x = rng.normal(size=(3, 1, 8, 8))
    a = c1.forward(x)
    b = c2.forward(np.maximum(a, 0))
    out = pool.forward(b)
    g = rng.normal(size=out.shape)
    db = pool.backward(g)
    da = c2.backward(db) * (a > 0)
    dx = c1.backward(da)

    tx, w1, b1, w2, b2 = (leaf(v) for v in (x, *c1.params.values(), *c2.params.values()))
    tout = F.max_pool2d(F.conv2d(F.relu(F.conv2d(tx, w1, b1, 1, 1)), w2, b2, 1, 1), 2)
    torch.sum(tout * torch.as_tensor(g)).backward()
    close(out, tout)
    close(dx, tx.grad)
    for engine, reference in [(c1.grads["weight"], w1), (c1.grads["bias"], b1)]:
        close(engine, reference.grad)
    for engine, reference in [(c2.grads["weight"], w2), (c2.grads["bias"], b2)]:
        close(engine, reference.grad)


def test_conv2d_keeps_float32() -> None:
    layer = Conv2D(2, 3, 3, padding=1, rng=0)
    x = np.ones((2, 2, 5, 5), dtype=np.float32)
    out = layer.forward(x)
    layer.backward(np.ones_like(out))
    assert out.dtype == np.float32
    assert layer.dinputs.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())


@pytest.mark.parametrize("init", ["he", "xavier"])
def test_conv2d_init_uses_torch_fans(init: str) -> None:
    weight = Conv2D(16, 64, 3, init=init, rng=0, dtype=np.float64).params["weight"]
    fan_in, fan_out = 16 * 9, 64 * 9
    expected = np.sqrt(2 / fan_in) if init == "he" else np.sqrt(2 / (fan_in + fan_out))
    assert weight.std() == pytest.approx(expected, rel=0.05)


def test_conv2d_config_rebuilds_the_layer() -> None:
    layer = Conv2D(2, 3, (3, 1), stride=2, padding=(1, 0), init="xavier", l2=0.1)
    rebuilt = Conv2D(**layer.config())
    assert rebuilt.config() == layer.config()
    assert rebuilt.params["weight"].shape == (3, 2, 3, 1)


def test_conv2d_rejects_bad_inputs() -> None:
    layer = Conv2D(3, 2, 3)
    with pytest.raises(InvalidInputError, match="NCHW"):
        layer.forward(np.zeros((2, 4, 5, 5)))
    with pytest.raises(InvalidInputError, match="NCHW"):
        layer.forward(np.zeros((3, 5, 5)))
    with pytest.raises(InvalidInputError, match="larger than the padded input"):
        layer.forward(np.zeros((1, 3, 2, 2)))
    with pytest.raises(InvalidInputError, match="stride"):
        Conv2D(3, 2, 3, stride=0)
    with pytest.raises(InvalidInputError, match="init"):
        Conv2D(3, 2, 3, init="siren_first")


# (kernel_size, stride, padding) for pooling; inputs are 7×8, so some windows leave a remainder.
POOL_CASES = [
    (2, None, 0),
    (3, None, 0),
    (3, 1, 1),
    (3, 2, 1),
    ((2, 3), (1, 2), (1, 1)),
    (2, 1, 0),
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize(
    ("layer_class", "torch_fn"), [(MaxPool2D, F.max_pool2d), (AvgPool2D, F.avg_pool2d)]
)
def test_pooling_matches_torch(
    rng: np.random.Generator, case: tuple, layer_class: type, torch_fn: object
) -> None:
    k, s, p = case
    x = rng.normal(size=(2, 3, 7, 8))
    reference = torch_fn(torch.as_tensor(x), k, s, p)
    g = rng.normal(size=tuple(reference.shape))
    compare_layer(layer_class(k, s, p), lambda t: torch_fn(t, k, s, p), x, g)


@pytest.mark.parametrize("stride", [None, 1])
def test_max_pool_breaks_ties_like_torch(rng: np.random.Generator, stride: int | None) -> None:
    """After a ReLU many windows are all zero: the gradient goes to the first maximum."""
    x = np.maximum(rng.integers(-2, 2, size=(2, 3, 6, 6)), 0).astype(np.float64)
    g = rng.normal(size=F.max_pool2d(torch.as_tensor(x), 2, stride).shape)
    compare_layer(MaxPool2D(2, stride), lambda t: F.max_pool2d(t, 2, stride), x, g)


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("layer_class", [MaxPool2D, AvgPool2D])
def test_pooling_finite_differences(
    rng: np.random.Generator, case: tuple, layer_class: type
) -> None:
    k, s, p = case
    # Distinct, well separated values, so that no nudge of h changes a window's maximum.
    x = rng.permutation(2 * 2 * 7 * 8).reshape(2, 2, 7, 8) * 0.01
    check_layer(lambda: layer_class(k, s, p), x.astype(np.float64))


def test_max_pool_on_channels_last_input_returns_matching_gradient(
    rng: np.random.Generator,
) -> None:
    """A transposed (channels-last) input view gives the same values as a contiguous one."""
    x = rng.normal(size=(2, 5, 5, 3))
    view = x.transpose(0, 3, 1, 2)
    pool = MaxPool2D(2, 1)
    out_view = pool.forward(view)
    d_view = pool.backward(np.ones_like(out_view)).copy()
    out = pool.forward(np.ascontiguousarray(view))
    np.testing.assert_array_equal(out_view, out)
    np.testing.assert_array_equal(d_view, pool.backward(np.ones_like(out)))


def test_pooling_rejects_bad_geometry() -> None:
    with pytest.raises(InvalidInputError, match="padding"):
        MaxPool2D(2, padding=2)
    with pytest.raises(InvalidInputError, match="larger than the padded input"):
        AvgPool2D(3).forward(np.zeros((1, 1, 2, 2)))
    assert MaxPool2D(3).config() == {"kernel_size": (3, 3), "stride": (3, 3), "padding": (0, 0)}
