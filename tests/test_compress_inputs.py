"""`weightdna.evaluate.defaults.compress_inputs`: what `weightdna compress` gives
`compress_model`, so that a bench or test that calls the library writes the command's file
byte for byte, its stored ONNX graph inside the bits-per-weight budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from weightdna.cli import main
from weightdna.codec.bundle import StoredFiles
from weightdna.codec.compress import compress_model
from weightdna.codec.container import read_dna_file
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.defaults import CORRECTING_STAGE, compress_inputs
from weightdna.weights import load_weights


class _Net(torch.nn.Module):
    """An image Conv into a BatchNorm (the ONNX default corrects its biases) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.norm = torch.nn.BatchNorm2d(16)
        self.head = torch.nn.Conv2d(16, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))))


def _onnx(path: Path) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        net.norm.running_mean.uniform_(-0.2, 0.2)
        net.norm.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"],
                      output_names=["out"], opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE,  # EVAL folds the BatchNorm
                      dynamic_axes={"image": {0: "batch"}, "out": {0: "batch"}})
    return path


def test_the_library_writes_the_command_s_file(tmp_path: Path) -> None:
    model = _onnx(tmp_path / "net.onnx")
    cli = tmp_path / "cli.dna"
    assert main(["compress", str(model), "-o", str(cli), "--bits-per-weight", "3",
                 "--check", "none"]) == 0
    weights, target = load_weights(model), Target("bits_per_weight", 3.0)
    stages: list[list[str]] = []
    inputs = compress_inputs(model, weights, target,
                             progress_for=lambda s: stages.append(s) or None)
    assert inputs.files.paths == ["model.onnx"] and inputs.adjust is not None
    assert stages == [[CORRECTING_STAGE]] and inputs.mode == "none"
    library = tmp_path / "library.dna"
    report = compress_model(weights, library, target, **inputs.options())
    assert library.read_bytes() == cli.read_bytes()
    # Without the stored graph the weights get its bytes: a larger coding of them.
    options = {**compress_inputs(model, weights, target).options(), "files": StoredFiles()}
    alone = compress_model(weights, tmp_path / "alone.dna", target, **options)
    assert report.files_bytes > 0 and not read_dna_file(alone.output).files
    assert sum(t.bytes for t in alone.tensors) > sum(t.bytes for t in report.tensors)


def test_a_safetensors_file_gets_nothing_beside_its_weights(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.from_numpy(np.random.default_rng(0).standard_normal(
        (64, 64)).astype(np.float32))}, str(path))
    inputs = compress_inputs(path, load_weights(path), Target("bits_per_weight", 3.0))
    assert inputs.files.paths == [] and inputs.adjust is None and inputs.calibration is None
    assert inputs.sensitivity is None and inputs.column_factors is None
