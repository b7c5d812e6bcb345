"""Convolution and cross-correlation of sampled signals, the mathematics of seed 003.

Signals are finite NumPy arrays (1-D or 2-D; any matching number of axes works) that stand
for sequences on the integer lattice, zero outside the array. Everything is real-valued:
nothing is conjugated.

* True convolution, ``(f * g)[n] = Σ_m f[m] g[n − m]`` (seed 003, eq. 1): commutative,
  associative, distributive over addition, shift-invariant, and ``D(f * g) = f * Dg`` for
  the forward difference D.
* Cross-correlation, seed 003's eq. 9, ``(f ⋆ g)[n] = Σ_m f[m] g[n + m]``: the *first*
  argument f is the template that slides over the signal g, unreflected. This is what deep
  learning calls convolution (``Conv2D`` slides its weight, unflipped, over its input).
  Seed 003 eq. 10: ``f ⋆ g = f⁻ * g`` with ``f⁻(x) = f(−x)``, the reflection of the first
  argument (``flip``).

Conventions of the output arrays, chosen to match ``scipy.signal``:

* ``mode="full"`` holds every lag. For ``convolve(f, g)``, index ``i`` is ``n = i``. For
  ``cross_correlate(f, g)``, index ``i`` is the lag ``n = i − (len(f) − 1)`` (per axis), so
  ``cross_correlate(f, g, "full") == numpy.correlate(g, f, "full")
  == scipy.signal.correlate(g, f, "full")`` — NumPy and SciPy put the template second and
  call it ``v``/``in2``; the seed puts it first.
* ``mode="valid"`` keeps the lags where the shorter array lies wholly inside the longer one
  (size ``|len f − len g| + 1`` per axis; one array must be at least as large as the other
  along every axis).
* ``mode="same"`` keeps the centre of the full output: the shape of ``f`` for
  ``convolve(f, g)`` (as ``scipy.signal.convolve``), the shape of the signal ``g`` for
  ``cross_correlate(f, g)`` (as ``scipy.signal.correlate(g, f, "same")``). ``numpy.convolve``
  and ``numpy.correlate`` instead return the longer length in "same" mode.

The identity ``cross_correlate(f, g) == convolve(flip(f), g)`` holds exactly in "full" and
"valid" mode, where the output's extent does not depend on which argument is the kernel.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from weightdna.errors import InvalidInputError

Mode = Literal["full", "same", "valid"]
_MODES = ("full", "same", "valid")


def flip(f: np.ndarray) -> np.ndarray:
    """The reflection ``f⁻(x) = f(−x)``: ``f`` reversed along every axis.

    On an array, reversing maps index ``k`` to ``len − 1 − k``, a reflection about the
    array's centre; the "full" output conventions above absorb the resulting index shift.
    """
    return np.flip(np.asarray(f))


def convolve(f: np.ndarray, g: np.ndarray, mode: Mode = "full") -> np.ndarray:
    """True convolution ``(f * g)[n] = Σ_m f[m] g[n − m]`` of two arrays of equal ndim.

    Equals ``scipy.signal.convolve(f, g, mode)`` (and ``numpy.convolve`` for 1-D "full" and
    "valid"). Integer inputs give exact integer results.
    """
    f, g = _check_pair(f, g, mode)
    # Zero-pad g by (len f − 1) on both sides so that sliding the reversed f across it
    # visits every lag where the two overlap: that is the "full" output.
    padded = np.pad(g, [(k - 1, k - 1) for k in f.shape])
    full = _slide(padded, flip(f))
    return _crop(full, f.shape, g.shape, mode, same_as=f.shape)


def cross_correlate(f: np.ndarray, g: np.ndarray, mode: Mode = "full") -> np.ndarray:
    """Cross-correlation ``(f ⋆ g)[n] = Σ_m f[m] g[n + m]`` (seed 003 eq. 9): f slides over g.

    Computed as ``g * f⁻``, which seed 003 eq. 11 writes equal to ``f⁻ * g``; in "same" mode
    the output has the shape of g. Not commutative: ``cross_correlate(g, f)`` is
    ``flip(cross_correlate(f, g))`` (the lag n becomes −n).
    """
    f, g = _check_pair(f, g, mode)
    return convolve(g, flip(f), mode)


def forward_difference(f: np.ndarray, axis: int = -1) -> np.ndarray:
    """Forward difference ``(Df)[n] = f[n + 1] − f[n]`` of a zero-extended sequence.

    The array is taken as zero outside, so the result is one longer along ``axis`` and its
    first entry is ``n = −1`` (value ``f[0]``). D is itself a convolution (with
    ``[1, −1]`` at offset −1), so by commutativity and associativity
    ``D(f * g) == f * Dg == Df * g`` holds exactly in "full" mode: the discrete form of seed
    003's ``(f * g)' = f * g'`` (eq. 7).
    """
    f = np.asarray(f)
    return np.diff(f, axis=axis, prepend=0, append=0)


def _slide(signal: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Valid sliding sum ``out[n] = Σ_m template[m] signal[n + m]`` (no flipping)."""
    windows = sliding_window_view(signal, template.shape)
    return np.tensordot(windows, template, axes=template.ndim)


def _check_pair(f: np.ndarray, g: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(f)
    g = np.asarray(g)
    if mode not in _MODES:
        raise InvalidInputError(f"mode must be one of {_MODES}, got {mode!r}")
    if f.ndim != g.ndim or f.ndim == 0:
        raise InvalidInputError(
            f"both signals need the same number of axes (at least 1), got shapes "
            f"{f.shape} and {g.shape}"
        )
    if f.size == 0 or g.size == 0:
        raise InvalidInputError(f"signals must not be empty, got shapes {f.shape} and {g.shape}")
    if mode == "valid":
        f_larger = all(a >= b for a, b in zip(f.shape, g.shape, strict=True))
        g_larger = all(b >= a for a, b in zip(f.shape, g.shape, strict=True))
        if not (f_larger or g_larger):
            raise InvalidInputError(
                f"mode='valid' needs one signal at least as large as the other along every "
                f"axis, got shapes {f.shape} and {g.shape}; use mode='full'"
            )
    return f, g


def _crop(
    full: np.ndarray,
    f_shape: tuple[int, ...],
    g_shape: tuple[int, ...],
    mode: str,
    same_as: tuple[int, ...],
) -> np.ndarray:
    if mode == "full":
        return full
    if mode == "valid":
        sizes = [abs(a - b) + 1 for a, b in zip(f_shape, g_shape, strict=True)]
        starts = [min(a, b) - 1 for a, b in zip(f_shape, g_shape, strict=True)]
    else:
        # Centre of the full output, rounding the start down, as scipy.signal does.
        sizes = list(same_as)
        starts = [(n - s) // 2 for n, s in zip(full.shape, sizes, strict=True)]
    return full[tuple(slice(a, a + s) for a, s in zip(starts, sizes, strict=True))]
