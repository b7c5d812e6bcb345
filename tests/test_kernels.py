"""Seed 004's delta sequences: finite everywhere, integrate to 1, and tend to δ as ν grows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf, sici

from weightdna.errors import InvalidInputError
from weightdna.kernels import DELTA_SEQUENCES, apply_to, gaussian, lorentzian, sinc

NUS = (1.0, 4.0, 16.0, 64.0)
HALF_WIDTH = 1000.0  # the "wide interval" is [−1000, 1000]

# ∫_{−L}^{L} f_ν dx in closed form: Si is the sine integral. Its 1/x tail makes the sinc's
# truncation error ≈ (2/π)·|cos(νL)|/(νL) ≤ 6.4e-4 for νL ≥ 1000; the Lorentzian's 1/x² tail
# gives 1 − (2/π)·arctan(νL) ≤ 6.4e-4 too; the Gaussian's is erfc(νL), nothing.
CLOSED_FORM = {
    "sinc": lambda nu, L: 2 / np.pi * sici(nu * L)[0],
    "gaussian": lambda nu, L: erf(nu * L),
    "lorentzian": lambda nu, L: 2 / np.pi * np.arctan(nu * L),
}


def phi(x: float) -> float:
    """A smooth, bounded test function with φ(0) = 1.3 and φ''(0) = −1.2."""
    return np.cos(x) * np.exp(-(x**2) / 10) + 0.3


def one(x: float) -> float:
    return 1.0


@pytest.mark.parametrize("name", sorted(DELTA_SEQUENCES))
def test_finite_everywhere_and_peak_value(name: str) -> None:
    f = DELTA_SEQUENCES[name]
    x = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-8, 1.0, -1e300, 1e300, np.inf, -np.inf])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        values = f(x, 7.0)
    assert np.all(np.isfinite(values))
    peak = {"sinc": 7.0 / np.pi, "gaussian": 7.0 / np.sqrt(np.pi), "lorentzian": 7.0 / np.pi}
    assert values[0] == pytest.approx(peak[name], rel=1e-15)
    # At x = 0 the value is the limit x → 0, not a separate branch that jumps.
    assert values[4] == pytest.approx(values[0], rel=1e-12)


def test_kernels_match_their_formulas() -> None:
    x = np.linspace(-3, 3, 61)
    x = x[x != 0]
    nu = 2.5
    np.testing.assert_allclose(sinc(x, nu), np.sin(nu * x) / (np.pi * x), rtol=1e-13)
    np.testing.assert_allclose(
        gaussian(x, nu), nu / np.sqrt(np.pi) * np.exp(-(nu**2) * x**2), rtol=1e-13
    )
    np.testing.assert_allclose(lorentzian(x, nu), nu / (np.pi * (1 + nu**2 * x**2)), rtol=1e-13)


@pytest.mark.parametrize("nu", NUS)
@pytest.mark.parametrize("name", sorted(DELTA_SEQUENCES))
def test_integrates_to_one_over_a_wide_interval(name: str, nu: float) -> None:
    """Over [−1000, 1000] by ``apply_to`` (QUADPACK; the sinc's tails as Fourier integrals)."""
    f = DELTA_SEQUENCES[name]
    value = apply_to(f, one, nu, interval=(-HALF_WIDTH, HALF_WIDTH))
    assert abs(value - 1) < 1e-3
    # The quadrature itself is far more accurate than the truncation.
    assert value == pytest.approx(CLOSED_FORM[name](nu, HALF_WIDTH), abs=1e-8)


@pytest.mark.parametrize("nu", NUS)
@pytest.mark.parametrize("name", sorted(DELTA_SEQUENCES))
def test_integrates_to_one_over_the_line(name: str, nu: float) -> None:
    """For sinc this is the conditionally convergent Dirichlet integral, summed by QAWF."""
    assert apply_to(DELTA_SEQUENCES[name], one, nu) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("name", sorted(DELTA_SEQUENCES))
def test_tends_to_delta(name: str) -> None:
    """∫ f_ν φ → φ(0): the error falls monotonically over ν = 1, 4, 16, 64 and ends small.

    Rates: Gaussian ≈ φ''(0)/(4ν²); Lorentzian ∝ 1/ν (its 1/x² tails reach far);
    sinc is an ideal low-pass filter, exact to quadrature noise once ν passes φ's band.
    """
    f = DELTA_SEQUENCES[name]
    errors = [abs(apply_to(f, phi, nu) - phi(0.0)) for nu in NUS]
    for before, after in zip(errors, errors[1:], strict=False):
        # Non-increasing, up to quadrature noise (the sinc reaches ~1e-11 by ν = 4).
        assert after <= before or after < 1e-9
    assert errors[0] > 1e-2  # ν = 1 is still far from δ: the test can see the convergence
    small = {"sinc": 1e-8, "gaussian": 1e-4, "lorentzian": 2e-2}
    assert errors[-1] < small[name]
    if name == "gaussian":
        assert errors[-1] == pytest.approx(1.2 / (4 * NUS[-1] ** 2), rel=1e-2)
    if name == "lorentzian":
        assert errors[-2] / errors[-1] == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("nu", [0.5, 2.0, 4.0])
def test_apply_to_exact_values(nu: float) -> None:
    """Closed forms: the sinc passes cos x iff ν > 1, the Gaussian damps it by e^{−1/(4ν²)},
    and the Lorentzian maps 1/(1+x²) to ν/(ν+1) (Cauchy laws add their widths)."""
    assert apply_to(sinc, np.cos, nu) == pytest.approx(1.0 if nu > 1 else 0.0, abs=1e-8)
    assert apply_to(gaussian, np.cos, nu) == pytest.approx(np.exp(-1 / (4 * nu**2)), rel=1e-10)
    expected = nu / (nu + 1)
    assert apply_to(lorentzian, lambda x: 1 / (1 + x * x), nu) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("interval", [(2.0, 5.0), (-5.0, -2.0), (-0.5, 30.0)])
def test_apply_to_on_a_one_sided_interval(interval: tuple[float, float]) -> None:
    """Tails on either side of the core, and a core cut short, against Si in closed form."""
    nu = 3.0
    a, b = interval
    expected = (np.sign(b) * sici(nu * abs(b))[0] - np.sign(a) * sici(nu * abs(a))[0]) / np.pi
    assert apply_to(sinc, one, nu, interval=interval) == pytest.approx(expected, abs=1e-10)


def test_apply_to_handles_a_very_narrow_peak() -> None:
    """At ν = 10⁴ the Gaussian is 10⁻⁴ wide; the breakpoints at ±1/ν keep quad on it."""
    assert apply_to(gaussian, phi, 1e4) == pytest.approx(phi(0.0), abs=1e-7)


def test_apply_to_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidInputError, match="nu"):
        apply_to(sinc, one, 0.0)
    with pytest.raises(InvalidInputError, match="interval"):
        apply_to(sinc, one, 1.0, interval=(1.0, -1.0))
