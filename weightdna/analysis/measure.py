"""A measured value with its interval, and how to tell it from a null baseline's."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Measure:
    """A statistic's value and its interval [low, high] (both equal to value when it has none)."""

    value: float
    low: float | None = None
    high: float | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high), the value itself where no interval was measured."""
        low = self.value if self.low is None or math.isnan(self.low) else self.low
        high = self.value if self.high is None or math.isnan(self.high) else self.high
        return (min(low, self.value), max(high, self.value))

    def separated_from(self, other: Measure) -> bool:
        """True when the two intervals do not overlap."""
        lo, hi = self.bounds
        olo, ohi = other.bounds
        return hi < olo or ohi < lo

    def as_dict(self) -> dict[str, float | None]:
        """Plain JSON values; NaN and ±inf become None."""
        return {
            "value": _finite(self.value),
            "low": _finite(self.low),
            "high": _finite(self.high),
        }


def plain(obj: object) -> object:
    """obj with NumPy scalars made Python ones and NaN/±inf made None, for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _finite(float(obj))
    return obj


def _finite(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)
