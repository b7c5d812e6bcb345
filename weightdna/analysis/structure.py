"""The structure map: which lens sets each tensor apart from the nulls, how far, and what the
structure would save.

Every lens statistic is lower where there is structure (``lenses``). For a tensor and a lens:

* the **strongest null** is the null whose value comes closest to the weights' (the lowest);
* the **ratio** is the weights' value over the strongest null's (1: no difference; 0.01: the
  structure needs a hundredth of what random weights of that kind need);
* the lens **finds structure** when the weights' interval lies apart from (below) every
  null's and the ratio is at most FLAG_RATIO; **strong** structure when it is at most
  STRONG_RATIO.

Bits saved, a crude estimate at BITS_PER_NUMBER bits per coded number, stated so it can be
checked: for the lenses that count numbers to keep (transform coefficients, Kronecker or
low-rank factors), numel × (cost on the strongest null − cost on the weights), where the
cost is BITS_PER_NUMBER × the fraction kept (at most 1) plus, for sparsity, the positions
of the kept coefficients (binary entropy of the fraction). For the lenses that predict a
weight (a neighbouring tap, a matching row), numel × ½·log₂(null residual / weights'
residual), the high-rate gain of prediction on a Gaussian source, at most BITS_PER_NUMBER
per weight. Both compare at equal energy kept (95%) or equal residual, never against the
codec's own rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from weightdna.analysis.measure import Measure
from weightdna.analysis.results import ModelAnalysis, TensorAnalysis

FLAG_RATIO = 0.5
STRONG_RATIO = 0.1
BITS_PER_NUMBER = 4.0
STRUCTURED, WEAK, NONE = "structured", "apart but weak", "like the nulls"

RULE = (
    f"A lens finds structure in a tensor when the weights' interval lies below every null's "
    f"(shuffled, Gaussian, shuffled within rows) and the weights' value is at most "
    f"{FLAG_RATIO:g} × the strongest (closest) null's; strong at most {STRONG_RATIO:g} ×. "
    f"Bits saved: at {BITS_PER_NUMBER:g} bits per coded number, the numbers the structure "
    "spares against the strongest null (transform, Kronecker and low-rank lenses, at 95% of "
    "the energy; sparsity also pays the positions), or ½·log₂ of the residual it spares "
    "(smoothness, repeated rows)."
)

_NULL_WORDS = {"shuffled": "shuffled", "gaussian": "Gaussian",
               "within_rows": "shuffled-within-rows"}


@dataclass(frozen=True)
class Lens:
    """One statistic of the map: key in TensorAnalysis.stats, its name, and how it prices
    bits ("count", "sparse" or "predict")."""

    key: str
    name: str
    pricing: str


def _transform_lenses() -> list[Lens]:
    lenses = []
    for transform, label in (("dct", "DCT-II"), ("dft", "DFT")):
        for axis in ("rows", "columns"):
            lenses.append(Lens(f"{transform}_{axis}_sparsity",
                               f"{label} along {axis}, sparsity", "sparse"))
            lenses.append(Lens(f"{transform}_{axis}_compaction",
                               f"{label} along {axis}, compaction", "count"))
    return lenses


LENSES: tuple[Lens, ...] = (
    *_transform_lenses(),
    Lens("dct_window_sparsity", "2-D DCT of each kernel window, sparsity", "sparse"),
    Lens("dct_window_compaction", "2-D DCT of each kernel window, compaction", "count"),
    Lens("kronecker_cost", "separable: Kronecker factors", "count"),
    Lens("lowrank_cost", "low rank (row PCA factors)", "count"),
    Lens("window_roughness", "smooth kernel windows", "predict"),
    Lens("tied_residual", "rows repeated from a tensor (up to scale and order)", "predict"),
)
LENS_BY_KEY = {lens.key: lens for lens in LENSES}


@dataclass
class LensFinding:
    """One lens on one tensor: the weights beside the strongest null, the verdict, the bits."""

    tensor: str
    lens: Lens
    value: Measure
    null: str
    null_value: Measure
    ratio: float
    apart: bool
    verdict: str
    bits_saved: float
    numel: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "tensor": self.tensor,
            "lens": self.lens.key,
            "lens_name": self.lens.name,
            "value": self.value.as_dict(),
            "strongest_null": self.null,
            "null_value": self.null_value.as_dict(),
            "ratio": _finite(self.ratio),
            "apart_from_every_null": self.apart,
            "verdict": self.verdict,
            "bits_saved": _finite(self.bits_saved),
            "bits_saved_per_weight": _finite(self.bits_saved / self.numel),
            "detail": self.detail,
        }


@dataclass
class TensorStructure:
    """A tensor's place in the map: its best lens (of those finding structure, the one
    furthest from its nulls; repeated rows last) and every lens."""

    tensor: str
    verdict: str
    best: LensFinding | None
    findings: list[LensFinding]

    @property
    def ratio(self) -> float:
        return math.inf if self.best is None else self.best.ratio

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "tensor": self.tensor,
            "verdict": self.verdict,
            "best": None if self.best is None else self.best.as_dict(),
            "lenses": [f.as_dict() for f in self.findings],
        }


def lens_finding(t: TensorAnalysis, lens: Lens) -> LensFinding | None:
    """The lens on tensor t, None when it was not measured there."""
    stats = t.stats.get(lens.key)
    if not stats or "weights" not in stats:
        return None
    value = stats["weights"]
    nulls = {k: m for k, m in stats.items() if k != "weights" and math.isfinite(m.value)}
    if not nulls or not math.isfinite(value.value):
        return None
    null, null_value = min(nulls.items(), key=lambda kv: kv[1].value)
    ratio = value.value / null_value.value if null_value.value > 0 else math.inf
    if value.value == 0 and null_value.value == 0:
        ratio = 1.0
    apart = all(value.bounds[1] < m.bounds[0] for m in nulls.values())
    if apart and ratio <= FLAG_RATIO:
        verdict = STRUCTURED
    elif apart and ratio < 1:
        verdict = WEAK
    else:
        verdict = NONE
    numel = math.prod(t.shape)
    # Bits only where the lens finds structure: elsewhere the gap is what chance gives.
    bits = numel * _bits_per_weight(lens, value.value, null_value.value) \
        if verdict == STRUCTURED else 0.0
    return LensFinding(t.name, lens, value, null, null_value, ratio, apart, verdict,
                       bits, numel, _detail(t, lens, value.value, null, null_value.value))


def structure_map(analysis: ModelAnalysis) -> list[TensorStructure]:
    """Every analysed tensor's lenses, the tensors ranked: structured first, then by the
    ratio of their best lens (the furthest from the nulls first)."""
    out = []
    for t in analysis.tensors:
        findings = [f for lens in LENSES if (f := lens_finding(t, lens)) is not None]
        # The lens named for a tensor: of those that find structure, the one furthest from
        # its nulls (lowest ratio); rows repeated from another tensor only when nothing within
        # the tensor is found, since the partner then shares whatever structure the tensor
        # has of its own.
        findings.sort(key=lambda f: (f.verdict != STRUCTURED, f.lens.key == "tied_residual",
                                     f.ratio))
        best = findings[0] if findings else None
        verdict = best.verdict if best is not None else NONE
        out.append(TensorStructure(t.name, verdict, best, findings))
    out.sort(key=lambda s: (s.verdict != STRUCTURED, s.ratio))
    return out


def structured(entries: list[TensorStructure]) -> list[TensorStructure]:
    """The entries in which some lens finds structure."""
    return [s for s in entries if s.verdict == STRUCTURED]


def summary_sentences(entries: list[TensorStructure], limit: int = 6) -> list[str]:
    """The map in plain words: a lead sentence, then one per structured tensor (up to limit)."""
    found = structured(entries)
    if not entries:
        return ["No tensor was analysed, so no lens was applied."]
    if not found:
        closest = min(entries, key=lambda s: s.ratio)
        lead = (f"No lens sets any of the {len(entries)} tensors apart from random weights "
                f"(rule: at most {FLAG_RATIO:g} × the closest null, intervals apart).")
        if closest.best is not None and math.isfinite(closest.ratio):
            lead += (f" The closest is {closest.tensor}: {closest.best.lens.name}, "
                     f"{closest.best.ratio:.2f} × the {_NULL_WORDS[closest.best.null]} null's.")
        return [lead]
    strong = [s for s in found if s.ratio <= STRONG_RATIO]
    total_bits = sum(s.best.bits_saved for s in found)
    lead = (f"{len(found)} of {len(entries)} tensors hold structure random weights lack"
            + (f" ({len(strong)} of them strong: at most {STRONG_RATIO:g} × the null's)"
               if strong else "")
            + f"; the best lens on each would save about {_bits_text(total_bits)} in all "
            f"(at {BITS_PER_NUMBER:g} bits per number, a crude estimate).")
    lines = [lead]
    for s in found[:limit]:
        lines.append(f"{s.tensor}: {s.best.lens.name}. {s.best.detail}; "
                     f"≈ {_bits_text(s.best.bits_saved)} saved.")
    if len(found) > limit:
        lines.append(f"… and {len(found) - limit} more tensors (the structure map lists all).")
    others = len(entries) - len(found)
    if others:
        lines.append("No lens sets the other tensor apart from the nulls." if others == 1 else
                     f"No lens sets the other {others} tensors apart from the nulls.")
    return lines


def _bits_per_weight(lens: Lens, value: float, null: float) -> float:
    if lens.pricing == "predict":
        if value <= 0:
            return BITS_PER_NUMBER if null > 0 else 0.0
        return max(0.0, min(BITS_PER_NUMBER, 0.5 * math.log2(null / value))) if null > 0 else 0.0
    return max(0.0, _cost(lens, null) - _cost(lens, value))


def _cost(lens: Lens, fraction: float) -> float:
    f = min(max(fraction, 0.0), 1.0)
    cost = BITS_PER_NUMBER * f
    if lens.pricing == "sparse" and 0 < f < 1:
        cost += -f * math.log2(f) - (1 - f) * math.log2(1 - f)
    return cost


def _detail(t: TensorAnalysis, lens: Lens, value: float, null: str, null_value: float) -> str:
    words = _NULL_WORDS.get(null, null)
    if lens.key.endswith("_sparsity") or lens.key.endswith("_compaction"):
        which = "each signal's own" if lens.key.endswith("_sparsity") else "the same"
        prefix = lens.key.rsplit("_", 1)[0]
        n = t.details.get(f"{prefix}_coefficients")
        of = f" of {n}" if n else ""
        return (f"{_pct(value)} of the coefficients{of} per signal ({which}) hold 95% of the "
                f"energy, vs {_pct(null_value)} for the {words} null")
    if lens.key == "kronecker_cost":
        k = t.details.get("kronecker", {})
        shape = k.get("factor_shape", [0, 0, 0, 0])
        return (f"{k.get('rank', '?')} Kronecker term(s) A ⊗ B (A {shape[0]}×{shape[1]}, "
                f"B {shape[2]}×{shape[3]}) hold 95% of the energy in {_pct(value)} of the "
                f"numbers, vs {_pct(null_value)} for the {words} null")
    if lens.key == "lowrank_cost":
        return (f"rank-k95 factors hold 95% of the energy in {_pct(value)} of the numbers, "
                f"vs {_pct(null_value)} for the {words} null")
    if lens.key == "window_roughness":
        return (f"neighbouring taps differ by {value:.3g} × what independent taps do "
                f"(roughness), vs {null_value:.3g} for the {words} null")
    if lens.key == "tied_residual":
        p = t.details.get("tied_partner", {})
        partner = p.get("tensor", "?")
        where = "other rows of the same tensor" if partner == t.name else f"rows of {partner}"
        matched = p.get("matched_rows", 0)
        exact = (f"; {_pct(matched)} of the sampled rows equal one up to scale, "
                 + ("in place" if p.get("matched_in_place", 0) > 0.5 else "in another order")
                 if matched > 0 else "")
        return (f"each row is nearly a multiple of one of the {where}: {value:.3g} of its "
                f"energy is left, vs {null_value:.3g} for the {words} null{exact}")
    return f"{value:.3g} vs {null_value:.3g} for the {words} null"


def _pct(x: float) -> str:
    if x >= 0.1:
        return f"{100 * x:.0f}%"
    if x >= 0.001:
        return f"{100 * x:.1f}%"
    return f"{100 * x:.2g}%"


def _bits_text(bits: float) -> str:
    if bits >= 8e6:
        return f"{bits / 8e6:.1f} MB"
    if bits >= 8e3:
        return f"{bits / 8e3:.1f} kB"
    return f"{bits:.0f} bits"


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
