"""GPTQ (output-aware choice of symbols), its calibration statistics and its hooks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from weightdna.cli import main
from weightdna.codec import decode_tensor, encode_tensor
from weightdna.codec.compress import compress_model
from weightdna.codec.container import read_dna_file
from weightdna.codec.gptq import gptq_symbols, output_error
from weightdna.codec.quantize import MAX_SYMBOL
from weightdna.codec.ratecontrol import Target
from weightdna.errors import InvalidInputError
from weightdna.evaluate.calibration import (
    SequentialHessians,
    hessians,
    hessians_for_file,
    sensitivity_for_file,
)
from weightdna.nn.activations import ReLU
from weightdna.nn.conv import Conv2D
from weightdna.nn.layers import Dense, Flatten
from weightdna.nn.model import Model
from weightdna.train import build_digits_mlp, build_spiral_model
from weightdna.weights import load_weights


def correlated(rng: np.random.Generator, n: int, columns: int) -> np.ndarray:
    """Inputs whose features are strongly correlated (as a layer's activations are)."""
    mixing = 0.4 * rng.normal(size=(columns, columns)) + np.eye(columns)
    return rng.normal(size=(n, columns)) @ mixing


def second_moment(x: np.ndarray) -> np.ndarray:
    return x.T @ x / x.shape[0]


def test_gptq_output_error_is_well_below_rounding() -> None:
    rng = np.random.default_rng(0)
    x = correlated(rng, 2000, 64)
    h = second_moment(x)
    w = 0.1 * rng.normal(size=(48, 64))
    for step in (0.02, 0.05, 0.1):
        rounded = np.rint(w / step) * step
        q = gptq_symbols(w, h, step)
        assert q.dtype == np.int32 and q.shape == w.shape
        gptq = output_error(w, q * step, h)
        assert gptq < 0.7 * output_error(w, rounded, h)
        # output_error is ‖(W − Ŵ)X‖² / N
        assert gptq == pytest.approx(np.sum(((w - q * step) @ x.T) ** 2) / len(x))


def test_per_row_steps_and_deadzone() -> None:
    rng = np.random.default_rng(1)
    h = second_moment(correlated(rng, 1000, 32))
    w = rng.normal(size=(10, 32)) * np.linspace(0.05, 1.0, 10)[:, None]
    steps = np.abs(w).max(axis=1) / 3
    q = gptq_symbols(w, h, steps)
    restored = q * steps[:, None]
    assert output_error(w, restored, h) < 0.8 * output_error(w, np.rint(w / steps[:, None])
                                                             * steps[:, None], h)
    # each row's errors match what that row alone gives: rows are independent
    alone = gptq_symbols(w[3:4], h, steps[3:4])
    np.testing.assert_array_equal(alone, q[3:4])
    sparse = gptq_symbols(w, h, steps, deadzone=0.3)
    assert np.count_nonzero(sparse) < np.count_nonzero(q)
    with pytest.raises(InvalidInputError):
        gptq_symbols(w, h, steps[:5])


def test_singular_hessian_and_dead_inputs() -> None:
    rng = np.random.default_rng(2)
    x = correlated(rng, 20, 40)  # 20 samples: rank 20 of 40
    x[:, 5] = 0.0  # a dead input
    x[:, 7] = x[:, 8]  # duplicated inputs
    h = second_moment(x)
    w = rng.normal(size=(6, 40))
    q = gptq_symbols(w, h, 0.25)
    # a dead input's weights are zeroed (they change no output), or rounded on their own
    assert not q[:, 5].any() and np.abs(q).sum() > 0
    kept = gptq_symbols(w, h, 0.25, zero_dead=False)
    np.testing.assert_array_equal(kept[:, 5], np.rint(w[:, 5] / 0.25))
    assert output_error(w, q * 0.25, h) < output_error(w, np.rint(w / 0.25) * 0.25, h)
    blind = gptq_symbols(w, np.zeros((40, 40)), 0.25)  # no input at all: plain rounding
    np.testing.assert_array_equal(blind, np.rint(w / 0.25))


def test_symbols_stay_within_the_alphabet() -> None:
    w = np.full((2, 3), 1e6)
    q = gptq_symbols(w, np.eye(3), 1e-3)
    assert np.abs(q).max() == MAX_SYMBOL
    with pytest.raises(InvalidInputError):  # encode_tensor refuses such a step, as rounding does
        encode_tensor(w.astype(np.float32), step=1e-3, hessian=np.eye(3))


def test_encode_tensor_with_hessian_round_trips() -> None:
    rng = np.random.default_rng(3)
    h = second_moment(correlated(rng, 800, 24))
    w = (0.2 * rng.normal(size=(16, 2, 3, 4))).astype(np.float32)  # rows of 24 columns
    entry, sections = encode_tensor(w, name="w", step=0.05, hessian=h)
    plain = decode_tensor(*encode_tensor(w, name="w", step=0.05))
    restored = decode_tensor(entry, sections)
    assert entry["representation"] == "quantized" and restored.shape == w.shape
    rows = restored.numpy().astype(np.float64).reshape(16, -1)
    q = gptq_symbols(w.reshape(16, -1), h, 0.05)
    np.testing.assert_array_equal(restored.numpy(), (q * 0.05).astype(np.float32).reshape(w.shape))
    mse = float(np.mean((rows - w.reshape(16, -1).astype(np.float64)) ** 2))
    assert entry["stats"]["mse"] == pytest.approx(mse, rel=1e-9)
    wide = w.reshape(16, -1)
    assert output_error(wide, rows, h) < output_error(wide, plain.numpy().reshape(16, -1), h)
    per_row = decode_tensor(*encode_tensor(w, name="w", bits=3, hessian=h))
    assert per_row.shape == w.shape
    with pytest.raises(InvalidInputError):
        encode_tensor(w, step=0.05, hessian=np.eye(5))
    with pytest.raises(InvalidInputError):
        encode_tensor(w, max_abs_error=0.05, hessian=h)
    with pytest.raises(InvalidInputError):
        encode_tensor(w, step=0.05, hessian=h, quantizer="trellis")


def test_conv_hessian_matches_the_layer_layout() -> None:
    """tr(ΔW H ΔWᵀ) of a conv weight is the mean over output pixels of its outputs' change."""
    rng = np.random.default_rng(4)
    model = Model([Conv2D(2, 3, 3, padding=1, rng=rng), ReLU(), Flatten(),
                   Dense(3 * 5 * 5, 4, rng=rng)])
    x = rng.normal(size=(30, 2, 5, 5)).astype(np.float32)
    h = hessians(model, x)
    assert h["layers.0.weight"].shape == (18, 18) and h["layers.3.weight"].shape == (75, 75)
    conv = model.layers[0]
    before = conv.forward(x).astype(np.float64)
    delta = rng.normal(size=conv.params["weight"].shape).astype(np.float32)
    conv.params["weight"] += delta
    moved = conv.forward(x).astype(np.float64) - before
    per_pixel = np.sum(moved**2) / (30 * 25)
    d = delta.reshape(3, -1).astype(np.float64)
    assert np.einsum("ij,jk,ik->", d, h["layers.0.weight"], d) == pytest.approx(per_pixel,
                                                                                rel=1e-4)


def test_compress_model_with_calibration(tmp_path: Path) -> None:
    model = build_digits_mlp(seed=0, hidden=(32,))
    path = model.save(tmp_path / "mlp.safetensors")
    weights = load_weights(path)
    calibration = hessians(model)
    assert set(calibration) == {"layers.0.weight", "layers.2.weight"}
    report = compress_model(weights, tmp_path / "m.dna", Target("bits_per_weight", 3.0),
                            calibration=calibration)
    assert report.bits_per_weight <= 3.0
    dna = read_dna_file(tmp_path / "m.dna")
    for name in weights.names:
        assert dna.tensor(name).shape == weights.tensor(name).shape
    with pytest.raises(InvalidInputError):
        compress_model(weights, tmp_path / "x.dna", Target("bits_per_weight", 3.0),
                       calibration={"layers.0.weight": np.eye(3)})
    with pytest.raises(InvalidInputError):
        compress_model(weights, tmp_path / "x.dna", Target("max_abs_error", 0.01),
                       calibration=calibration)


def test_dead_inputs_are_zeroed_for_size_targets_only(tmp_path: Path) -> None:
    # The digits' blank pixels reach no calibration input: a size target zeroes their
    # weights (they move no output); an SNR target on the weights rounds them, else the
    # weights' SNR could not rise above what those weights hold.
    model = build_digits_mlp(seed=0, hidden=(32,))
    weights = load_weights(model.save(tmp_path / "mlp.safetensors"))
    calibration = hessians(model)
    dead = np.diag(calibration["layers.0.weight"]) == 0
    assert dead.any()
    compress_model(weights, tmp_path / "size.dna", Target("bits_per_weight", 8.0),
                   calibration=calibration)
    restored = read_dna_file(tmp_path / "size.dna").tensor("layers.0.weight").numpy()
    assert not restored[:, dead].any()
    for target in (Target("snr", 30.0), Target("snr", 30.0, per_tensor=True)):
        report = compress_model(weights, tmp_path / "snr.dna", target, overwrite=True,
                                calibration=calibration)
        assert report.snr_db >= 30.0
        dna = read_dna_file(tmp_path / "snr.dna")
        assert dna.entries[dna.index("layers.0.weight")]["representation"] == "quantized"
        assert dna.tensor("layers.0.weight").numpy()[:, dead].any()


def test_cli_calibration(tmp_path: Path, capsys) -> None:
    mlp = build_digits_mlp(seed=0, hidden=(32,)).save(tmp_path / "mlp.safetensors")
    out = tmp_path / "mlp.dna"
    assert main(["compress", str(mlp), "-o", str(out), "--bits-per-weight", "4",
                 "--calibration", "auto"]) == 0
    assert set(hessians_for_file(mlp).names) == {"layers.0.weight", "layers.2.weight"}
    spiral = build_spiral_model(seed=0, hidden=8).save(tmp_path / "spiral.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(plain))
    capsys.readouterr()
    for model in (spiral, plain):
        assert main(["compress", str(model), "-o", str(tmp_path / "x.dna"),
                     "--bits-per-weight", "4", "--calibration", "auto"]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "calibration" in err and "Traceback" not in err
    assert not (tmp_path / "x.dna").exists()


def test_torch_tensor_input() -> None:
    rng = np.random.default_rng(5)
    h = second_moment(correlated(rng, 200, 8))
    w = torch.from_numpy(rng.normal(size=(4, 8)).astype(np.float32))
    entry, sections = encode_tensor(w, step=0.1, hessian=h)
    assert decode_tensor(entry, sections).dtype == torch.float32


def test_a_trellis_choice_becomes_scalar_rounding_under_gptq() -> None:
    from weightdna.codec.ratecontrol import Choice, scalar_choice, trellis_step_factor

    trellis = Choice(None, 0.3, bits=2.0 * 1000, sse=1.0, deadzone=0.0, quantizer="trellis")
    scalar = scalar_choice(trellis, 1000)
    assert scalar.quantizer == "scalar" and scalar.deadzone == 0.0
    assert scalar.step == pytest.approx(0.3 / trellis_step_factor(2.0))
    plain = Choice(None, 0.3, bits=2000, sse=1.0, deadzone=0.2)
    assert scalar_choice(plain, 1000) is plain


def test_sequential_hessians_follow_the_restored_layers(tmp_path: Path) -> None:
    model = build_digits_mlp(seed=0, hidden=(32,))
    images = np.random.default_rng(6).random((200, 64)).astype(np.float32)
    static = hessians(model, images)
    sequential = SequentialHessians(model, images)
    assert sequential.names == ["layers.0.weight", "layers.2.weight"]
    first = model.state_dict()["layers.0.weight"]
    moved = {"layers.0.weight": torch.from_numpy(first + 0.1)}
    # layer 0's H does not depend on restored values; layer 2's reads restored layer 0
    np.testing.assert_allclose(sequential.hessian("layers.0.weight", moved),
                               static["layers.0.weight"])
    np.testing.assert_allclose(sequential.hessian("layers.2.weight", {}),
                               static["layers.2.weight"])
    assert not np.allclose(sequential.hessian("layers.2.weight", moved),
                           static["layers.2.weight"])
    np.testing.assert_array_equal(model.state_dict()["layers.0.weight"], first)  # untouched
    weights = load_weights(model.save(tmp_path / "mlp.safetensors"))
    report = compress_model(weights, tmp_path / "s.dna", Target("bits_per_weight", 3.0),
                            calibration=sequential)
    assert report.bits_per_weight <= 3.0


def test_cli_sensitivity(tmp_path: Path, capsys) -> None:
    """--sensitivity auto measures the engine model's sensitivities and weights the
    allocation by them: every tensor gets a positive weight and the file still meets the
    size; a model without calibration data, or a per-tensor target, is refused cleanly."""
    mlp = build_digits_mlp(seed=0, hidden=(32,)).save(tmp_path / "mlp.safetensors")
    sens = sensitivity_for_file(mlp)
    assert set(sens) == {"layers.0.weight", "layers.0.bias", "layers.2.weight",
                         "layers.2.bias"} and min(sens.values()) > 0
    out = tmp_path / "mlp.dna"
    assert main(["compress", str(mlp), "-o", str(out), "--bits-per-weight", "3",
                 "--sensitivity", "auto", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bits_per_weight"] <= 3
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(plain))
    for argv in (["compress", str(plain), "-o", str(tmp_path / "x.dna"), "--bits-per-weight",
                  "4", "--sensitivity", "auto"],
                 ["compress", str(mlp), "-o", str(tmp_path / "x.dna"), "--snr", "20",
                  "--per-tensor", "--sensitivity", "auto"]):
        assert main(argv) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "--sensitivity" in err and "Traceback" not in err
    assert not (tmp_path / "x.dna").exists()
