"""The structure lenses: each estimator on inputs whose answer is known, then the validation
suite (weightdna.experiments.structured and a real MiniLM matrix): every lens flags the
tensors it is meant to flag, and no lens flags the random ones or MiniLM's query matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightdna.analysis.baselines import row_shuffled_like
from weightdna.analysis.run import analyze_weights
from weightdna.analysis.separability import KroneckerRank, kronecker_rearrange
from weightdna.analysis.settings import AnalysisSettings
from weightdna.analysis.similarity import RowMatch
from weightdna.analysis.smoothness import WindowRoughness
from weightdna.analysis.structure import STRUCTURED, structured, summary_sentences
from weightdna.analysis.transform import TransformEnergy, real_dft
from weightdna.errors import InvalidInputError
from weightdna.experiments.structured import SUITE, dct_basis, windowed_dft_basis
from weightdna.weights import ModelWeights, load_weights, minilm_path

# The lenses alone, on small samples: the suite runs in seconds.
FAST = AnalysisSettings(seed_claims=False, dna_tensors=0, max_rows=256, knn_points=300)
RANDOM = ("gaussian", "laplace")


def test_row_shuffle_keeps_each_rows_values_and_moves_them() -> None:
    W = np.random.default_rng(1).normal(size=(20, 50))
    S = row_shuffled_like(W, 3)
    assert np.array_equal(np.sort(S, axis=1), np.sort(W, axis=1))
    assert np.mean(S != W) > 0.9


def test_real_dft_is_orthonormal_for_even_and_odd_lengths() -> None:
    for n in (64, 63):
        X = np.random.default_rng(n).normal(size=(5, n))
        C = real_dft(X)
        assert C.shape == X.shape
        np.testing.assert_allclose((C**2).sum(axis=1), (X**2).sum(axis=1), rtol=1e-12)


def test_a_dct_basis_is_one_coefficient_per_row() -> None:
    est = TransformEnergy("dct", "rows").fit(dct_basis(64))
    # One coefficient per row, each holding 1/64 of the energy: 95% needs 61 of 64·64.
    assert est.sparsity_ == pytest.approx(61 / 64**2, abs=1e-12)
    assert est.compaction_ > 0.9  # but a different one in every row


def test_a_hann_dft_basis_is_three_dft_coefficients_per_row() -> None:
    est = TransformEnergy("dft", "rows").fit(windowed_dft_basis(256, "hann"))
    # A Hann window spreads each frequency over three bins.
    assert est.sparsity_ <= 3 / 256 + 1e-9
    lo, hi = est.sparsity_interval_
    assert lo <= est.sparsity_ <= hi


def test_kronecker_rank_of_a_product_is_one() -> None:
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(6, 4)), rng.normal(size=(5, 7))
    W = np.kron(A, B) + np.kron(rng.normal(size=(6, 4)), rng.normal(size=(5, 7)))
    R = kronecker_rearrange(W, 6, 4)
    assert np.linalg.matrix_rank(R) == 2
    est = KroneckerRank([(6, 4), (3, 2)], threshold=0.999999).fit(W)
    assert est.factor_shape_ == (6, 4) and est.rank_ == 2
    assert est.cost_ == pytest.approx(2 * (24 + 35) / W.size)


def test_window_roughness_is_one_for_independent_taps_and_small_for_smooth_ones() -> None:
    rng = np.random.default_rng(0)
    iid = WindowRoughness((5, 5)).fit(rng.normal(size=(400, 25)))
    assert iid.roughness_ == pytest.approx(1.0, abs=0.05)
    y, x = np.mgrid[0:5, 0:5] / 4.0
    smooth = np.stack([a * x + b * y + c * x * y for a, b, c in rng.normal(size=(400, 3))])
    est = WindowRoughness((5, 5)).fit(smooth)
    assert est.roughness_ < 0.2 and est.interval_[1] < iid.interval_[0]


def test_row_match_finds_a_permuted_scaled_copy_and_not_a_random_matrix() -> None:
    rng = np.random.default_rng(0)
    W = rng.normal(size=(100, 64))
    order = rng.permutation(100)
    copy = RowMatch().fit(3.0 * W[order], W)
    assert copy.residual_ < 1e-12 and copy.matched_ == 1.0 and copy.in_place_ < 0.1
    again = RowMatch().fit(W[:10], W, np.arange(10), np.arange(100), exclude_same=True)
    assert again.residual_ > 0.5  # a row is not matched to itself
    assert RowMatch().fit(rng.normal(size=(100, 64)), W).residual_ > 0.7


def smooth_kernels(out: int = 32, in_: int = 4, size: int = 7, seed: int = 0) -> np.ndarray:
    """Conv kernels that are low-order polynomials over each window: spatially smooth."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    basis = np.stack([np.ones_like(x), x, y, x * y, x**2, y**2])
    return np.einsum("oib,bhw->oihw", rng.normal(size=(out, in_, 6)), basis).astype(np.float32)


@pytest.fixture(scope="module")
def suite_map() -> dict:
    """The suite, plus smooth conv kernels, analysed as one model: entries by tensor."""
    tensors = {m.name: torch.from_numpy(m.make()) for m in SUITE}
    tensors["smooth_kernels"] = torch.from_numpy(smooth_kernels())
    analysis = analyze_weights(ModelWeights.from_tensors(tensors), settings=FAST)
    return {s.tensor: s for s in analysis.structure}


EXPECTED = {
    **{m.name: "dft_rows_sparsity" for m in SUITE if m.kind == "windowed DFT"},
    "dct256": "dct_rows_sparsity",
    "gabor": "dct_window_sparsity",
    "kronecker": "kronecker_cost",
    "smooth": "dct_columns_compaction",
    "lowrank": "lowrank_cost",
    "smooth_kernels": "window_roughness",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_lens_flags_the_structure_it_is_meant_for(suite_map, name: str) -> None:
    entry = suite_map[name]
    flagged = {f.lens.key: f for f in entry.findings if f.verdict == STRUCTURED}
    assert EXPECTED[name] in flagged, (name, sorted(flagged))
    assert entry.verdict == STRUCTURED


def test_windowed_dft_bases_are_named_by_the_dft_lens(suite_map) -> None:
    for m in SUITE:
        if m.kind == "windowed DFT":
            best = suite_map[m.name].best
            assert best.lens.key == "dft_rows_sparsity" and best.ratio < 0.1, m.name
            assert "DFT along rows" in best.lens.name and best.bits_saved > 0


@pytest.mark.parametrize("name", RANDOM)
def test_no_lens_flags_iid_weights(suite_map, name: str) -> None:
    entry = suite_map[name]
    assert entry.verdict != STRUCTURED
    assert not [f.lens.key for f in entry.findings if f.verdict == STRUCTURED]


def test_minilm_is_not_structured_and_its_tied_copy_is() -> None:
    weights = load_weights(minilm_path())
    query = weights.numpy("encoder.layer.0.attention.self.query.weight", np.float32)
    rng = np.random.default_rng(5)
    tensors = {
        "query": torch.from_numpy(query),
        "tied": torch.from_numpy(2.5 * query[rng.permutation(len(query))]),
        "noise": torch.from_numpy(rng.normal(size=query.shape).astype(np.float32)),
    }
    analysis = analyze_weights(ModelWeights.from_tensors(tensors), settings=FAST)
    entries = {s.tensor: s for s in analysis.structure}
    tied = entries["tied"]
    assert tied.verdict == STRUCTURED and tied.best.lens.key == "tied_residual"
    assert "query" in tied.best.detail
    for name in ("query", "tied"):  # nothing within the matrix itself
        within = [f.lens.key for f in entries[name].findings
                  if f.verdict == STRUCTURED and f.lens.key != "tied_residual"]
        assert within == [], (name, within)
    assert entries["noise"].verdict != STRUCTURED
    assert [s.tensor for s in structured(analysis.structure)] == ["query", "tied"] or \
        [s.tensor for s in structured(analysis.structure)] == ["tied", "query"]
    assert summary_sentences(analysis.structure)[0].startswith("2 of 3 tensors")


def test_lenses_refuse_inputs_they_cannot_measure() -> None:
    with pytest.raises(InvalidInputError, match="all zeros"):
        TransformEnergy().fit(np.zeros((4, 8)))
    with pytest.raises(InvalidInputError, match="constant"):
        WindowRoughness((3, 3)).fit(np.ones((5, 9)))
    with pytest.raises(InvalidInputError, match="no factor shape"):
        KroneckerRank().fit(np.random.default_rng(0).normal(size=(11, 13)))


def test_awkward_shapes_are_measured_or_marked_missing() -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "prime": torch.from_numpy(rng.normal(size=(11, 13)).astype(np.float32)),
        "pointwise": torch.from_numpy(rng.normal(size=(16, 8, 1, 1)).astype(np.float32)),
        "zero_rows": torch.from_numpy(np.vstack([np.zeros((8, 12)), rng.normal(size=(8, 12))])
                                      .astype(np.float32)),
    }
    analysis = analyze_weights(ModelWeights.from_tensors(tensors), settings=FAST)
    by_name = {t.name: t for t in analysis.tensors}
    assert "no factor shape" in by_name["prime"].missing["kronecker_cost"]
    assert "window_roughness" not in by_name["pointwise"].stats  # 1×1 windows: no neighbours
    assert "dct_rows_sparsity" in by_name["zero_rows"].stats
    assert not structured(analysis.structure)


def test_rows_repeated_within_a_tensor_are_found() -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(size=(8, 48))
    tensors = {"repeated": torch.from_numpy(np.tile(block, (8, 1)).astype(np.float32))}
    analysis = analyze_weights(ModelWeights.from_tensors(tensors), settings=FAST)
    entry = analysis.structure[0]
    flagged = {f.lens.key: f for f in entry.findings if f.verdict == STRUCTURED}
    assert "tied_residual" in flagged
    assert "other rows of the same tensor" in flagged["tied_residual"].detail
    assert analysis.tensors[0].details["tied_partner"]["matched_rows"] == 1.0
