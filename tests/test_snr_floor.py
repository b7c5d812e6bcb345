"""A floor under each tensor's SNR in the whole-model rate control
(`weightdna.codec.ratecontrol.SNR_FLOOR_DB`, measured and off by default)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from weightdna.codec import ratecontrol as rc
from weightdna.codec.compress import compress_model
from weightdna.weights import TensorInfo, load_weights, save_weights


def _with_curve(signal: float, snrs: list[float]) -> rc.TensorCandidates:
    """A tensor whose curve has one point an octave from fine to coarse at these SNRs."""
    info = TensorInfo("t", (64, 64), "float32", "weight", None, "t")
    tc = rc.TensorCandidates(info, [], signal, 1.0, 1.0)
    gs = np.arange(len(snrs), dtype=np.float64) - 10.0
    sse = signal / 10.0 ** (np.asarray(snrs) / 10.0)
    tc.curve = np.stack([gs, np.full(gs.shape, 1.0), sse])
    return tc


def test_the_cap_is_where_the_curve_crosses_the_floor() -> None:
    tc = _with_curve(100.0, [30.0, 24.0, 18.0, 12.0, 6.0, 0.0])
    assert rc.floor_cap(tc) is None  # no floor: no cap
    assert rc.floor_cap(tc, -1.0) is None  # kept everywhere: no cap
    cap = rc.floor_cap(tc, 15.0)  # between the points at 18 and 12 dB (g = -8, -7)
    assert cap == pytest.approx(-7.5)
    _, sse = rc.curve_at(tc.curve, cap)
    assert 10 * math.log10(tc.signal / sse) == pytest.approx(15.0)
    assert rc.floor_cap(tc, 40.0) == -10.0  # never kept: the finest point


def test_a_cap_holds_the_allocation_on_the_curves_below_it() -> None:
    tc = _with_curve(100.0, [30.0, 24.0, 18.0, 12.0, 6.0, 0.0])
    tc.cap = rc.floor_cap(tc, 15.0)
    for g in (-7.0, -6.0, -5.0):  # coarser than the cap: held at the cap
        sse = rc.curve_allocation([tc], g).choices["t"].sse
        assert 10 * math.log10(tc.signal / sse) == pytest.approx(15.0)
    assert rc.curve_allocation([tc], -9.0).choices["t"].sse == pytest.approx(
        tc.signal / 10 ** 2.4)  # finer: as without a floor


def test_the_floor_lifts_the_worst_tensor_and_the_size_target_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under "layer" the tensor of 4x the elements gets a step 2x coarser: ~6 dB less SNR.
    rng = np.random.default_rng(0)
    path = save_weights({"big.weight": rng.standard_normal((256, 256)).astype(np.float32),
                         "small.weight": 0.1 * rng.standard_normal((64, 256)).astype(
                             np.float32)}, tmp_path / "m.safetensors")

    def worst(floor: float | None) -> tuple[float, float]:
        monkeypatch.setattr(rc, "SNR_FLOOR_DB", floor)
        report = compress_model(load_weights(path), tmp_path / "m.dna",
                                rc.Target("bits_per_weight", 2.0), overwrite=True)
        return (min(t.snr_db for t in report.tensors if t.snr_db is not None),
                report.bits_per_weight)

    before, size = worst(None)
    assert before < 10.0 and size <= 2.0
    # 11 dB is more than 2 bits per weight give both: lowered until it fits, it still
    # takes bits from the small tensor to the big one.
    after, size = worst(11.0)
    assert after > before + 0.5 and size <= 2.0
