"""Delta sequences (seed 004): kernels f_ν that integrate to 1 and tend to δ as ν grows.

Each kernel is a function ``f(x, nu)``, vectorised over ``x`` and finite everywhere:

* ``sinc``: the Fourier (Dirichlet) kernel ``sin(νx)/(πx)``, value ν/π at 0 — the
  ideal low-pass filter of band ν; oscillating, not positive, tails decaying like 1/x.
* ``gaussian``: the heat kernel at time t = 1/(4ν²), ``(ν/√π)·exp(−ν²x²)`` (standard
  deviation 1/(ν√2)).
* ``lorentzian``: the Cauchy kernel ``ν/(π(1 + ν²x²))`` (half width 1/ν), tails 1/x².

``apply_to(f, phi, nu)`` computes ``∫ f_ν(x) φ(x) dx``, which tends to φ(0) as ν → ∞.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate

from weightdna.errors import InvalidInputError

Kernel = Callable[[ArrayLike, float], np.ndarray]


def sinc(x: ArrayLike, nu: float) -> np.ndarray:
    """Fourier kernel ``sin(νx)/(πx)``, equal to its limit ν/π at x = 0."""
    x = np.asarray(x, dtype=np.float64)
    # numpy's normalised sinc(t) = sin(πt)/(πt) is already defined at 0; with t = νx/π
    # it gives sin(νx)/(νx), and ν/π times that is the kernel. At x = ±∞ the limit is 0.
    infinite = np.isinf(x)
    values = (nu / np.pi) * np.sinc(np.where(infinite, 0.0, nu * x / np.pi))
    return np.where(infinite, 0.0, values)


def gaussian(x: ArrayLike, nu: float) -> np.ndarray:
    """Heat kernel at time 1/(4ν²): ``(ν/√π)·exp(−ν²x²)``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):  # (νx)² = inf or 0 at the extremes
        return (nu / np.sqrt(np.pi)) * np.exp(-((nu * x) ** 2))


def lorentzian(x: ArrayLike, nu: float) -> np.ndarray:
    """Cauchy kernel ``ν/(π(1 + ν²x²))``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):  # (νx)² = inf or 0 at the extremes
        return nu / (np.pi * (1.0 + (nu * x) ** 2))


DELTA_SEQUENCES: dict[str, Kernel] = {
    "sinc": sinc,
    "gaussian": gaussian,
    "lorentzian": lorentzian,
}


def apply_to(
    f: Kernel,
    phi: Callable[[float], float],
    nu: float,
    interval: tuple[float, float] = (-np.inf, np.inf),
    core: float = 1.0,
) -> float:
    """``∫ f_ν(x) φ(x) dx`` over ``interval`` (the whole line by default), by QUADPACK.

    phi: a scalar function; it need only be bounded on infinite intervals.
    core: half width of the interval around 0 integrated directly; outside it lie the tails.

    The core [−core, core] is integrated adaptively with breakpoints at 0 and ±1/ν, ±10/ν
    so that the narrow peak of a large ν is not missed. The tails of the Gaussian and
    Lorentzian are absolutely integrable and go to plain adaptive quadrature (infinite
    ends by QUADPACK's change of variable). The sinc's tails are not: ``sin(νx)/(πx)``
    decays only like 1/x, so ``∫ sinc`` converges only conditionally and plain quadrature
    of a long interval stalls on thousands of oscillations. They are written as
    ``∫ g(x)·sin(νx) dx`` with the smooth ``g(x) = φ(x)/(πx)`` and handed to QUADPACK's
    routines for Fourier integrals (``quad(weight="sin")``: QAWO on a finite tail, QAWF on
    an infinite one, which sums the integral cycle by cycle and extrapolates the series).
    """
    if nu <= 0:
        raise InvalidInputError(f"nu must be positive, got {nu}")
    lower, upper = float(interval[0]), float(interval[1])
    if not lower < upper:
        raise InvalidInputError(
            f"interval must be (lower, upper) with lower < upper, got {interval}"
        )
    if core <= 0:
        raise InvalidInputError(f"core must be positive, got {core}")

    def integrand(x: float) -> float:
        return float(f(x, nu)) * phi(x)

    total = 0.0
    a, b = max(lower, -core), min(upper, core)
    if a < b:
        marks = (0.0, 1.0 / nu, -1.0 / nu, 10.0 / nu, -10.0 / nu)
        points = sorted(m for m in marks if a < m < b)
        total += _quad(integrand, a, b, points=points or None)
    # Left tail [lower, −core] and right tail [core, upper], where present.
    tails = [(lower, min(upper, -core)), (max(lower, core), upper)]
    for a, b in tails:
        if not a < b:
            continue
        if f is sinc:
            total += _sine_tail(phi, nu, a, b)
        elif np.isinf(a) or np.isinf(b):
            total += _quad(integrand, a, b)
        else:
            # Breakpoints at core·10^k, so that a long finite tail whose mass sits next to
            # the core is not sampled only at a few far nodes.
            scales = core * 10.0 ** np.arange(1, 16)
            points = [x for x in np.concatenate([scales, -scales]) if a < x < b]
            total += _quad(integrand, a, b, points=points or None)
    return total


def _sine_tail(phi: Callable[[float], float], nu: float, a: float, b: float) -> float:
    """``∫_a^b φ(x) sin(νx)/(πx) dx`` on an interval away from 0, as a Fourier integral."""
    if a < 0:
        # Reflect x -> −x onto the positive axis: the kernel is even, φ is not.
        a, b = -b, -a

        def g(x: float) -> float:
            return phi(-x) / (np.pi * x)
    else:

        def g(x: float) -> float:
            return phi(x) / (np.pi * x)

    if np.isinf(b):
        return _quad(g, a, np.inf, weight="sin", wvar=nu, limlst=200)
    return _quad(g, a, b, weight="sin", wvar=nu)


def _quad(func: Callable[[float], float], a: float, b: float, **kwargs: object) -> float:
    # limit: enough subintervals for a peak of width 1/ν inside a core of width 2.
    value, _ = integrate.quad(func, a, b, limit=1000, **kwargs)
    return float(value)
