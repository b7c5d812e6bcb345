"""What every peer reports, the same way: bits per weight from real bytes, SNR, PSNR
(max-abs normalisation), maximum error and timings, per tensor or pooled over a model."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from weightdna.codec.dtypes import as_torch
from weightdna.dna.metrics import ErrorTally, decibels

PSNR_NORMALISATION = "maxabs"


@dataclass(frozen=True)
class BaselineResult:
    """One method at one setting on one or more tensors; sums, so results pool exactly."""

    name: str  # the method: "int4", "svd", "nncodec", ...
    setting: str  # what was chosen for it: "rank 1/8", "qp -32", ...
    tensors: int
    numel: int
    nbytes: int  # the compressed bytes, everything the decoder needs (scales, masks, ...)
    signal: float  # Σ w²
    noise: float  # Σ (w − ŵ)²
    normalised_noise: float  # Σ ((w − ŵ) / max|w|)², per tensor's own max|w|
    max_abs_error: float
    encode_s: float
    decode_s: float
    lossless: bool = False

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / self.numel if self.numel else 0.0

    @property
    def snr_db(self) -> float:
        """10 log₁₀(Σw² / Σ(w − ŵ)²); +inf when exact."""
        return decibels(self.signal, self.noise)

    @property
    def psnr_db(self) -> float:
        """10 log₁₀(1 / MSE) after dividing each tensor by its max|w|."""
        return decibels(1.0, self.normalised_noise / max(self.numel, 1))

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON (infinities as null), with the derived figures."""
        out: dict[str, object] = asdict(self)
        out.update(
            bits_per_weight=self.bits_per_weight,
            snr_db=_finite_or_none(self.snr_db),
            psnr_db=_finite_or_none(self.psnr_db),
            psnr_normalisation=PSNR_NORMALISATION,
        )
        return out


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def measure(
    name: str,
    setting: str,
    original: np.ndarray,
    restored: np.ndarray,
    nbytes: int,
    encode_s: float,
    decode_s: float,
    lossless: bool = False,
) -> BaselineResult:
    """The result of restoring ``original`` as ``restored`` from ``nbytes`` coded bytes."""
    w = np.asarray(original)
    w_hat = np.asarray(restored)
    if w.shape != w_hat.shape:
        raise ValueError(f"{name}: restored shape {w_hat.shape} differs from {w.shape}")
    tally = ErrorTally(PSNR_NORMALISATION)
    tally.add(w, w_hat)
    return BaselineResult(
        name=name,
        setting=setting,
        tensors=1,
        numel=int(w.size),
        nbytes=int(nbytes),
        signal=tally.signal,
        noise=tally.error,
        normalised_noise=tally.normalised_error,
        max_abs_error=tally.max_abs,
        encode_s=encode_s,
        decode_s=decode_s,
        lossless=lossless,
    )


def pool(results: Iterable[BaselineResult]) -> BaselineResult:
    """One result for several tensors coded with the same method and setting."""
    results = list(results)
    if not results:
        raise ValueError("nothing to pool")
    first = results[0]
    return BaselineResult(
        name=first.name,
        setting=first.setting,
        tensors=sum(r.tensors for r in results),
        numel=sum(r.numel for r in results),
        nbytes=sum(r.nbytes for r in results),
        signal=sum(r.signal for r in results),
        noise=sum(r.noise for r in results),
        normalised_noise=sum(r.normalised_noise for r in results),
        max_abs_error=max(r.max_abs_error for r in results),
        encode_s=sum(r.encode_s for r in results),
        decode_s=sum(r.decode_s for r in results),
        lossless=all(r.lossless for r in results),
    )


def run_codec(
    name: str,
    setting: str,
    tensor: torch.Tensor | np.ndarray,
    encode: Callable[[torch.Tensor], bytes],
    decode: Callable[[bytes, tuple[int, ...], torch.dtype], torch.Tensor],
    lossless: bool = False,
) -> BaselineResult:
    """Encode ``tensor`` to bytes, decode them (knowing only shape and dtype besides), and
    measure both, timing each side."""
    tensor = as_torch(tensor)
    start = time.perf_counter()
    data = encode(tensor)
    encoded = time.perf_counter()
    restored = decode(data, tuple(tensor.shape), tensor.dtype)
    decoded = time.perf_counter()
    original = tensor.to(torch.float64).numpy()
    return measure(
        name,
        setting,
        original,
        restored.to(torch.float64).numpy(),
        len(data),
        encoded - start,
        decoded - encoded,
        lossless,
    )
