"""What a pooled figure hides: the worst tensors, and warnings a user must see.

A whole model's SNR pools every tensor's error: one tensor of large values sets it, and a
tensor restored at 2 dB (or with most of its weights rounded to 0) can sit beside an
"overall SNR" of 118 dB. `summary` and `warnings` say what happened tensor by tensor.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# A tensor restored below this SNR keeps little of what it was (the error's energy is at
# least half the weights').
SNR_FLOOR_DB = 3.0
# A tensor this far below the pooled figure is one the pooled figure hides.
HIDDEN_BELOW_POOLED_DB = 20.0
# A tensor with this share of its non-zero weights restored as 0 has lost most of them:
# the outlier trap, where a step fitted to a few large weights rounds the rest to nothing
# (seen at 93–95% on an audio model whose output then collapsed).
ZEROED_WARNING = 0.9


@dataclass(frozen=True)
class TensorQuality:
    """One lossy tensor's measured figures."""

    name: str
    snr_db: float | None  # None: restored exactly
    zeroed: float | None = None  # share of its non-zero weights restored as 0 (None: unknown)


def summary(tensors: Sequence[TensorQuality]) -> str | None:
    """``per-tensor SNR: min 4.1 dB (name), median 8.0, max 12.3 over 12 lossy tensors``."""
    lossy = [t for t in tensors if t.snr_db is not None and math.isfinite(t.snr_db)]
    if not lossy:
        return None
    worst = min(lossy, key=lambda t: t.snr_db)
    values = [t.snr_db for t in lossy]
    return (f"per-tensor SNR: min {worst.snr_db:.2f} dB ({worst.name}), median "
            f"{statistics.median(values):.2f}, max {max(values):.2f} over {len(lossy)} lossy "
            "tensors")


def warnings(tensors: Sequence[TensorQuality], pooled_snr_db: float | None) -> list[str]:
    """One line per tensor that lost most of its weights, fell below SNR_FLOOR_DB, or lies
    HIDDEN_BELOW_POOLED_DB below the pooled SNR."""
    lines = []
    for t in tensors:
        if t.zeroed is not None and t.zeroed >= ZEROED_WARNING:
            lines.append(f"{t.name}: {t.zeroed:.0%} of its non-zero weights were restored as "
                         "0; the network may no longer work (try more bits per weight, or "
                         "--calibration auto where the model kind allows).")
        elif t.snr_db is not None and t.snr_db < SNR_FLOOR_DB:
            lines.append(f"{t.name}: restored at {t.snr_db:.1f} dB SNR, below {SNR_FLOOR_DB:g}"
                         " dB: little of it is left.")
        elif (t.snr_db is not None and pooled_snr_db is not None
              and math.isfinite(pooled_snr_db)
              and t.snr_db < pooled_snr_db - HIDDEN_BELOW_POOLED_DB):
            lines.append(f"{t.name}: restored at {t.snr_db:.1f} dB SNR, far below the "
                         f"overall {pooled_snr_db:.1f} dB, which larger tensors set.")
    return lines
