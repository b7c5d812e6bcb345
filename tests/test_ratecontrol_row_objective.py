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


def test_a_batchnorm_weighs_the_rows_of_the_kernel_before_it() -> None:
    # Rows alike in size; the BatchNorm's running variances tell that rows 0-3 give 100×
    # less output (a kernel that cancels on smooth inputs), so their error counts 100×.
    variance = np.ones(24)
    variance[:4] = 0.01
    gain = np.ones(24)
    gain[-1] = 0.0  # a channel switched off: floored, not 0
    rows = rc.batchnorm_row_weights(gain, variance, "gain")
    assert rows is not None and rows[0] == pytest.approx(100 * rows[5], rel=1e-3)
    assert rows[-1] == 0
    assert np.allclose(rc.batchnorm_row_weights(gain, variance, "variance")[:-1],
                       1 / (variance[:-1] + rc.BN_EPSILON))
    assert rc.batchnorm_row_weights(gain, variance, "off") is None
    assert rc.batchnorm_row_weights(gain, variance) is None  # BN_ROWS: "off"
    assert rc.batchnorm_row_weights(gain, -variance, "gain") is None
    with pytest.raises(rc.InvalidInputError):
        rc.batchnorm_row_weights(gain, variance, "data")
    tc, plain = _rows(np.ones(24)), _rows(np.ones(24))
    rc.apply_objective(plain, "layer")
    rc.apply_objective(tc, "layer", output_weight=rows)
    assert tc.row_scale is not None  # per-row steps: 10× finer on rows 0-3
    assert tc.row_scale[5] / tc.row_scale[0] == pytest.approx(10, rel=1e-2)
    # rows' weights scaled so that mean(weight · ms_r) = 1: the tensor counts as much
    assert np.mean(1 / tc.row_norm**2) == pytest.approx(1.0)
    ms = plain.row_ms
    q = np.maximum(rows * ms, np.median(rows * ms) * rc.ROW_FLOOR)
    assert tc.sensitivity / plain.sensitivity == pytest.approx(
        np.mean(q / ms) / np.mean(q) / np.mean(1 / ms), rel=1e-9)
    # the channel switched off: floored at ROW_FLOOR × the median row's weight
    assert tc.row_norm[-1] / tc.row_norm[5] == pytest.approx(
        (ms[-1] * rows[5] / (rc.ROW_FLOOR * np.median(rows * ms))) ** 0.5, rel=1e-6)


def test_outlier_channels_of_a_batchnorm_do_not_set_the_tensors_scale() -> None:
    # Two channels 300× larger with their statistics (the panel's bncnn): under the
    # BatchNorm's weights the other rows keep the steps the objective gives them alone.
    scales = np.ones(24)
    scales[:2] = 300.0
    tc, plain = _rows(scales), _rows(scales)
    rc.apply_objective(plain, "layer")
    rc.apply_objective(tc, "layer", output_weight=1e-8 / scales**2)  # var of 10⁸
    assert np.allclose(tc.row_norm, plain.row_norm, rtol=0.35)  # rows alike but for noise
    assert tc.sensitivity == pytest.approx(plain.sensitivity, rel=0.2)
    mse = _rows(scales)
    rc.apply_objective(mse, "mse", output_weight=1 / scales**2)
    assert mse.row_norm is None  # "mse" weighs no rows


def test_the_batchnorm_rule_is_a_switch_off_by_default(tmp_path, monkeypatch) -> None:
    # A conv whose channels 0-7 give 100× less output than their weights say (their
    # BatchNorm's running variance): off by default, the file is what it was; "gain"
    # codes those rows finer and the others coarser.
    import torch

    from weightdna.codec.compress import compress_model
    from weightdna.weights import ModelWeights

    g = torch.Generator().manual_seed(0)
    variance = torch.ones(32)
    variance[:8] = 0.01
    tensors = {"conv.weight": torch.randn(32, 16, 3, 3, generator=g) * 0.1,
               "bn.weight": torch.ones(32), "bn.bias": torch.zeros(32),
               "bn.running_mean": torch.zeros(32), "bn.running_var": variance,
               "fc.weight": torch.randn(10, 512, generator=g) * 0.05}
    weights = ModelWeights.from_tensors(tensors)
    assert rc.BN_ROWS == "off"
    target = rc.Target("bits_per_weight", 2.0)
    compress_model(weights, tmp_path / "a.dna", target)
    monkeypatch.setattr(rc, "BN_ROWS", "off")
    compress_model(weights, tmp_path / "b.dna", target)
    assert (tmp_path / "a.dna").read_bytes() == (tmp_path / "b.dna").read_bytes()
    monkeypatch.setattr(rc, "BN_ROWS", "gain")
    compress_model(weights, tmp_path / "c.dna", target)
    from weightdna.codec.compress import decompress_model
    from weightdna.weights import load_weights

    def row_snr(name: str) -> tuple[float, float]:
        decompress_model(tmp_path / name, tmp_path / f"{name}.safetensors")
        restored = load_weights(tmp_path / f"{name}.safetensors").tensor("conv.weight")
        err = ((restored - tensors["conv.weight"]) ** 2).flatten(1).sum(1)
        sig = (tensors["conv.weight"] ** 2).flatten(1).sum(1)
        return (float(10 * torch.log10(sig[:8].sum() / err[:8].sum())),
                float(10 * torch.log10(sig[8:].sum() / err[8:].sum())))

    quiet_off, loud_off = row_snr("a.dna")
    quiet_gain, loud_gain = row_snr("c.dna")
    assert quiet_gain > quiet_off + 6 and loud_gain < loud_off


def test_an_lstms_gate_matrices_are_found_by_pytorchs_names_and_shapes() -> None:
    from weightdna.weights.roles import lstm_gates

    shapes = {"rnn.weight_ih": (512, 64), "rnn.weight_hh": (512, 128),
              "lstm.weight_ih_l1_reverse": (32, 16), "lstm.weight_hh_l1_reverse": (32, 8),
              "gru.weight_ih_l0": (24, 5), "gru.weight_hh_l0": (24, 8),  # 3 gates of 8
              "alone.weight_hh": (16, 4),  # no input matrix beside it
              "odd.weight_ih": (40, 10), "odd.weight_hh": (40, 9)}
    assert lstm_gates(shapes) == {"rnn.weight_ih": 128, "rnn.weight_hh": 128,
                                  "lstm.weight_ih_l1_reverse": 8,
                                  "lstm.weight_hh_l1_reverse": 8}


def test_an_lstms_cell_gate_rows_get_finer_steps() -> None:
    factors = rc.lstm_row_factors(6)
    assert rc.LSTM_GATE_WEIGHTS == (1.0, 1.0, 4.0, 1.0)
    assert factors.tolist() == [1.0] * 12 + [4.0] * 6 + [1.0] * 6
    tc, plain = _rows(SPREAD), _rows(SPREAD)
    rc.apply_objective(plain, "layer")
    rc.apply_objective(tc, "layer", row_factor=factors)
    # the same as the output weights factor_r / ms_r: the cell gate's rows 2× finer
    # relative to their own RMS than the other gates'
    ratio = tc.row_scale / np.sqrt(tc.row_ms)
    assert np.allclose(ratio[12:18] * 2, ratio[0])
    assert np.allclose(ratio[:12], ratio[0]) and np.allclose(ratio[18:], ratio[0])
    same = _rows(SPREAD)
    ms_t = same.signal / same.info.numel
    rc.apply_objective(same, "layer",
                       output_weight=factors / rc.floored_row_ms(same.row_ms, ms_t))
    assert np.allclose(same.row_scale, tc.row_scale)
    assert same.sensitivity == pytest.approx(tc.sensitivity)
    # a factor of the wrong length is not applied; "mse" weighs no rows
    other = _rows(SPREAD)
    rc.apply_objective(other, "layer", row_factor=np.ones(5))
    assert np.allclose(other.row_scale, plain.row_scale)
    mse = _rows(SPREAD)
    rc.apply_objective(mse, "mse", row_factor=factors)
    assert mse.row_norm is None


def test_an_lstm_is_coded_with_its_gates_and_other_models_as_before(tmp_path,
                                                                    monkeypatch) -> None:
    # torch.nn.LSTM's state dict at 2 bits per weight: with the gates' weights its cell
    # gate's rows are coded finer than with rows alike, the other gates' coarser; a model
    # without an LSTM writes the same file either way.
    import torch

    from weightdna.codec.compress import compress_model, decompress_model
    from weightdna.weights import ModelWeights, load_weights

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(96, 128)  # 65,536 weights a matrix: per-row steps pay
    tensors = {f"rnn.{k}": v.detach().clone() for k, v in lstm.state_dict().items()}
    tensors["head.weight"] = torch.randn(8, 128) * 0.1
    target = rc.Target("bits_per_weight", 2.0)

    def cell_and_other_snr(gates: tuple) -> tuple[float, float]:
        monkeypatch.setattr(rc, "LSTM_GATE_WEIGHTS", gates)
        name = f"{gates[2]:g}"
        compress_model(ModelWeights.from_tensors(tensors), tmp_path / f"{name}.dna", target)
        decompress_model(tmp_path / f"{name}.dna", tmp_path / f"{name}.safetensors")
        restored = load_weights(tmp_path / f"{name}.safetensors").tensor("rnn.weight_hh_l0")
        original = tensors["rnn.weight_hh_l0"]
        err, sig = ((restored - original) ** 2).sum(1), (original ** 2).sum(1)
        cell = slice(256, 384)
        other = torch.ones(512, dtype=torch.bool)
        other[cell] = False
        return (float(10 * torch.log10(sig[cell].sum() / err[cell].sum())),
                float(10 * torch.log10(sig[other].sum() / err[other].sum())))

    cell_alike, other_alike = cell_and_other_snr((1.0, 1.0, 1.0, 1.0))
    cell_gates, other_gates = cell_and_other_snr((1.0, 1.0, 4.0, 1.0))
    assert cell_gates > cell_alike + 2 and other_gates < other_alike
    plain = {"fc.weight": torch.randn(64, 96), "fc.bias": torch.randn(64)}
    for gates in ((1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 4.0, 1.0)):
        monkeypatch.setattr(rc, "LSTM_GATE_WEIGHTS", gates)
        compress_model(ModelWeights.from_tensors(plain), tmp_path / f"p{gates[2]:g}.dna", target)
    assert (tmp_path / "p1.dna").read_bytes() == (tmp_path / "p4.dna").read_bytes()

def test_the_depthwise_batchnorm_rule_weighs_only_kernels_of_one_input_channel(
        monkeypatch) -> None:
    # "depthwise": the BatchNorm's gain rule for a depthwise kernel (one input channel an
    # output channel, a k×k window), none for a full conv or a 1×1 one a BatchNorm follows.
    import torch

    from weightdna.codec.compress import _batchnorm_rows
    from weightdna.weights import ModelWeights

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, shape in (("dw", (8, 1, 3, 3)), ("full", (8, 4, 3, 3)), ("pw", (8, 4, 1, 1))):
        tensors[f"{name}.conv.weight"] = torch.randn(*shape, generator=g)
        tensors[f"{name}.bn.weight"] = torch.full((8,), 2.0)
        tensors[f"{name}.bn.bias"] = torch.zeros(8)
        tensors[f"{name}.bn.running_mean"] = torch.zeros(8)
        tensors[f"{name}.bn.running_var"] = torch.linspace(0.01, 1.0, 8)
    weights = ModelWeights.from_tensors(tensors)
    assert set(weights.batchnorms) == {"dw.conv.weight", "full.conv.weight", "pw.conv.weight"}
    target = rc.Target("bits_per_weight", 3.0)
    assert _batchnorm_rows(weights, "layer", target) == {}  # BN_ROWS "off"
    monkeypatch.setattr(rc, "BN_ROWS", "depthwise")
    rows = _batchnorm_rows(weights, "layer", target)
    assert set(rows) == {"dw.conv.weight"}
    assert np.allclose(rows["dw.conv.weight"], 4.0 / (np.linspace(0.01, 1.0, 8) + rc.BN_EPSILON),
                       rtol=1e-5)
    monkeypatch.setattr(rc, "BN_ROWS", "gain")
    assert set(_batchnorm_rows(weights, "layer", target)) == set(weights.batchnorms)
    assert [rc.depthwise_kernel(s) for s in ((8, 1, 3, 3), (8, 1, 1, 1), (8, 4, 3, 3),
                                             (8, 1), (8, 1, 5))] == [True, False, False,
                                                                     False, True]
