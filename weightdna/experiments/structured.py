"""Synthetic tensors with known structure, and random ones without: the validation suite of
the structure lenses (`weightdna.analysis`) and of the codec's structured representations.

Each generator is seeded and returns float32, laid out as the layer that holds such weights
stores them (a front end's basis as rows × samples, a conv bank as out × in × kh × kw).
`SUITE` names every member with whether it holds structure; `PAIRS` holds tensors that
repeat one another (tied or repeated blocks), each pair as a small model of two tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

WINDOWS = ("hann", "hamming")


def window(name: str, n: int) -> np.ndarray:
    """The periodic ``name`` window of ``n`` samples (as STFT front ends use)."""
    k = np.arange(n)
    if name == "hann":
        return 0.5 - 0.5 * np.cos(2 * np.pi * k / n)
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(2 * np.pi * k / n)
    raise ValueError(f"unknown window {name!r}; use one of {WINDOWS}.")


def windowed_dft_basis(n: int, window_name: str = "hann") -> np.ndarray:
    """An STFT front end's fixed basis, n × n: the windowed cosine row of every frequency
    f = 0 … n/2, then the windowed sine rows of f = 1 … n/2 − 1 (the sines of 0 and n/2 are
    zero), each ``n`` samples long."""
    if n < 4 or n % 2:
        raise ValueError("n must be an even number of at least 4.")
    t = np.arange(n)
    w = window(window_name, n)
    freqs = np.arange(n // 2 + 1)
    cos = np.cos(2 * np.pi * np.outer(freqs, t) / n) * w
    sin = np.sin(2 * np.pi * np.outer(freqs[1:-1], t) / n) * w
    return np.concatenate([cos, sin]).astype(np.float32)


def dct_basis(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix, n × n (row k: the k-th cosine)."""
    k, t = np.arange(n)[:, None], np.arange(n)[None, :]
    basis = np.cos(np.pi * (t + 0.5) * k / n) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def gabor_bank(out_channels: int = 64, in_channels: int = 3, size: int = 7,
               seed: int = 0) -> np.ndarray:
    """Gabor-like first-layer conv kernels, out × in × size × size: each output channel one
    oriented, windowed sinusoid (random orientation, frequency, phase), weighted per input
    channel."""
    rng = np.random.default_rng(seed)
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size] - c
    bank = np.empty((out_channels, in_channels, size, size))
    for o in range(out_channels):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.1, 0.4)
        phase, sigma = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, size / 3)
        u = x * np.cos(theta) + y * np.sin(theta)
        kernel = np.exp(-(x**2 + y**2) / (2 * sigma**2)) * np.cos(2 * np.pi * freq * u + phase)
        bank[o] = rng.normal(size=(in_channels, 1, 1)) * kernel
    return bank.astype(np.float32)


def kronecker(a_shape: tuple[int, int] = (16, 24), b_shape: tuple[int, int] = (16, 16),
              noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """A ⊗ B plus iid noise of ``noise`` times the product's RMS."""
    rng = np.random.default_rng(seed)
    product = np.kron(rng.normal(size=a_shape), rng.normal(size=b_shape))
    product += noise * product.std() * rng.normal(size=product.shape)
    return product.astype(np.float32)


def smooth_surface(shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """A smooth 2-D surface: a few low-frequency sinusoids over both coordinates (a
    position-table-like tensor)."""
    rng = np.random.default_rng(seed)
    r = np.linspace(0, 1, shape[0])[:, None]
    c = np.linspace(0, 1, shape[1])[None, :]
    surface = np.zeros(shape)
    for _ in range(6):
        fr, fc, phase = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 2 * np.pi)]
        surface += rng.normal() * np.sin(2 * np.pi * (fr * r + fc * c) + phase)
    return surface.astype(np.float32)


def low_rank(shape: tuple[int, int] = (256, 384), rank: int = 8, noise: float = 0.01,
             seed: int = 0) -> np.ndarray:
    """A rank-``rank`` matrix plus iid noise of ``noise`` times its RMS."""
    rng = np.random.default_rng(seed)
    product = rng.normal(size=(shape[0], rank)) @ rng.normal(size=(rank, shape[1]))
    product += noise * product.std() * rng.normal(size=shape)
    return product.astype(np.float32)


def gaussian(shape: tuple[int, int] = (256, 384), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def laplace(shape: tuple[int, int] = (256, 384), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(size=shape).astype(np.float32)


@dataclass(frozen=True)
class Member:
    """One tensor of the suite: its generator and whether it holds structure (and which
    kind, in words)."""

    name: str
    make: Callable[[], np.ndarray]
    structured: bool
    kind: str


def _suite() -> tuple[Member, ...]:
    members = [
        Member(f"dft{n}_{w}", lambda n=n, w=w: windowed_dft_basis(n, w), True, "windowed DFT")
        for n in (64, 256, 1024) for w in WINDOWS
    ]
    members += [
        Member("dct256", lambda: dct_basis(256), True, "DCT-II"),
        Member("gabor", gabor_bank, True, "Gabor bank"),
        Member("kronecker", kronecker, True, "Kronecker product"),
        Member("smooth", smooth_surface, True, "smooth surface"),
        Member("lowrank", low_rank, True, "low rank"),
        Member("gaussian", gaussian, False, "iid Gaussian"),
        Member("laplace", laplace, False, "iid Laplace"),
    ]
    return tuple(members)


SUITE = _suite()


def tied_pair(shape: tuple[int, int] = (256, 384), scale: float = 1.0, permuted: bool = False,
              noise: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Two tensors, the second the first times ``scale`` (its rows in a random order with
    ``permuted``), plus iid noise of ``noise`` times its RMS: a tied or repeated block (an
    embedding tied to an output layer, a block repeated in another layer). ``noise`` 0 and
    ``scale`` 1: a copy."""
    rng = np.random.default_rng(seed)
    first = rng.normal(size=shape)
    second = scale * first
    if permuted:
        second = second[rng.permutation(shape[0])]
    second = second + noise * second.std() * rng.normal(size=shape)
    return {"first.weight": first.astype(np.float32), "second.weight": second.astype(np.float32)}


@dataclass(frozen=True)
class Pair:
    """Two tensors of one model, the second a repeat of the first (``repeated``) or not."""

    name: str
    make: Callable[[], dict[str, np.ndarray]]
    repeated: bool
    kind: str


def _independent() -> dict[str, np.ndarray]:
    return {"first.weight": gaussian(seed=0), "second.weight": gaussian(seed=1)}


PAIRS = (
    Pair("tied", lambda: tied_pair(), True, "a copy (tied weights)"),
    Pair("tied_scaled_permuted", lambda: tied_pair(scale=-0.5, permuted=True), True,
         "a copy scaled by −½, its rows reordered"),
    Pair("repeated_noisy", lambda: tied_pair(noise=0.01), True,
         "a copy plus noise at −40 dB"),
    Pair("independent", _independent, False, "two iid Gaussian tensors of one shape"),
)
