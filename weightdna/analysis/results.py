"""What an analysis finds: per tensor, every statistic on the weights and on the nulls;
per model, the tensors, what was skipped, the verdicts (`weightdna.analysis.claims`) and the
structure map (`weightdna.analysis.structure`).
`weightdna.analysis.run` fills them in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightdna.analysis.complexity import DNAProbe
from weightdna.analysis.measure import Measure, plain
from weightdna.analysis.settings import AnalysisSettings

# The inputs every statistic is measured on: the weights and the two nulls (the lenses add a
# third, `lenses.LENS_INPUTS`).
INPUTS = ("weights", "shuffled", "gaussian")

# Dimension estimates; one below _ZERO_DIMENSION is rounding noise around 0, not a dimension.
_DIMENSIONS = ("local_dimension", "correlation_dimension", "correlation_dimension_fraction",
               "mle_dimension", "twonn_dimension")
_ZERO_DIMENSION = 1e-6


@dataclass
class TensorAnalysis:
    """Every statistic of one tensor on the weights and both nulls.

    stats: statistic → {"weights" | "shuffled" | "gaussian": Measure}; missing: statistic
    → why it could not be measured; details: figures beside the statistics (k at 90/99%,
    the r-range, …); curves: arrays for the report (not written to JSON); dna: input →
    DNAProbe for the tensors the DNA was fitted to.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    layer: int | None
    rows: int
    columns: int
    sample_rows: int
    block_rows: int
    block_offset: int
    stats: dict[str, dict[str, Measure]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict, repr=False)
    dna: dict[str, DNAProbe] | None = None
    seconds: float = 0.0

    def value(self, stat: str, which: str = "weights") -> float:
        """The value of a statistic on one input, NaN when not measured."""
        m = self.stats.get(stat, {}).get(which)
        return math.nan if m is None else m.value

    def undefined(self, stat: str, which: str = "weights") -> str | None:
        """Why a statistic has no meaningful value on one input (shown as "undefined"
        with this reason), or None when its value stands."""
        if stat in self.missing:
            return self.missing[stat]
        value = self.value(stat, which)
        if math.isnan(value):
            return "not measured on this tensor"
        if stat in _DIMENSIONS and abs(value) < _ZERO_DIMENSION:
            # A slope of 0 up to rounding: log C(r) (or the neighbour distances) did not
            # grow with r, which no cloud of distinct points does.
            return ("0 up to rounding: the distances between rows take too few distinct "
                    "values (repeated or few-level weights) for a dimension")
        return None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (curves left out)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "role": self.role,
            "layer": self.layer,
            "matrix": [self.rows, self.columns],
            "sample_rows": self.sample_rows,
            "block_rows": self.block_rows,
            "block_offset": self.block_offset,
            "stats": {
                stat: {which: m.as_dict() for which, m in by_input.items()}
                for stat, by_input in self.stats.items()
            },
            "missing": dict(self.missing),
            "details": self.details,
            "dna": None if self.dna is None else {k: p.as_dict() for k, p in self.dna.items()},
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ModelAnalysis:
    """The analysis of a model: its tensors, what was skipped and why, and the verdicts."""

    path: str
    format: str
    settings: AnalysisSettings
    tensors: list[TensorAnalysis]
    skipped: dict[str, str]
    total_weights: int
    seconds: float = 0.0
    claims: list[Any] = field(default_factory=list)  # claims.ClaimVerdict
    structure: list[Any] = field(default_factory=list)  # structure.TensorStructure, ranked

    def summary(self) -> dict[str, dict[str, float]]:
        """The whole model: each statistic's median over the analysed tensors, per input."""
        stats = sorted({stat for t in self.tensors for stat in t.stats})
        out = {}
        for stat in stats:
            out[stat] = {}
            inputs = {w for t in self.tensors for w in t.stats.get(stat, {})}
            for which in [*INPUTS, *sorted(inputs - set(INPUTS))]:
                values = [t.value(stat, which) for t in self.tensors if stat in t.stats]
                finite = [v for v in values if math.isfinite(v)]
                out[stat][which] = float(np.median(finite)) if finite else math.nan
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN and ±inf as null)."""
        return plain({
            "model": self.path,
            "format": self.format,
            "settings": self.settings.as_dict(),
            "total_weights": self.total_weights,
            "analysed_weights": sum(math.prod(t.shape) for t in self.tensors),
            "seconds": round(self.seconds, 2),
            "claims": [c.as_dict() for c in self.claims],
            "structure_map": [s.as_dict() for s in self.structure],
            "model_medians": self.summary(),
            "tensors": [t.as_dict() for t in self.tensors],
            "skipped": dict(self.skipped),
        })
