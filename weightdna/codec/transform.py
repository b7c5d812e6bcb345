"""Orthonormal transforms along each row, for the ``transform`` representation: the
tensor's rows (`weightdna.codec.quantize.as_rows`) are taken to a domain where structured
weights are sparse — a windowed sinusoid has a few DFT coefficients, a DCT basis vector one
DCT coefficient — and the coefficients are quantised and entropy-coded there.

Both transforms are orthonormal, so an error of the coefficients is the same error of the
weights (Parseval): the rate control's estimates on coefficients are estimates on weights,
and coding every coefficient at step Δ is coding the significant ones plus the residual
(the rest) at Δ. Format: docs/FORMAT.md, ``transform``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from weightdna.codec.fields import is_int
from weightdna.codec.quantize import row_shape
from weightdna.errors import CorruptFileError

# "dct": DCT-II (orthonormal); "dft": the real DFT (rfft, orthonormal), packed as below.
TRANSFORMS = ("dct", "dft")
TRANSFORM_KEYS = {"transform", "coefficients"}
# A transform is tried where, on a sample of rows, the coefficients holding COMPACTION_
# ENERGY of the energy are at most COMPACTION_RATIO times as many as the weights holding it:
# structured rows concentrate (a windowed DFT row: 3 of 256 coefficients), iid and trained
# ones do not (MiniLM: ratio about 1).
COMPACTION_ENERGY = 0.999
COMPACTION_RATIO = 0.5
COMPACTION_SAMPLE_ELEMENTS = 1 << 14


def forward(rows: np.ndarray, kind: str) -> np.ndarray:
    """The coefficients of each row of ``rows`` (float64, rows × n).

    "dft" packs the rfft X of an n-sample row as n reals: Re X₀ … Re X_⌊n/2⌋, then
    Im X₁ … Im X_⌈n/2⌉−1, each of the coefficients that has a conjugate twin times √2, so
    that the map is orthonormal."""
    if kind == "dct":
        return scipy.fft.dct(rows, type=2, axis=-1, norm="ortho")
    n = rows.shape[-1]
    spectrum = scipy.fft.rfft(rows, axis=-1, norm="ortho")
    twins = _twins(n)
    out = np.empty(rows.shape, dtype=np.float64)
    half = n // 2 + 1
    out[:, :half] = spectrum.real
    out[:, :half] *= twins
    out[:, half:] = spectrum.imag[:, 1 : n - half + 1]
    out[:, half:] *= math.sqrt(2.0)
    return out


def inverse(coefficients: np.ndarray, kind: str) -> np.ndarray:
    """The rows whose `forward` is ``coefficients`` (float64, rows × n)."""
    if kind == "dct":
        return scipy.fft.idct(coefficients, type=2, axis=-1, norm="ortho")
    n = coefficients.shape[-1]
    half = n // 2 + 1
    spectrum = np.zeros((coefficients.shape[0], half), dtype=np.complex128)
    spectrum.real = coefficients[:, :half] / _twins(n)
    spectrum.imag[:, 1 : n - half + 1] = coefficients[:, half:] / math.sqrt(2.0)
    return scipy.fft.irfft(spectrum, n=n, axis=-1, norm="ortho")


def _twins(n: int) -> np.ndarray:
    """√2 for each rfft coefficient of an n-sample row that stands for two (itself and its
    conjugate), 1 for X₀ and, n even, X_n/2."""
    twins = np.full(n // 2 + 1, math.sqrt(2.0))
    twins[0] = 1.0
    if n % 2 == 0:
        twins[-1] = 1.0
    return twins


def _count_for_energy(values: np.ndarray, fraction: float) -> int:
    """How many of ``values`` (largest |v| first) hold ``fraction`` of Σ v²."""
    energy = np.sort(np.square(values.reshape(-1)))[::-1]
    total = float(energy.sum())
    if not total > 0:
        return 0
    return int(np.searchsorted(np.cumsum(energy), fraction * total) + 1)


def compacting_transforms(sample: np.ndarray) -> list[str]:
    """The transforms worth trying on a tensor whose rows ``sample`` are (rows × n, a few
    spread rows suffice): those that compact the energy (COMPACTION_*)."""
    if sample.ndim != 2 or sample.shape[1] < 4:
        return []
    stride = max(1, math.ceil(sample.size / COMPACTION_SAMPLE_ELEMENTS))
    rows = np.asarray(sample[::stride], dtype=np.float64)
    plain = _count_for_energy(rows, COMPACTION_ENERGY)
    return [kind for kind in TRANSFORMS
            if _count_for_energy(forward(rows, kind), COMPACTION_ENERGY)
            <= COMPACTION_RATIO * plain]


def check_transform(params: object, shape: tuple[int, ...], where: str) -> tuple[str, object]:
    """(the transform, the coefficients' quantized params) of a ``transform`` entry's params,
    checked but for the quantized params (the caller checks those)."""
    if not isinstance(params, dict) or set(params) != TRANSFORM_KEYS:
        raise CorruptFileError(f"{where}: transform params must have the keys "
                               f"{sorted(TRANSFORM_KEYS)}.")
    kind = params["transform"]
    if not isinstance(kind, str) or kind not in TRANSFORMS:
        raise CorruptFileError(f"{where}: unknown transform {kind!r} (this reader knows "
                               f"{', '.join(TRANSFORMS)}).")
    if len(shape) < 2 or not all(is_int(d) for d in shape) or row_shape(shape)[1] < 1:
        raise CorruptFileError(f"{where}: a transform needs a tensor of 2 or more dimensions "
                               "with rows of at least one element.")
    return kind, params["coefficients"]
