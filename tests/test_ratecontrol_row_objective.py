"""How the objective weighs a tensor's rows and grants it per-row steps
(`weightdna.codec.ratecontrol.apply_objective`, ROW_EXPONENT, ROW_STEPS_RULE)."""

from __future__ import annotations

import numpy as np
import pytest

from weightdna.codec import ratecontrol as rc
from weightdna.weights import TensorInfo


def _rows(scales: np.ndarray, columns: int = 96, seed: int = 0) -> rc.TensorCandidates:
    """A matrix whose rows are Laplace noise at the given scales, its plain candidate."""
    values = np.random.default_rng(seed).laplace(size=(scales.size, columns)) * scales[:, None]
    info = TensorInfo("w", values.shape, "float32", "matrix", None, "w")
    return rc.tensor_candidates(info, values.astype(np.float32), ("quantized",))


SPREAD = np.exp(np.random.default_rng(1).normal(size=24) * 1.5)  # rows' RMS up to ~50×


def test_rows_are_weighed_by_their_own_mean_square_by_default() -> None:
    tc = _rows(SPREAD)
    rc.apply_objective(tc, "layer")
    assert rc.ROW_EXPONENT == 1.0
    assert tc.row_scale is not None and tc.row_norm is tc.row_scale  # they pay here
    assert np.mean(1.0 / tc.row_norm**2) == pytest.approx(1.0)
    # steps ∝ each row's RMS: the same relative error in every row
    ratio = tc.row_norm / np.sqrt(tc.row_ms)
    assert np.allclose(ratio, ratio[0])
    # where they do not pay (rows alike), the weights are still set, the steps are not
    alike = _rows(np.ones(24))
    rc.apply_objective(alike, "layer")
    assert alike.row_scale is None and alike.row_norm is not None


def test_the_row_exponent_moves_between_rows_and_the_tensor(monkeypatch) -> None:
    tc = _rows(SPREAD)
    rc.apply_objective(tc, "layer")
    full, sensitivity = tc.row_norm.copy(), tc.sensitivity
    monkeypatch.setattr(rc, "ROW_EXPONENT", 0.5)
    tc.sensitivity = 1.0
    rc.apply_objective(tc, "layer")
    # half the exponent: the steps' log-ratios between rows halve
    assert np.allclose(np.log(tc.row_norm / tc.row_norm[0]), 0.5 * np.log(full / full[0]))
    assert tc.sensitivity < sensitivity  # the smallest rows weigh less
    monkeypatch.setattr(rc, "ROW_EXPONENT", 0.0)
    tc.sensitivity = 1.0
    rc.apply_objective(tc, "layer")
    # rows alike: the tensor's error relative to its own energy, one step
    assert tc.row_scale is None
    assert tc.sensitivity == pytest.approx(1.0 / (tc.signal / tc.info.numel) / tc.info.numel)


def test_the_operating_rule_drops_per_row_steps_only_where_one_step_costs_less(
        monkeypatch) -> None:
    tc = _rows(SPREAD)
    rc.apply_objective(tc, "layer")
    target = rc.Target("bits_per_weight", 2.0)
    fine = rc.tensor_step(tc, 2.0**-5, target)  # about 1.7 bits per weight
    coarse = 1e3 * tc.peak / float(tc.row_scale.min())  # every symbol 0
    high = {s: rc.choose(tc, s, False, trellis=False) for s in (fine, coarse)}
    assert all(isinstance(c.step, np.ndarray) for c in high.values())
    assert 1.0 < high[fine].bits / tc.info.numel < 4.0
    monkeypatch.setattr(rc, "ROW_STEPS_RULE", "operating")
    operating = {s: rc.choose(tc, s, False, trellis=False) for s in (fine, coarse)}
    # at 1.7 bits per weight per-row steps win (the same choice); coding nothing, one step
    # saves their side bits
    assert isinstance(operating[fine].step, np.ndarray)
    assert operating[fine].bits == high[fine].bits
    assert isinstance(operating[coarse].step, float)
    assert operating[coarse].bits < high[coarse].bits - 8 * 56  # the grid's params at least
