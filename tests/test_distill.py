"""Inputs distilled from an engine model, and the data-free calibration they give by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.cli import main
from weightdna.codec.ratecontrol import Target
from weightdna.errors import InvalidInputError
from weightdna.evaluate import accuracy_of_restored
from weightdna.evaluate.calibration import SequentialHessians, calibration_for, calibration_mode
from weightdna.evaluate.distill import distilled_inputs, input_shape
from weightdna.evaluate.sensitivity import is_engine_file, sensitivity_mode
from weightdna.train import build_spiral_model, train_digits_mlp
from weightdna.weights import load_weights, save_weights


@pytest.fixture(scope="module")
def mlp():
    return train_digits_mlp(seed=0).model


def test_distilled_inputs_are_confident_in_range_and_seeded(mlp) -> None:
    """Each input is in [0, 1] and read as its assigned class (0, 1, …, 9 in turn); the
    same seed gives the same inputs; the model is left as it was."""
    before = {k: v.copy() for k, v in mlp.state_dict().items()}
    x = distilled_inputs(mlp, samples=30)
    assert x.shape == (30, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.mean(mlp.predict(x).argmax(axis=1) == np.arange(30) % 10) >= 0.9
    assert np.array_equal(x, distilled_inputs(mlp, samples=30))
    assert not np.array_equal(x, distilled_inputs(mlp, samples=30, seed=1))
    assert all(np.array_equal(v, before[k]) for k, v in mlp.state_dict().items())
    noise = np.random.default_rng(0).uniform(size=(30, 64)).astype(np.float32)
    assert np.mean(mlp.predict(noise).argmax(axis=1) == np.arange(30) % 10) < 0.5
    with pytest.raises(InvalidInputError, match="samples"):
        distilled_inputs(mlp, samples=0)


def test_engine_default_is_distilled_calibration(mlp, tmp_path: Path) -> None:
    """An engine model under a whole-model bits-per-weight target gets GPTQ on distilled
    inputs by default; under other targets, and any other model, none; asking for it on
    another model is refused with what to do."""
    path = mlp.save(tmp_path / "mlp.safetensors")
    other = save_weights({k: torch.from_numpy(v)
                          for k, v in mlp.state_dict().items()}, tmp_path / "plain.safetensors")
    bpw, snr = Target("bits_per_weight", 2.0), Target("snr", 20.0)
    assert is_engine_file(path) and not is_engine_file(other)
    assert not is_engine_file(tmp_path / "missing.safetensors")
    assert input_shape(mlp) == (64,)
    assert calibration_mode(path, bpw) == "synthetic"
    assert calibration_mode(path, snr) == "none"
    assert calibration_mode(path, Target("snr", 20.0, per_tensor=True)) == "none"
    assert calibration_mode(path, Target("max_abs_error", 0.01)) == "none"
    assert calibration_mode(other, bpw) == "none"
    spiral = build_spiral_model(seed=0, hidden=8).save(tmp_path / "spiral.safetensors")
    assert is_engine_file(spiral) and calibration_mode(spiral, bpw) == "none"  # not [0, 1]
    assert isinstance(calibration_for(spiral, "synthetic", bpw), SequentialHessians)
    names = load_weights(path).names
    assert sensitivity_mode(None, path, names, bpw) == "none"  # GPTQ alone measured best
    assert isinstance(calibration_for(path, None, bpw), SequentialHessians)
    assert calibration_for(path, "none", bpw) is None
    assert calibration_for(other, None, bpw) is None
    with pytest.raises(InvalidInputError, match="engine model"):
        calibration_for(other, "synthetic", bpw)


def test_default_keeps_the_digits_mlp_working_at_2_bits(mlp, tmp_path: Path, capsys) -> None:
    """The data-free default against the objective alone, same file size: at 2 bits per
    weight the seed-0 MLP loses under 2 points by default (1.11 when written; 2.50 with
    --calibration none, the objective alone; ten
    seeds in BENCHMARKS.md, "Function on the model panel")."""
    path = mlp.save(tmp_path / "mlp.safetensors")
    losses = {}
    for setting in ([], ["--calibration", "none"]):
        out = tmp_path / f"{len(setting)}.dna"
        code = main(["compress", str(path), "-o", str(out), "--bits-per-weight", "2",
                     "--check", "none", "--json", *setting])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        report = json.loads(captured.out)
        assert code == 0 and report["file_bytes"] * 8 <= 2 * report["weights"]
        assert main(["decompress", str(out), "-o", str(tmp_path / "r.safetensors"),
                     "--force"]) == 0
        capsys.readouterr()
        restored = load_weights(tmp_path / "r.safetensors").state_dict()
        losses[len(setting)] = -accuracy_of_restored(mlp, restored)["delta_points"]
    assert losses[0] < 2.0 and losses[0] < losses[2]
