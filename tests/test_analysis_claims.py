"""Verdicts on the seed's claims, on synthetic tensors whose answer is known.

A matrix of rank 3 holds 95% of its energy in 3 of 60 directions (k95/D = 0.05, the
seed's number) and a Gaussian one needs about 40: the PCA claim holds for the first and
fails for the second. A smooth surface has neighbour ratios |Δw|/|Δc| in the claimed 5–10
while its shuffle has ratios in the hundreds: the Lipschitz claim holds. Gaussian weights
scaled into 5–10 are in range but no different from their own shuffle: inconclusive.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightdna.analysis import LipschitzConstant
from weightdna.analysis.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    judge,
    judge_claims,
    judge_tensor,
)
from weightdna.analysis.measure import Measure
from weightdna.analysis.run import AnalysisSettings, ModelAnalysis, analyze_tensor
from weightdna.weights import ModelWeights

CLAIM = {c.key: c for c in CLAIMS}
SETTINGS = AnalysisSettings(local_points=50, correlation_points=120, knn_points=120)


def analysed(W: np.ndarray, name: str = "layer.weight"):
    """analyze_tensor on one matrix, without a DNA."""
    weights = ModelWeights.from_tensors({name: torch.from_numpy(W.astype(np.float32))})
    return analyze_tensor(weights, weights.info(name), SETTINGS)


@pytest.fixture(scope="module")
def low_rank():
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.normal(size=(120, 3)))
    V, _ = np.linalg.qr(rng.normal(size=(60, 3)))
    return analysed(U @ V.T)


@pytest.fixture(scope="module")
def gaussian():
    return analysed(np.random.default_rng(2).normal(0.0, 0.05, size=(120, 60)))


def test_judge_applies_the_stated_rule() -> None:
    far = {"shuffled": Measure(5.0, 4.5, 5.5), "gaussian": Measure(6.0, 5.8, 6.2)}
    assert judge(Measure(1.0, 0.9, 1.1), (0.5, 2.0), nulls=far)[0] == HOLDS
    assert judge(Measure(3.0, 2.9, 3.1), (0.5, 2.0), nulls=far)[0] == FAILS
    # Inside the range but inside a null's interval too: no evidence of structure.
    verdict, reason = judge(Measure(1.0, 0.9, 1.1), (0.5, 2.0),
                            nulls={"gaussian": Measure(1.05, 0.8, 1.3)})
    assert verdict == INCONCLUSIVE and "gaussian" in reason
    # An interval across an end of the range decides nothing.
    assert judge(Measure(1.9, 1.5, 2.5), (0.5, 2.0), nulls=far)[0] == INCONCLUSIVE
    assert judge(Measure(0.2), (None, 0.7))[0] == HOLDS
    assert judge(Measure(0.2), (None, 0.7), unreliable="too few points")[0] == INCONCLUSIVE
    assert judge(Measure(math.nan), (0.0, 1.0))[0] == INCONCLUSIVE


def test_a_low_rank_matrix_passes_the_pca_claim(low_rank) -> None:
    verdict = judge_tensor(CLAIM["pca"], low_rank)
    assert low_rank.value("pca_k95_fraction") == pytest.approx(3 / 60)
    assert low_rank.value("pca_k95_fraction", "gaussian") > 0.5
    assert verdict.verdict == HOLDS, verdict.reason


def test_a_gaussian_matrix_fails_the_pca_claim(gaussian) -> None:
    verdict = judge_tensor(CLAIM["pca"], gaussian)
    assert verdict.verdict == FAILS, verdict.reason
    assert gaussian.value("pca_k95_fraction") > 0.5


def test_a_smooth_surface_passes_the_lipschitz_claim_and_its_shuffle_does_not() -> None:
    x = np.linspace(-1, 1, 120)[:, None]
    y = np.linspace(-1, 1, 60)[None, :]
    # |∂w/∂x| = 2.4π |cos(πx) cos(πy)| ≤ 2.4π ≈ 7.5: the neighbour ratios stay below it.
    W = 2.4 * np.sin(np.pi * x) * np.cos(np.pi * y)
    t = analysed(W)
    assert 5.0 < t.value("lipschitz_q99") < 10.0
    assert t.value("lipschitz_q99", "shuffled") > 50.0
    assert judge_tensor(CLAIM["lipschitz"], t).verdict == HOLDS
    assert t.value("local_linearity_r2") > 0.99 > t.value("local_linearity_r2", "shuffled")


def test_gaussian_weights_in_the_lipschitz_range_are_inconclusive() -> None:
    # Scaled so that |Δw|/|Δc| has its 99th percentile inside 5–10, as the seed's number
    # may be met by chance; the shuffle and the Gaussian meet it just as well.
    W = np.random.default_rng(3).normal(0.0, 1.0, size=(120, 60))
    W *= 7.5 / LipschitzConstant(quantiles=(0.99,)).fit(W).quantiles_[0.99]
    t = analysed(W)
    assert 5.0 < t.value("lipschitz_q99") < 10.0
    verdict = judge_tensor(CLAIM["lipschitz"], t)
    assert verdict.verdict == INCONCLUSIVE, verdict.reason


def test_the_entropy_claim_compares_to_random_weights_at_the_same_step(gaussian) -> None:
    ternary = np.random.default_rng(4).choice([-0.05, 0.0, 0.05], size=(120, 60))
    t = analysed(ternary)
    assert t.value("entropy_ratio") < 0.35  # log2(3) bits against ~6 for the Gaussian
    assert judge_tensor(CLAIM["entropy"], t).verdict == HOLDS
    assert judge_tensor(CLAIM["entropy"], gaussian).verdict == FAILS


def test_the_model_verdict_is_the_majority_of_tensors(low_rank, gaussian) -> None:
    analysis = ModelAnalysis("<memory>", "memory", SETTINGS, [low_rank, low_rank, gaussian],
                             {}, 0)
    verdicts = {c.key: c for c in judge_claims(analysis)}
    assert verdicts["pca"].verdict == HOLDS
    assert "2 holds" in verdicts["pca"].evidence and "1 fails" in verdicts["pca"].evidence
    analysis.tensors = [low_rank, gaussian]
    assert {c.key: c for c in judge_claims(analysis)}["pca"].verdict == INCONCLUSIVE
    # No DNA was fitted: its claims are reported as not measured, never guessed.
    assert verdicts["dna_psnr"].verdict == INCONCLUSIVE
    assert "not measured" in verdicts["dna_psnr"].evidence
