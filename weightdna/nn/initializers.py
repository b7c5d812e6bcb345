"""Weight initialisers and the seeded random generator every layer draws from.

Shapes follow PyTorch: a Dense weight is (out, in), a convolution kernel is
(out, in, kh, kw). When ``fan_in``/``fan_out`` are not given they are read from the shape
the way PyTorch does (fan-in = in × receptive field, fan-out = out × receptive field).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import DTypeLike

from weightdna.errors import InvalidInputError

RngLike = np.random.Generator | int | None
Shape = int | Sequence[int]


def make_rng(rng: RngLike = None) -> np.random.Generator:
    """Return ``rng`` itself if it is a Generator, else ``np.random.default_rng(rng)``.

    Passing the same Generator to several layers makes them draw one reproducible stream;
    passing the same int makes each start from the same state.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def fans(shape: Shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a PyTorch-layout weight: (out, in, *kernel)."""
    shape = _as_shape(shape)
    if len(shape) < 2:
        raise InvalidInputError(
            f"cannot infer fan-in/fan-out from shape {shape}; pass fan_in and fan_out"
        )
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def xavier_normal(
    shape: Shape,
    fan_in: int | None = None,
    fan_out: int | None = None,
    rng: RngLike = None,
    dtype: DTypeLike = np.float32,
) -> np.ndarray:
    """Xavier/Glorot normal: N(0, std = sqrt(2 / (fan_in + fan_out)))."""
    fan_in, fan_out = _fans(shape, fan_in, fan_out)
    std = np.sqrt(2.0 / (fan_in + fan_out))
    return _normal(shape, std, rng, dtype)


def he_normal(
    shape: Shape,
    fan_in: int | None = None,
    fan_out: int | None = None,
    rng: RngLike = None,
    dtype: DTypeLike = np.float32,
) -> np.ndarray:
    """He (Kaiming) normal for ReLU networks: N(0, std = sqrt(2 / fan_in))."""
    fan_in = _fan_in(shape, fan_in)
    std = np.sqrt(2.0 / fan_in)
    return _normal(shape, std, rng, dtype)


def siren_first_uniform(
    shape: Shape,
    fan_in: int | None = None,
    fan_out: int | None = None,
    rng: RngLike = None,
    dtype: DTypeLike = np.float32,
) -> np.ndarray:
    """SIREN first layer: U(-1/n, 1/n), n = fan-in (Sitzmann et al. 2020, "Implicit Neural
    Representations with Periodic Activation Functions", sec. 3.2)."""
    fan_in = _fan_in(shape, fan_in)
    return _uniform(shape, 1.0 / fan_in, rng, dtype)


def siren_hidden_uniform(
    shape: Shape,
    fan_in: int | None = None,
    fan_out: int | None = None,
    rng: RngLike = None,
    dtype: DTypeLike = np.float32,
    omega0: float = 30.0,
) -> np.ndarray:
    """SIREN hidden layer: U(-sqrt(6/n)/ω0, sqrt(6/n)/ω0), n = fan-in (Sitzmann et al. 2020).

    Dividing by ω0 keeps ω0·(Wx + b) distributed so that sin stays in its well-behaved
    regime layer after layer; the ω0 of the following Sine activation must match.
    """
    fan_in = _fan_in(shape, fan_in)
    return _uniform(shape, np.sqrt(6.0 / fan_in) / omega0, rng, dtype)


def zeros(shape: Shape, dtype: DTypeLike = np.float32, **_: object) -> np.ndarray:
    """All zeros (biases); ignores fan and rng arguments so it fits the same call."""
    return np.zeros(_as_shape(shape), dtype=dtype)


# The names Dense (and the convolution) accept as ``init=``.
INITIALIZERS: dict[str, Callable[..., np.ndarray]] = {
    "he": he_normal,
    "xavier": xavier_normal,
    "siren_first": siren_first_uniform,
    "siren_hidden": siren_hidden_uniform,
}


def initialize(
    name: str,
    shape: Shape,
    fan_in: int | None = None,
    fan_out: int | None = None,
    rng: RngLike = None,
    dtype: DTypeLike = np.float32,
    omega0: float = 30.0,
) -> np.ndarray:
    """Draw a weight with the initialiser called ``name`` (a key of ``INITIALIZERS``)."""
    if name not in INITIALIZERS:
        raise InvalidInputError(
            f"unknown initialiser {name!r}; choose one of {sorted(INITIALIZERS)}"
        )
    kwargs = {"omega0": omega0} if name == "siren_hidden" else {}
    return INITIALIZERS[name](shape, fan_in, fan_out, rng=rng, dtype=dtype, **kwargs)


def _as_shape(shape: Shape) -> tuple[int, ...]:
    return (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)


def _fans(shape: Shape, fan_in: int | None, fan_out: int | None) -> tuple[int, int]:
    if fan_in is None or fan_out is None:
        inferred_in, inferred_out = fans(shape)
        fan_in = inferred_in if fan_in is None else fan_in
        fan_out = inferred_out if fan_out is None else fan_out
    if fan_in <= 0 or fan_out <= 0:
        raise InvalidInputError(f"fan_in and fan_out must be positive, got {fan_in}, {fan_out}")
    return fan_in, fan_out


def _fan_in(shape: Shape, fan_in: int | None) -> int:
    # Initialisers that need only the fan-in accept any shape when it is given.
    return _fans(shape, fan_in, 1)[0]


def _normal(shape: Shape, std: float, rng: RngLike, dtype: DTypeLike) -> np.ndarray:
    # Draw in float64 and cast, so a seed gives the same weights whatever the dtype.
    return make_rng(rng).normal(0.0, std, size=_as_shape(shape)).astype(dtype, copy=False)


def _uniform(shape: Shape, bound: float, rng: RngLike, dtype: DTypeLike) -> np.ndarray:
    return make_rng(rng).uniform(-bound, bound, size=_as_shape(shape)).astype(dtype, copy=False)
