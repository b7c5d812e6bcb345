"""The analysis estimators recover known dimensions, spectra, slopes and entropies.

Synthetic manifolds of known intrinsic dimension d, embedded by a random rotation in a
larger space with a little Gaussian noise. Tolerances are stated per test and follow what
each estimator is known to achieve at this N: local PCA counts exactly on flat or gently
curved pieces; Grassberger–Procaccia, MLE and TwoNN underestimate on balls (boundary
effects) as d grows, so the tolerance widens with d.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from weightdna.analysis import (
    CorrelationDimension,
    Entropy,
    LipschitzConstant,
    LocalDimension,
    LocalLinearity,
    MLEDimension,
    PCAEnergy,
    TwoNN,
    bootstrap_interval,
    null_baselines,
)
from weightdna.analysis._neighbors import query_neighbors
from weightdna.analysis.linearity import tangent_filter
from weightdna.analysis.sampling import sample_indices
from weightdna.errors import InvalidInputError

N = 1500


def embed(Y: np.ndarray, D: int, noise: float = 1e-4, seed: int = 0) -> np.ndarray:
    """Y (n, d) placed in the first d axes of R^D, rotated at random, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    Z = np.zeros((len(Y), D))
    Z[:, : Y.shape[1]] = Y
    return Z @ Q + noise * rng.normal(size=Z.shape)


def ball(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * rng.uniform(size=(n, 1)) ** (1.0 / d)


def sphere(n: int, d: int, seed: int) -> np.ndarray:
    """Uniform on the unit d-sphere in R^(d+1)."""
    x = np.random.default_rng(seed).normal(size=(n, d + 1))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def helix(n: int, seed: int) -> np.ndarray:
    t = np.random.default_rng(seed).uniform(0, 4 * np.pi, n)
    return np.c_[np.cos(t), np.sin(t), 0.2 * t]


def swiss_roll(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    return np.c_[t * np.cos(t), 21 * rng.uniform(size=n), t * np.sin(t)]


# name → (points, true dimension); every manifold sits in a higher-dimensional space.
MANIFOLDS = {
    "plane 2-D in 10-D": (embed(np.random.default_rng(1).uniform(-1, 1, (N, 2)), 10), 2),
    "sphere S2 in 6-D": (embed(sphere(N, 2, 2), 6), 2),
    "helix in 5-D": (embed(helix(N, 3), 5), 1),
    "swiss roll in 5-D": (embed(swiss_roll(N, 4), 5), 2),
    "ball 3-D in 6-D": (embed(ball(N, 3, 5), 6), 3),
    "ball 5-D in 10-D": (embed(ball(N, 5, 6), 10), 5),
}


def rel_tol(d: int, base: float) -> float:
    """Relative tolerance: base for d ≤ 3, wider for d = 5 where boundary bias grows."""
    return base if d <= 3 else 2 * base


@pytest.mark.parametrize("name", MANIFOLDS)
def test_local_dimension_counts_the_manifold_dimension(name: str) -> None:
    X, d = MANIFOLDS[name]
    est = LocalDimension(n_neighbors=50, max_points=300).fit(X)
    # Local PCA with 50 neighbours counts exactly on these gently curved manifolds.
    assert abs(est.dimension_ - d) <= 0.1
    assert est.dimension_pw_.shape == (300,) and est.sample_size_ == 300
    lo, hi = est.interval_
    assert lo <= est.dimension_ <= hi


def test_local_dimension_of_noise_reaches_its_cap() -> None:
    # 30 neighbours in 384-D Gaussian noise span 29 directions of nearly equal variance
    # (384 ≫ 30: the Marchenko–Pastur spread is small), so all 29 count.
    X = np.random.default_rng(0).normal(size=(400, 384))
    est = LocalDimension(n_neighbors=30, max_points=100).fit(X)
    assert est.max_dimension_ == 29
    assert est.dimension_ == est.max_dimension_


def test_local_dimension_explained_variance_rule() -> None:
    # Variances 1, 1, 0.01 per axis: 95% of the variance needs 2 directions, 99.9% needs 3.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 3)) * np.array([1.0, 1.0, 0.1])
    two = LocalDimension(n_neighbors=400, threshold=0.95, rule="explained_variance").fit(X)
    three = LocalDimension(n_neighbors=400, threshold=0.999, rule="explained_variance").fit(X)
    assert two.dimension_ == pytest.approx(2.0, abs=0.05)
    assert three.dimension_ == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_correlation_dimension_recovers_the_dimension(name: str) -> None:
    X, d = MANIFOLDS[name]
    est = CorrelationDimension(n_bootstrap=20).fit(X)
    # GP underestimates balls (points near the boundary have fewer neighbours): 10% for
    # d ≤ 3, 20% for the 5-ball at this N.
    assert est.dimension_ == pytest.approx(d, rel=rel_tol(d, 0.10))
    assert est.plateau_found_ and est.reliable_
    lo, hi = est.interval_
    assert lo < hi and hi - lo < 0.2 * d
    assert est.r_range_[0] < est.r_range_[1]
    assert est.local_slopes_.shape == (est.log_r_.size - 1,)
    assert np.all(np.diff(est.log_C_) >= 0)  # C(r) never decreases


def test_correlation_dimension_flags_estimates_above_eckmann_ruelle() -> None:
    # 300 points allow at most 2·log10(300) ≈ 4.95; a 10-ball cannot be resolved.
    X = embed(ball(300, 10, 7), 12)
    est = CorrelationDimension(n_bootstrap=0).fit(X)
    assert est.eckmann_ruelle_limit_ == pytest.approx(2 * np.log10(300))
    assert est.dimension_ > est.eckmann_ruelle_limit_
    assert not est.reliable_
    assert est.interval_ is None


def test_correlation_dimension_subsamples_with_a_fixed_seed() -> None:
    X = MANIFOLDS["sphere S2 in 6-D"][0]
    a = CorrelationDimension(max_points=500, n_bootstrap=0, random_state=3).fit(X)
    b = CorrelationDimension(max_points=500, n_bootstrap=0, random_state=3).fit(X)
    c = CorrelationDimension(max_points=500, n_bootstrap=0, random_state=4).fit(X)
    assert a.sample_size_ == 500
    assert a.dimension_ == b.dimension_
    assert not np.array_equal(a.sample_indices_, c.sample_indices_)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_mle_dimension_recovers_the_dimension(name: str) -> None:
    X, d = MANIFOLDS[name]
    est = MLEDimension().fit(X)
    assert est.dimension_ == pytest.approx(d, rel=rel_tol(d, 0.10))
    lo, hi = est.interval_
    assert lo <= est.dimension_ <= hi


def test_mle_dimension_averages_inverses() -> None:
    X = MANIFOLDS["ball 3-D in 6-D"][0]
    est = MLEDimension(n_neighbors=10, max_points=None).fit(X)
    assert est.dimension_ == pytest.approx(1.0 / np.mean(1.0 / est.dimension_pw_))
    # The harmonic mean lies below the arithmetic mean whenever the estimates differ.
    assert est.dimension_ < est.dimension_pw_.mean()


@pytest.mark.parametrize("name", MANIFOLDS)
def test_twonn_recovers_the_dimension(name: str) -> None:
    X, d = MANIFOLDS[name]
    est = TwoNN().fit(X)
    assert est.dimension_ == pytest.approx(d, rel=rel_tol(d, 0.12))
    lo, hi = est.interval_
    assert lo < hi


def test_twonn_sees_noise_at_the_smallest_scale() -> None:
    # Noise of a third of the neighbour spacing (~0.05) makes the plane look 5-dimensional to
    # TwoNN, which looks only at the two nearest neighbours; local PCA on 50 neighbours and
    # the correlation dimension's plateau, at larger r, still see 2.
    X = embed(np.random.default_rng(1).uniform(-1, 1, (N, 2)), 10, noise=0.01)
    assert TwoNN().fit(X).dimension_ > 4
    assert LocalDimension(n_neighbors=50, max_points=200).fit(X).dimension_ == pytest.approx(2)
    assert CorrelationDimension(n_bootstrap=0).fit(X).dimension_ == pytest.approx(2, rel=0.1)


def test_pca_energy_on_a_known_spectrum() -> None:
    rng = np.random.default_rng(0)
    energy = np.array([0.40, 0.30, 0.18, 0.08, 0.025, 0.015])  # cumulative 0.4 … 0.985, 1
    U, _ = np.linalg.qr(rng.normal(size=(50, 6)))
    V, _ = np.linalg.qr(rng.normal(size=(20, 6)))
    X = (U * np.sqrt(energy)) @ V.T
    est = PCAEnergy().fit(X)
    assert est.k_ == {0.90: 4, 0.95: 4, 0.99: 6}
    assert est.n_components_ == 20
    assert est.k_fraction_[0.95] == pytest.approx(4 / 20)
    np.testing.assert_allclose(est.spectrum_[:6] / est.spectrum_.sum(), energy, atol=1e-12)
    np.testing.assert_allclose(est.energy_[5:], 1.0, atol=1e-12)
    # The spectrum of X.T is the spectrum of X.
    transposed = PCAEnergy().fit(X.T)
    np.testing.assert_allclose(transposed.spectrum_, est.spectrum_, rtol=1e-10, atol=1e-14)


def test_pca_energy_matches_a_direct_count() -> None:
    X = np.random.default_rng(1).normal(size=(120, 40)) @ np.diag(np.linspace(3, 0.1, 40))
    est = PCAEnergy(thresholds=(0.5, 0.8, 0.95)).fit(X)
    s2 = np.linalg.svd(X, compute_uv=False) ** 2
    for t, k in est.k_.items():
        assert s2[:k].sum() >= t * s2.sum() > s2[: k - 1].sum()


def test_pca_energy_centering() -> None:
    # A large common offset holds almost all the energy unless it is removed.
    X = np.random.default_rng(2).normal(size=(200, 30)) + 50.0
    assert PCAEnergy().fit(X).k_[0.95] == 1
    assert PCAEnergy(center=True).fit(X).k_[0.95] > 20


def test_lipschitz_of_a_smooth_function_and_of_its_shuffle() -> None:
    m, n = 201, 51
    x = 2 * np.arange(m) / (m - 1) - 1
    y = 2 * np.arange(n) / (n - 1) - 1
    W = np.sin(np.pi * x)[:, None] + 0.5 * y[None, :]
    est = LipschitzConstant().fit(W)
    # Finite differences of sin(πx) peak at π·sinc(Δ/2) ≈ π(1 − 4e-5) for Δ = 0.01.
    assert est.max_by_axis_[0] == pytest.approx(np.pi, rel=1e-3)
    assert est.max_by_axis_[0] <= np.pi
    assert est.max_by_axis_[1] == pytest.approx(0.5, rel=1e-9)
    assert est.max_ == est.max_by_axis_[0]
    assert est.n_pairs_ == (m - 1) * n + m * (n - 1) == est.ratios_.size  # all kept: < 100k
    assert LipschitzConstant(max_stored=500).fit(W).ratios_.size == 500
    q = est.quantiles_
    assert q[0.5] <= q[0.9] <= q[0.99] <= est.max_
    shuffled = np.random.default_rng(0).permutation(W.ravel()).reshape(W.shape)
    assert LipschitzConstant().fit(shuffled).max_ > 30 * est.max_


def test_lipschitz_of_a_vector_uses_its_one_axis() -> None:
    w = np.array([0.0, 1.0, 3.0])  # coordinates −1, 0, 1: slopes 1 and 2
    est = LipschitzConstant().fit(w)
    assert est.max_ == pytest.approx(2.0)
    assert list(est.max_by_axis_) == [1]
    with pytest.raises(InvalidInputError):
        LipschitzConstant().fit(np.ones((1, 1)))


def test_entropy_of_a_uniform_quantised_variable_is_log2_levels() -> None:
    levels = 37
    w = np.repeat(np.arange(levels), 100).astype(float)
    est = Entropy(n_bins=levels, step=1.0).fit(w)
    assert est.quantized_entropy_bits_ == pytest.approx(np.log2(levels), abs=1e-12)
    assert est.n_levels_ == levels
    assert est.entropy_bits_ == pytest.approx(np.log2(levels), abs=1e-12)
    assert est.n_bins_ == levels


def test_quantised_entropy_of_a_gaussian_is_h_minus_log2_step() -> None:
    sigma = 0.7
    w = np.random.default_rng(0).normal(0, sigma, 400_000)
    h = 0.5 * np.log2(2 * np.pi * np.e * sigma**2)
    est = Entropy().fit(w)
    assert est.step_ == pytest.approx(w.std() / 16)
    assert est.quantized_entropy_bits_ == pytest.approx(h - np.log2(est.step_), abs=0.01)
    fixed = Entropy(step=0.05).fit(w)
    assert fixed.quantized_entropy_bits_ == pytest.approx(h - np.log2(0.05), abs=0.01)
    # The histogram's differential entropy estimates h (Freedman–Diaconis bins).
    assert est.differential_entropy_bits_ == pytest.approx(h, abs=0.02)


def test_entropy_of_constant_weights_is_zero() -> None:
    est = Entropy().fit(np.full(100, 0.25))
    assert est.entropy_bits_ == 0.0 and est.quantized_entropy_bits_ == 0.0


def test_local_linearity_is_perfect_on_a_plane_and_poor_on_noise() -> None:
    i, j = np.meshgrid(np.arange(60), np.arange(40), indexing="ij")
    plane = 3.0 * i - 2.0 * j + 1.0
    est = LocalLinearity().fit(plane)
    assert est.r2_ == pytest.approx(1.0, abs=1e-12)
    assert est.relative_error_ < 1e-12
    assert est.shuffled_r2_ < 0.0
    assert est.n_predicted_ == 58 * 38
    noise = np.random.default_rng(0).normal(size=(200, 200))
    # For i.i.d. weights the 3×3 plane predicts the mean of 8 neighbours: R² = −1/8.
    assert LocalLinearity().fit(noise).r2_ == pytest.approx(-1 / 8, abs=0.02)


def test_local_linearity_on_a_smooth_surface_and_a_quadric() -> None:
    x = np.linspace(-1, 1, 80)
    smooth = np.sin(2 * x)[:, None] * np.cos(3 * x)[None, :]
    est = LocalLinearity().fit(smooth)
    assert est.r2_ > 0.99 and est.shuffled_r2_ < 0.0
    i, j = np.meshgrid(np.arange(30.0), np.arange(30.0), indexing="ij")
    quadric = i * i - 3 * i * j + 0.5 * j * j
    assert LocalLinearity(degree=1).fit(quadric).relative_error_ > 1e-3
    assert LocalLinearity(window=5, degree=2).fit(quadric).relative_error_ < 1e-10


def test_tangent_plane_on_a_symmetric_window_is_the_neighbours_mean() -> None:
    h = tangent_filter(3, degree=1)
    expected = np.full((3, 3), 1 / 8)
    expected[1, 1] = 0.0
    np.testing.assert_allclose(h, expected, atol=1e-12)
    with pytest.raises(InvalidInputError):
        tangent_filter(4)


def test_sampling_is_seeded_and_bootstrap_covers_the_mean() -> None:
    assert np.array_equal(sample_indices(1000, 50, 7), sample_indices(1000, 50, 7))
    assert np.array_equal(sample_indices(10, 50, 7), np.arange(10))
    values = np.random.default_rng(0).normal(5.0, 1.0, 400)
    lo, hi = bootstrap_interval(values, n_bootstrap=500)
    # The 95% interval of a mean of 400 unit-variance values is about ±0.1 wide.
    assert lo < values.mean() < hi and 0.1 < hi - lo < 0.3


def test_neighbours_exclude_the_point_itself_even_with_duplicates() -> None:
    X = np.array([[0.0], [0.0], [1.0], [3.0], [7.0]])
    dist, idx = query_neighbors(X, np.arange(5), 2)
    for q in range(5):
        assert q not in idx[q]
    assert dist[0, 0] == 0.0 and idx[0, 0] == 1


def test_estimators_reject_bad_input_with_a_clear_error() -> None:
    bad = np.ones((10, 3))
    bad[0, 0] = np.nan
    for est in (PCAEnergy(), LocalDimension(), MLEDimension(), TwoNN(), LipschitzConstant()):
        with pytest.raises(InvalidInputError):
            est.fit(bad)
    with pytest.raises(InvalidInputError):
        LocalDimension(rule="elbow").fit(np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(InvalidInputError):
        PCAEnergy(thresholds=(1.5,)).fit(np.eye(3))


def test_estimators_follow_the_scikit_learn_contract() -> None:
    X = MANIFOLDS["helix in 5-D"][0][:300]
    for est in (
        PCAEnergy(),
        LocalDimension(n_neighbors=20),
        CorrelationDimension(n_bootstrap=0),
        MLEDimension(),
        TwoNN(),
        LipschitzConstant(),
        Entropy(),
        LocalLinearity(),
    ):
        assert est.fit(X) is est
        copy = clone(est)
        assert copy.get_params() == est.get_params()
        assert not any(name.endswith("_") for name in vars(copy))  # unfitted: no results yet


def test_null_baselines_fit_clones_on_shuffled_and_gaussian_weights() -> None:
    rng = np.random.default_rng(0)
    low_rank = rng.normal(size=(120, 3)) @ rng.normal(size=(3, 80)) + 5.0
    est = PCAEnergy()
    fitted = null_baselines(low_rank, est, random_state=1)
    assert set(fitted) == {"weights", "shuffled", "gaussian"}
    assert not hasattr(est, "k_")  # the estimator passed in is not fitted
    # Rank 3 plus an offset: at most 4 directions; shuffling or redrawing spreads the energy.
    assert fitted["weights"].k_[0.99] <= 4
    assert fitted["shuffled"].k_[0.99] > 20 and fitted["gaussian"].k_[0.99] > 20
    same_values = np.sort(fitted["shuffled"].singular_values_ ** 2).sum()
    assert same_values == pytest.approx(np.sum(low_rank**2))  # shuffling keeps Σw²
