"""Verdicts on the seed's claims: holds, fails or inconclusive, with the evidence in one line.

The rule, per tensor, for a claim "statistic s lies in range R":

* **fails** when the whole interval of s on the weights lies outside R;
* **holds** when the whole interval lies inside R *and* it is separated from the interval
  of the structure statistic on every null baseline (shuffled, Gaussian of the same
  variance and shape) — a value a random tensor reaches too is no evidence of structure;
* **inconclusive** otherwise: the interval straddles an end of R, or the value is in R but
  a null reaches it as well, or the estimator says its own estimate is unreliable.

Intervals: bootstrap intervals of the estimators (local, correlation dimension, Lipschitz
quantiles, entropy, DNA errors); for PCA k95/D, whose value on the weights is exact for
the sample, the nulls' interval is their spread over several draws. The model's verdict
is the per-tensor verdict shared by more than half of the analysed tensors (each tensor
one vote), else inconclusive; its value is the median over tensors.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightdna.analysis.measure import Measure
from weightdna.analysis.results import INPUTS, ModelAnalysis, TensorAnalysis

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)

Range = tuple[float | None, float | None]



@dataclass(frozen=True)
class Claim:
    """One row of SPEC's table of the seed's claims, made testable.

    statistic: the per-tensor statistic the claim is about; structure: the statistic
    compared with the nulls (the same by default); nulls: which baselines count;
    claimed_range(tensor) gives R for that tensor; rule: the verdict's rule in words.
    """

    key: str
    claim: str
    seed_number: str
    statistic: str
    claimed_range: Callable[[TensorAnalysis], Range]
    rule: str
    structure: str | None = None
    nulls: tuple[str, ...] = ("shuffled", "gaussian")
    unreliable: Callable[[TensorAnalysis], str | None] = lambda t: None
    note: str = ""
    companion: str | None = None  # a statistic whose medians the evidence also quotes
    shown_range: Range | None = None  # the model-level range, when R depends on the tensor


@dataclass
class TensorVerdict:
    """A claim's verdict on one tensor and why."""

    tensor: str
    verdict: str
    value: Measure
    reason: str


@dataclass
class ClaimVerdict:
    """A claim's verdict on the model, the numbers behind it and the per-tensor verdicts."""

    key: str
    claim: str
    seed_number: str
    rule: str
    verdict: str
    value: float
    nulls: dict[str, float]
    claimed: Range
    evidence: str
    tensors: list[TensorVerdict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "key": self.key,
            "claim": self.claim,
            "seed_number": self.seed_number,
            "rule": self.rule,
            "verdict": self.verdict,
            "value": _json_float(self.value),
            "nulls": {k: _json_float(v) for k, v in self.nulls.items()},
            "claimed_range": list(self.claimed),
            "evidence": self.evidence,
            "counts": dict(Counter(v.verdict for v in self.tensors)),
            "tensors": [
                {"tensor": v.tensor, "verdict": v.verdict, "value": v.value.as_dict(),
                 "reason": v.reason}
                for v in self.tensors
            ],
        }


def judge(
    value: Measure,
    claimed: Range,
    structure: Measure | None = None,
    nulls: dict[str, Measure] | None = None,
    unreliable: str | None = None,
) -> tuple[str, str]:
    """The verdict (and its reason) on a claim that value lies in claimed = (low, high).

    structure and nulls: the statistic compared with the null baselines (value itself when
    structure is None). unreliable: a reason the estimate cannot be trusted, if any.
    """
    if math.isnan(value.value):
        return INCONCLUSIVE, "not measured"
    lo, hi = value.bounds
    low, high = claimed
    below = high is not None and lo > high
    above = low is not None and hi < low
    if unreliable:
        return INCONCLUSIVE, unreliable
    if below or above:
        return FAILS, f"{_fmt(value.value)} outside {_range_text(claimed)}"
    inside = (low is None or lo >= low) and (high is None or hi <= high)
    if not inside:
        return INCONCLUSIVE, f"interval [{_fmt(lo)}, {_fmt(hi)}] straddles {_range_text(claimed)}"
    structure = structure or value
    for name, null in (nulls or {}).items():
        if not structure.separated_from(null):
            reason = f"in range, but the {name} null reaches it too ({_fmt(null.value)})"
            return INCONCLUSIVE, reason
    return HOLDS, f"{_fmt(value.value)} in {_range_text(claimed)}, apart from every null"


def _local_dimension_range(t: TensorAnalysis) -> Range:
    # "50–100 ≪ D": read ≪ as at most half the ambient dimension (the columns).
    return (50.0, max(50.0, min(100.0, t.columns / 2)))


def _local_dimension_inapplicable(t: TensorAnalysis) -> str | None:
    if t.columns >= 100:
        return None
    return f"D = {t.columns} columns: 50–100 ≪ D needs D ≥ 100"


def _correlation_unreliable(t: TensorAnalysis) -> str | None:
    if t.details.get("correlation_reliable", {}).get("weights", False):
        return None
    limit = t.details.get("eckmann_ruelle_limit", math.nan)
    return (f"no plateau or estimate above the Eckmann–Ruelle limit 2·log₁₀N = {limit:.1f}: "
            "the sample cannot resolve it")


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "pca", "PCA: 95% of the energy in k components", "k ≈ 0.05·D",
        "pca_k95_fraction", lambda t: (0.025, 0.10),
        "holds if k95/D (D = min(rows, columns)) lies in [0.025, 0.10] (≈ read as within a "
        "factor 2 of 0.05) and outside both nulls' spread over 4 draws",
    ),
    Claim(
        "local_dimension", "local dimension", "50–100 ≪ D",
        "local_dimension", _local_dimension_range,
        "holds if the mean local-PCA dimension (k = 100 neighbours, eigenvalues above 5% of "
        "the largest) lies in [50, min(100, D/2)], D = columns, and its bootstrap interval is "
        "apart from both nulls'; inconclusive when D < 100",
        unreliable=_local_dimension_inapplicable,
        note="100 neighbours cap the estimate at 99, where i.i.d. weights sit",
        shown_range=(50.0, 100.0),
    ),
    Claim(
        "correlation_dimension", "correlation dimension", "0.03–0.07·D",
        "correlation_dimension_fraction", lambda t: (0.03, 0.07),
        "holds if the Grassberger–Procaccia slope on its plateau, divided by D = columns, lies "
        "in [0.03, 0.07], is below the Eckmann–Ruelle limit, and its interval is apart from "
        "both nulls'",
        unreliable=_correlation_unreliable,
    ),
    Claim(
        "lipschitz", "Lipschitz constant between neighbouring coordinates", "5–10",
        "lipschitz_q99", lambda t: (5.0, 10.0),
        "holds if the 99th percentile of |Δw|/|Δc| (c = φ's coordinates; the maximum is "
        "reported beside it) lies in [5, 10] and its bootstrap interval is apart from both "
        "nulls'",
    ),
    Claim(
        "entropy", "entropy of trained vs random weights", "H_trained < 0.7·H_random",
        "entropy_ratio", lambda t: (None, 0.7),
        "holds if the entropy of the weights quantised at step std/16, divided by that of "
        "Gaussian weights of equal variance at the same step, has its whole interval below "
        "0.7 (shuffling keeps the values, so the Gaussian is the only null)",
        nulls=("gaussian",),
    ),
    Claim(
        "dna_psnr", "DNA at ratio ≈ 22 reaches PSNR > 35 dB", "ratio ≈ 22, PSNR > 35 dB",
        "dna_psnr_db", lambda t: (35.0, None),
        "holds if a SIREN with numel/22 parameters, fitted to the tensor, reaches a PSNR "
        "(MAX = max|w|) whose interval is above 35 dB and apart from the same DNA's on both "
        "nulls",
        companion="dna_snr_db",
        note="PSNR depends on MAX; SNR = 10·log₁₀(Σw²/Σ(w−ŵ)²) is scale-free, 0 dB = predicting 0",
    ),
    Claim(
        "generalisation", "generalisation of a DNA fitted on 80% of the coordinates",
        "E_gen ≈ E_train",
        "dna_gap_ratio", lambda t: (0.8, 1.25),
        "holds if held-out MSE / training MSE lies in [0.8, 1.25] and the held-out SNR is apart "
        "from the nulls' (a DNA that learns nothing generalises trivially)",
        structure="dna_holdout_snr_db",
        companion="dna_holdout_snr_db",
    ),
)


def judge_tensor(claim: Claim, t: TensorAnalysis) -> TensorVerdict | None:
    """The claim's verdict on one tensor, None when the tensor lacks the statistic."""
    if claim.statistic not in t.stats:
        return None
    stats = t.stats[claim.statistic]
    structure_stats = t.stats.get(claim.structure or claim.statistic, {})
    verdict, reason = judge(
        stats["weights"],
        claim.claimed_range(t),
        structure=structure_stats.get("weights"),
        nulls={n: structure_stats[n] for n in claim.nulls if n in structure_stats},
        unreliable=claim.unreliable(t),
    )
    return TensorVerdict(t.name, verdict, stats["weights"], reason)


def judge_claims(analysis: ModelAnalysis) -> list[ClaimVerdict]:
    """One ClaimVerdict per claim of CLAIMS, from the per-tensor verdicts (see the module doc)."""
    return [_judge_model(claim, analysis.tensors) for claim in CLAIMS]


def _judge_model(claim: Claim, tensors: list[TensorAnalysis]) -> ClaimVerdict:
    verdicts = [v for t in tensors if (v := judge_tensor(claim, t)) is not None]
    measured = [t for t in tensors if claim.statistic in t.stats]
    value = _median([t.value(claim.statistic) for t in measured])
    nulls = {n: _median([t.value(claim.statistic, n) for t in measured]) for n in claim.nulls}
    claimed = claim.shown_range or (
        claim.claimed_range(measured[0]) if measured else (None, None))
    if not verdicts:
        return ClaimVerdict(claim.key, claim.claim, claim.seed_number, claim.rule,
                            INCONCLUSIVE, value, nulls, claimed, "not measured on any tensor")
    counts = Counter(v.verdict for v in verdicts)
    top, top_count = counts.most_common(1)[0]
    verdict = top if top_count > len(verdicts) / 2 else INCONCLUSIVE
    null_text = ", ".join(f"{n} {_fmt(v)}" for n, v in nulls.items())
    per_tensor = ", ".join(f"{c} {k}" for k, c in sorted(counts.items()))
    evidence = (f"median {_fmt(value)} ({null_text}) vs claimed {_range_text(claimed)}; "
                f"{len(verdicts)} tensors: {per_tensor}")
    common = Counter(v.reason.split(" (")[0] for v in verdicts if v.verdict == verdict)
    if common:
        evidence += f"; typical: {common.most_common(1)[0][0]}"
    if claim.companion:
        medians = {n: _median([t.value(claim.companion, n) for t in measured]) for n in INPUTS}
        evidence += f"; {claim.companion} median " + ", ".join(
            f"{n} {_fmt(v)}" for n, v in medians.items())
    if claim.note:
        evidence += f" ({claim.note})"
    return ClaimVerdict(claim.key, claim.claim, claim.seed_number, claim.rule, verdict,
                        value, nulls, claimed, evidence, verdicts)


def _median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else math.nan


def _fmt(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.3g}"


def _range_text(claimed: Range) -> str:
    low, high = claimed
    if low is None and high is not None:
        return f"< {_fmt(high)}"
    if high is None and low is not None:
        return f"> {_fmt(low)}"
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)
