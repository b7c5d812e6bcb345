"""Our estimators agree with scikit-dimension's on the same data (a test-only dependency).

Where both implement the same formula the agreement is exact (up to rounding): lPCA's
explained-variance rule vs PCAEnergy(center=True); lPCA("FO") on each point's neighbours vs
LocalDimension; MLE(comb="mle") vs MLEDimension; TwoNN vs TwoNN. CorrInt measures the
Grassberger–Procaccia slope between just two radii (the median 10th and 20th neighbour
distances) while we fit a plateau of local slopes, so there we ask for agreement within 6%.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from weightdna.analysis import (
    CorrelationDimension,
    LocalDimension,
    MLEDimension,
    PCAEnergy,
    TwoNN,
)

skdim = pytest.importorskip("skdim")

# scikit-dimension warns about its own divisions by zero (flat spectra); not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:::skdim")

N = 800


def _helix(n: int) -> np.ndarray:
    t = np.random.default_rng(0).uniform(0, 4 * np.pi, n)
    return np.c_[np.cos(t), np.sin(t), 0.2 * t]


def _plane_in_10d(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.uniform(-1, 1, (n, 2)) @ rng.normal(size=(2, 10))


DATASETS = {
    "ball 3-D": lambda: skdim.datasets.hyperBall(N, 3, random_state=0),
    "ball 5-D": lambda: skdim.datasets.hyperBall(N, 5, random_state=1),
    "sphere S2": lambda: skdim.datasets.hyperSphere(N, 2, random_state=2),
    "sphere S4": lambda: skdim.datasets.hyperSphere(N, 4, random_state=3),
    "swiss roll": lambda: skdim.datasets.swissRoll3Sph(N, 0, random_state=4),
    "helix": lambda: _helix(N),
    "plane in 10-D": lambda: _plane_in_10d(N),
    # A Gaussian 'weight matrix': no manifold, high dimension; the formulas must still agree.
    "gaussian 300x40": lambda: np.random.default_rng(5).normal(size=(300, 40)),
}


@pytest.fixture(params=list(DATASETS), scope="module")
def data(request: pytest.FixtureRequest) -> np.ndarray:
    return DATASETS[request.param]()


def test_pca_energy_matches_lpca_ratio(data: np.ndarray) -> None:
    ours = PCAEnergy(thresholds=(0.95,), center=True).fit(data).k_[0.95]
    theirs = skdim.id.lPCA(ver="ratio", alphaRatio=0.95).fit(data).dimension_
    assert ours == theirs


def test_local_dimension_matches_lpca_fo_pointwise(data: np.ndarray) -> None:
    ours = LocalDimension(n_neighbors=30, threshold=0.05, max_points=None).fit(data)
    theirs = skdim.id.lPCA(ver="FO", alphaFO=0.05).fit_pw(data, n_neighbors=30)
    np.testing.assert_array_equal(ours.dimension_pw_, theirs.dimension_pw_)


def test_mle_matches_skdim_mle(data: np.ndarray) -> None:
    ours = MLEDimension(n_neighbors=20, max_points=None).fit(data)
    theirs = skdim.id.MLE().fit(data, n_neighbors=20, comb="mle")
    assert ours.dimension_ == pytest.approx(theirs.dimension_, rel=1e-10)
    np.testing.assert_allclose(ours.dimension_pw_, theirs.dimension_pw_, rtol=1e-10)


def test_twonn_matches_skdim_twonn(data: np.ndarray) -> None:
    ours = TwoNN(discard_fraction=0.1, max_points=None).fit(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = skdim.id.TwoNN(discard_fraction=0.1).fit(data)
    assert ours.dimension_ == pytest.approx(theirs.dimension_, rel=1e-8)


@pytest.mark.parametrize(
    "name",
    ["ball 3-D", "ball 5-D", "sphere S2", "sphere S4", "swiss roll", "helix", "plane in 10-D"],
)
def test_correlation_dimension_near_skdim_corrint(name: str) -> None:
    X = DATASETS[name]()
    ours = CorrelationDimension(n_bootstrap=0).fit(X).dimension_
    theirs = skdim.id.CorrInt(k1=10, k2=20).fit(X).dimension_
    assert ours == pytest.approx(theirs, rel=0.06)
