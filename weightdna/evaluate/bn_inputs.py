"""Synthetic image inputs whose first BatchNormalization sees its own running statistics.

The cheapest data-free form of ZeroQ's idea (Cai et al. 2020, "ZeroQ": inputs distilled so
that every BatchNorm's batch statistics match its running ones), without autograd and for
the first BatchNorm only: where an ONNX graph's float image input is read by a ``Conv``
alone whose output a ``BatchNormalization`` alone reads (PaddleOCR's nets, as rapidocr ships
them), its running mean and variance are the statistics of real inputs at that point, and
the inputs are drawn as

    x_c = a_c · n_c(s) + b_c,

per input channel c, n(s) standard-normal noise low-passed by a Gaussian of ``s`` pixels
(``s`` 0: white) and scaled to unit deviation per channel, either one map shared by every
channel (text images are grey: their channels move together) or one per channel. The conv
is linear, so its output per channel k is Σ_c a_c (W_kc ∗ n_c) + b_c (W_kc ∗ 1) + bias_k
(the padding's zeros included); its batch mean and variance are a linear and a quadratic
form in (a, b), fitted to the running mean and deviation by least squares
(``scipy.optimize.least_squares``) for each scale of `SCALES` and each way of sharing, the
best fit kept (`Fit`: the root mean square of the mean's miss in running deviations, and of
the log of the deviation's ratio).

`weightdna.evaluate.onnx_correction` measures its shifts on these where ``inputs`` is
"batchnorm"; a graph without such a first BatchNorm keeps the output check's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Low-pass scales (pixels, a Gaussian's deviation) tried; 0 is white noise.
SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
SHARINGS = ("shared", "per-channel")
# The most input channels fitted (one conv of the noise each): an image has 1, 3 or 4.
MAX_CHANNELS = 16


@dataclass(frozen=True)
class FirstNorm:
    """The graph's float image input ``name`` read by a Conv whose output a
    BatchNormalization reads: the conv's ``weight`` (K, C/group, kh, kw), ``bias`` (K or
    None), ``stride``, ``padding`` (top, left, bottom, right), ``dilation``, ``group``; the
    BatchNorm's running ``mean`` and ``var`` and its ``epsilon``."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    group: int
    mean: np.ndarray
    var: np.ndarray
    epsilon: float


@dataclass(frozen=True)
class Fit:
    """The inputs' law: ``scale``, ``sharing``, per channel ``a`` and ``b``; how well the
    first BatchNorm's batch statistics match its running ones on them: ``mean_miss`` (root
    mean square over its channels of (batch mean − running mean) / running deviation) and
    ``deviation_miss`` (of log(batch deviation / running deviation))."""

    scale: float
    sharing: str
    a: np.ndarray
    b: np.ndarray
    mean_miss: float
    deviation_miss: float

    def describe(self) -> str:
        return (f"BatchNorm-matched inputs (noise low-passed at {self.scale:g} px, "
                f"{self.sharing}; first BatchNorm's mean missed by {self.mean_miss:.3f} of "
                f"its deviation, deviation by {100 * self.deviation_miss:.1f}%)")


def first_norm(model: Any) -> FirstNorm | None:
    """The `FirstNorm` of ``model`` (a ModelProto; its weights initializers or Constant
    nodes), or None where its first float rank-4 input is not read by one Conv (input 0,
    explicit padding) alone whose output one BatchNormalization alone reads."""
    from onnx import helper, numpy_helper

    from weightdna.weights.onnx_format import weight_protos
    from weightdna.weights.roles import sole_batchnorm

    protos = weight_protos(model)
    graph = model.graph
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for value in node.input:
            readers.setdefault(value, []).append(node)
    for spec in graph.input:
        if spec.name in protos:
            continue
        tensor = spec.type.tensor_type
        if tensor.elem_type != 1 or len(tensor.shape.dim) != 4:  # float32, NCHW
            continue
        users = readers.get(spec.name, [])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != spec.name:
            return None
        conv = users[0]
        after = readers.get(conv.output[0], [])
        if not sole_batchnorm([(n.op_type, n.input) for n in after], conv.output[0]):
            return None
        norm = after[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if auto_pad not in (b"NOTSET", "NOTSET"):
            return None
        names = list(conv.input[1:]) + list(norm.input[3:5])
        if any(n and n not in protos for n in names):
            return None
        weight = numpy_helper.to_array(protos[conv.input[1]]).astype(np.float64)
        if weight.ndim != 4:
            return None
        bias = (numpy_helper.to_array(protos[conv.input[2]]).astype(np.float64)
                if len(conv.input) > 2 and conv.input[2] else None)
        pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        epsilon = next((helper.get_attribute_value(a) for a in norm.attribute
                        if a.name == "epsilon"), 1e-5)
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        dilations = [int(d) for d in attrs.get("dilations", [1, 1])]
        if len(pads) != 4 or len(strides) != 2 or len(dilations) != 2:
            return None
        found = FirstNorm(
            spec.name, weight, bias, (strides[0], strides[1]),
            (pads[0], pads[1], pads[2], pads[3]), (dilations[0], dilations[1]),
            int(attrs.get("group", 1)),
            numpy_helper.to_array(protos[norm.input[3]]).astype(np.float64).ravel(),
            numpy_helper.to_array(protos[norm.input[4]]).astype(np.float64).ravel(),
            float(epsilon))
        return found if _consistent(found) else None
    return None


def _consistent(norm: FirstNorm) -> bool:
    """Whether ``norm``'s conv and statistics describe a layer this module can fit (a file
    read from anywhere: anything else leaves the output check's inputs): pads ≥ 0, strides
    and dilations ≥ 1, a group dividing the output channels, at most MAX_CHANNELS input
    channels, a bias, mean and variance of one value an output channel, all finite, the
    variances and epsilon ≥ 0."""
    k = norm.weight.shape[0]
    return (min(norm.padding) >= 0 and min(norm.stride + norm.dilation) >= 1
            and norm.group >= 1 and k % norm.group == 0 and k > 0
            and 0 < norm.weight.shape[1] * norm.group <= MAX_CHANNELS
            and (norm.bias is None or norm.bias.shape == (k,))
            and norm.mean.shape == (k,) and norm.var.shape == (k,)
            and all(np.all(np.isfinite(v)) for v in (norm.weight, norm.mean, norm.var))
            and (norm.bias is None or bool(np.all(np.isfinite(norm.bias))))
            and bool(np.all(norm.var >= 0)) and np.isfinite(norm.epsilon)
            and norm.epsilon >= 0)


def _conv(norm: FirstNorm, x: np.ndarray) -> np.ndarray:
    """The first conv of ``x`` (N, C, H, W) without its bias, in float64."""
    import torch
    import torch.nn.functional as F

    top, left, bottom, right = norm.padding
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, torch.from_numpy(norm.weight), stride=norm.stride,
                    dilation=norm.dilation, groups=norm.group).numpy()


def smooth_noise(shape: Sequence[int], scale: float, sharing: str,
                 rng: np.random.Generator) -> np.ndarray:
    """Standard-normal noise of ``shape`` (N, C, H, W) low-passed by a Gaussian of ``scale``
    pixels (0: white), one map for every channel (``sharing`` "shared") or one each, scaled
    to zero mean and unit deviation per channel."""
    from scipy.ndimage import gaussian_filter

    n, c, h, w = (int(d) for d in shape)
    noise = rng.standard_normal((n, 1 if sharing == "shared" else c, h, w))
    if scale > 0:
        noise = gaussian_filter(noise, (0, 0, scale, scale), mode="wrap")
    noise = noise - noise.mean(axis=(0, 2, 3), keepdims=True)
    noise = noise / np.maximum(noise.std(axis=(0, 2, 3), keepdims=True), 1e-12)
    return np.broadcast_to(noise, (n, c, h, w)).copy()


def batch_statistics(norm: FirstNorm, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first BatchNorm's per-channel batch mean and variance on inputs ``x``."""
    y = _conv(norm, x)
    if norm.bias is not None:
        y = y + norm.bias.reshape(1, -1, 1, 1)
    return y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))


def _misses(norm: FirstNorm, mean: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    deviation = np.sqrt(norm.var + norm.epsilon)
    mean_miss = float(np.sqrt(np.mean(np.square((mean - norm.mean) / deviation))))
    ratio = np.log(np.sqrt(np.maximum(var, 0) + norm.epsilon) / deviation)
    return mean_miss, float(np.sqrt(np.mean(ratio * ratio)))


def fit(norm: FirstNorm, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(a, b, cost) with ``a``·``noise`` + ``b`` (per channel) making the first BatchNorm's
    batch statistics nearest its running ones (the module's docstring)."""
    from scipy.optimize import least_squares

    n, c, h, w = noise.shape
    features = []
    for channel in range(c):  # the conv of each channel's noise, then of its constant 1
        alone = np.zeros_like(noise)
        alone[:, channel] = noise[:, channel]
        features.append(_conv(norm, alone))
    for channel in range(c):
        ones = np.zeros((1, c, h, w))
        ones[:, channel] = 1.0
        features.append(np.broadcast_to(_conv(norm, ones), features[0].shape))
    stacked = np.stack(features).transpose(2, 0, 1, 3, 4).reshape(
        features[0].shape[1], 2 * c, -1)  # (K, 2C, values)
    bias = np.zeros(stacked.shape[0]) if norm.bias is None else norm.bias
    means = stacked.mean(axis=2)  # (K, 2C)
    gram = np.einsum("kiv,kjv->kij", stacked, stacked) / stacked.shape[2]
    deviation = np.sqrt(norm.var + norm.epsilon)

    def residuals(z: np.ndarray) -> np.ndarray:
        mean = means @ z + bias
        second = np.einsum("i,kij,j->k", z, gram, z) + 2 * bias * (means @ z) + bias * bias
        var = np.maximum(second - mean * mean, 0.0)
        return np.concatenate([(mean - norm.mean) / deviation,
                               np.log(np.sqrt(var + norm.epsilon) / deviation)])

    best = None
    for start in (1.0, 0.3):
        z0 = np.concatenate([np.full(c, start), np.zeros(c)])
        got = least_squares(residuals, z0, method="lm" if 2 * stacked.shape[0] >= 2 * c
                            else "trf")
        if best is None or got.cost < best.cost:
            best = got
    return best.x[:c], best.x[c:], float(best.cost)


def matched_inputs(norm: FirstNorm, shape: Sequence[int], rng: np.random.Generator,
                   scales: Sequence[float] = SCALES, sharings: Sequence[str] = SHARINGS
                   ) -> tuple[np.ndarray, Fit]:
    """Inputs of ``shape`` (N, C, H, W; float32) drawn by the best fit over ``scales`` and
    ``sharings`` (the module's docstring), and that `Fit` measured on them."""
    best: tuple[float, np.ndarray, float, str, np.ndarray, np.ndarray] | None = None
    for scale in scales:
        for sharing in sharings:
            noise = smooth_noise(shape, scale, sharing, rng)
            a, b, cost = fit(norm, noise)
            if best is None or cost < best[0]:
                best = (cost, noise, scale, sharing, a, b)
    assert best is not None
    _, noise, scale, sharing, a, b = best
    x = a.reshape(1, -1, 1, 1) * noise + b.reshape(1, -1, 1, 1)
    misses = _misses(norm, *batch_statistics(norm, x))  # the kept fit's, measured on x
    return x.astype(np.float32), Fit(scale, sharing, a, b, *misses)


def matched_feeds(norm: FirstNorm, feeds: Sequence[dict[str, np.ndarray]],
                  rng: np.random.Generator) -> tuple[list[dict[str, np.ndarray]], Fit] | None:
    """``feeds`` with the input of ``norm`` (`first_norm`) drawn by `matched_inputs` (every
    batch's together, then split as they were), and the `Fit`; None where the feeds do not
    hold that input as (N, C, H, W) float32 of the conv's channels."""
    if not feeds:
        return None
    held = [f.get(norm.name) for f in feeds]
    if any(x is None or x.ndim != 4 or x.dtype != np.float32 for x in held):
        return None
    if len({x.shape[1:] for x in held}) != 1 or held[0].shape[1] != norm.weight.shape[1] * (
            norm.group):
        return None
    total = sum(x.shape[0] for x in held)
    try:
        drawn, found = matched_inputs(norm, (total,) + held[0].shape[1:], rng)
    except RuntimeError:  # torch's conv refuses the layer on these sides: the feeds stay
        return None
    out, start = [], 0
    for feed, x in zip(feeds, held, strict=True):
        out.append({**feed, norm.name: drawn[start:start + x.shape[0]]})
        start += x.shape[0]
    return out, found
