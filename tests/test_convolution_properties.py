"""Seed 003's algebra of convolution and cross-correlation, as property tests.

Signals are small integer arrays, so every identity is checked exactly (``array_equal``):
a property that holds only up to rounding would be a different statement. NumPy and
``scipy.signal`` (direct method) judge the definitions.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weightdna.errors import InvalidInputError
from weightdna.nn.convolution import convolve, cross_correlate, flip, forward_difference

# Few, small examples: the file should run in a few seconds.
FAST = settings(max_examples=40, deadline=None)


def signals(ndim: int, max_side: int = 6) -> st.SearchStrategy[np.ndarray]:
    """Integer arrays with 1..max_side entries per axis and values in [−9, 9]."""
    return hnp.arrays(
        np.int64,
        hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=max_side),
        elements=st.integers(-9, 9),
    )


any_ndim = st.sampled_from([1, 2])


@st.composite
def pairs(draw: st.DrawFn, count: int = 2) -> tuple[np.ndarray, ...]:
    """``count`` signals of one dimensionality (1-D or 2-D), each its own shape."""
    ndim = draw(any_ndim)
    return tuple(draw(signals(ndim)) for _ in range(count))


@st.composite
def same_shape_pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f, and g and h of one shape (so that g + h is defined)."""
    ndim = draw(any_ndim)
    f = draw(signals(ndim))
    g = draw(signals(ndim))
    h = draw(hnp.arrays(np.int64, g.shape, elements=st.integers(-9, 9)))
    return f, g, h


def shift(x: np.ndarray, steps: tuple[int, ...]) -> np.ndarray:
    """Delay a finitely supported signal by ``steps`` ≥ 0 per axis: x[n] -> x[n − steps]."""
    return np.pad(x, [(s, 0) for s in steps])


# --- the definitions, against NumPy and SciPy ---------------------------------------------


@FAST
@given(pairs(), st.sampled_from(["full", "same", "valid"]))
def test_convolve_matches_scipy(fg: tuple, mode: str) -> None:
    f, g = fg
    nested = np.all(np.subtract(f.shape, g.shape) >= 0) or np.all(
        np.subtract(f.shape, g.shape) <= 0
    )
    if mode == "valid" and not nested:
        with pytest.raises(InvalidInputError, match="valid"):
            convolve(f, g, mode)
        return
    expected = scipy.signal.convolve(f, g, mode=mode, method="direct")
    np.testing.assert_array_equal(convolve(f, g, mode), expected)


@FAST
@given(signals(1, 8), signals(1, 8), st.sampled_from(["full", "valid"]))
def test_1d_convolve_and_correlate_match_numpy(f: np.ndarray, g: np.ndarray, mode: str) -> None:
    np.testing.assert_array_equal(convolve(f, g, mode), np.convolve(f, g, mode))
    # NumPy's correlate(a, v) slides v over a: the seed's v ⋆ a, template second.
    np.testing.assert_array_equal(cross_correlate(f, g, mode), np.correlate(g, f, mode))


@FAST
@given(pairs(), st.sampled_from(["full", "same"]))
def test_cross_correlate_matches_scipy_with_template_second(fg: tuple, mode: str) -> None:
    f, g = fg
    expected = scipy.signal.correlate(g, f, mode=mode, method="direct")
    np.testing.assert_array_equal(cross_correlate(f, g, mode), expected)


def test_cross_correlate_follows_seed_definition_lag_by_lag() -> None:
    """(f ⋆ g)[n] = Σ_m f[m] g[n + m]; full-mode index i is the lag n = i − (len f − 1)."""
    f = np.array([1, 2, 3])
    g = np.array([4, 0, -1, 5, 2])
    out = cross_correlate(f, g)
    for i, value in enumerate(out):
        lag = i - (len(f) - 1)
        expected = sum(f[m] * g[lag + m] for m in range(len(f)) if 0 <= lag + m < len(g))
        assert value == expected


# --- seed 003, section 3.4: convolution behaves like multiplication -----------------------


@FAST
@given(pairs())
def test_convolution_is_commutative(fg: tuple) -> None:
    f, g = fg
    np.testing.assert_array_equal(convolve(f, g), convolve(g, f))


@FAST
@given(pairs(count=3))
def test_convolution_is_associative(fgh: tuple) -> None:
    f, g, h = fgh
    np.testing.assert_array_equal(convolve(convolve(f, g), h), convolve(f, convolve(g, h)))


@FAST
@given(same_shape_pair())
def test_convolution_distributes_over_addition(fgh: tuple) -> None:
    f, g, h = fgh
    np.testing.assert_array_equal(convolve(f, g + h), convolve(f, g) + convolve(f, h))


@FAST
@given(pairs(), st.data())
def test_convolution_is_shift_invariant(fg: tuple, data: st.DataObject) -> None:
    """Seed 003 eq. 3: delaying the input by b delays the output by b."""
    f, g = fg
    steps = tuple(data.draw(st.integers(0, 4)) for _ in range(g.ndim))
    np.testing.assert_array_equal(convolve(f, shift(g, steps)), shift(convolve(f, g), steps))


@FAST
@given(pairs(), st.data())
def test_derivative_of_convolution_is_convolution_with_derivative(
    fg: tuple, data: st.DataObject
) -> None:
    """Seed 003 eq. 7 for k = 1 with the forward difference D: D(f * g) = f * Dg = Df * g."""
    f, g = fg
    axis = data.draw(st.integers(0, g.ndim - 1))
    derivative = forward_difference(convolve(f, g), axis=axis)
    np.testing.assert_array_equal(derivative, convolve(f, forward_difference(g, axis=axis)))
    np.testing.assert_array_equal(derivative, convolve(forward_difference(f, axis=axis), g))


def test_forward_difference_of_a_sequence() -> None:
    """Zero-extended on both sides: the first entry is f[0] − 0, the last 0 − f[-1]."""
    np.testing.assert_array_equal(forward_difference(np.array([1, 4, 9])), [1, 3, 5, -9])


# --- seed 003, section 4: cross-correlation -------------------------------------------------


@FAST
@given(pairs())
def test_cross_correlation_is_convolution_with_the_reflection(fg: tuple) -> None:
    """Seed 003 eq. 10–11: f ⋆ g = f⁻ * g = g * f⁻."""
    f, g = fg
    np.testing.assert_array_equal(cross_correlate(f, g), convolve(flip(f), g))
    np.testing.assert_array_equal(cross_correlate(f, g), convolve(g, flip(f)))


def test_cross_correlation_is_not_commutative_concrete() -> None:
    """f ⋆ g ≠ g ⋆ f for f = [1, 2], g = [0, 1, 3] (seed 003 eq. 11)."""
    f = np.array([1, 2])
    g = np.array([0, 1, 3])
    # Lags −1, 0, 1, 2 of f ⋆ g: Σ_m f[m] g[n + m].
    np.testing.assert_array_equal(cross_correlate(f, g), [0, 2, 7, 3])
    # Lags −2, −1, 0, 1 of g ⋆ f: the same numbers with the lag negated, so reversed.
    np.testing.assert_array_equal(cross_correlate(g, f), [3, 7, 2, 0])
    assert not np.array_equal(cross_correlate(f, g), cross_correlate(g, f))
    # Convolution of the same pair commutes.
    np.testing.assert_array_equal(convolve(f, g), convolve(g, f))


@FAST
@given(pairs())
def test_swapping_cross_correlation_arguments_reverses_the_output(fg: tuple) -> None:
    """(g ⋆ f)[n] = (f ⋆ g)[−n]: swapping the arguments reflects the lags, so the two agree
    only when f ⋆ g is symmetric."""
    f, g = fg
    np.testing.assert_array_equal(cross_correlate(g, f), flip(cross_correlate(f, g)))


def test_cross_correlation_is_not_associative_concrete() -> None:
    """(f ⋆ g) ⋆ h ≠ f ⋆ (g ⋆ h) (seed 003 eq. 12)."""
    f, g, h = np.array([1, 2]), np.array([0, 1, 3]), np.array([1, -1])
    left = cross_correlate(cross_correlate(f, g), h)
    right = cross_correlate(f, cross_correlate(g, h))
    assert left.shape == right.shape
    assert not np.array_equal(left, right)


def test_flip_reflects_every_axis() -> None:
    np.testing.assert_array_equal(flip(np.array([[1, 2], [3, 4]])), [[4, 3], [2, 1]])


def test_bad_signals_are_user_errors() -> None:
    with pytest.raises(InvalidInputError, match="same number of axes"):
        convolve(np.ones(3), np.ones((2, 2)))
    with pytest.raises(InvalidInputError, match="mode"):
        convolve(np.ones(3), np.ones(2), mode="circular")
    with pytest.raises(InvalidInputError, match="valid"):
        convolve(np.ones((2, 5)), np.ones((3, 2)), mode="valid")
