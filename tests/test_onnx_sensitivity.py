"""Data-free sensitivities of an ONNX graph: one session, the perturbed weight fed by name,
say which weights matter; none where the synthetic inputs cannot tell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.cli import main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _two_paths(path: Path, scale: float = 0.01) -> Path:
    """y = x·A + scale · (x·B): A an initializer, B a Constant node's tensor, of one size
    and scale, so A's error moves y about (1/scale)² times more than B's."""
    rng = np.random.default_rng(0)
    a = numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32), "A")
    b = numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32), "B_value")
    s = numpy_helper.from_array(np.array(scale, dtype=np.float32), "s")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["B"], value=b),
         helper.make_node("MatMul", ["x", "A"], ["xa"]),
         helper.make_node("MatMul", ["x", "B"], ["xb"]),
         helper.make_node("Mul", ["xb", "s"], ["small"]),
         helper.make_node("Add", ["xa", "small"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [a, s])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_weight_that_matters_more_measures_more(tmp_path: Path) -> None:
    from weightdna.evaluate.onnx_sensitivity import measured_names, onnx_sensitivity

    path = _two_paths(tmp_path / "two.onnx")
    assert set(measured_names(path)) >= {"A", "B"}
    result = onnx_sensitivity(path, names=["A", "B"])
    assert result.measured is not None, result.why_not
    ratio = result.measured["A"] / result.measured["B"]
    assert 3e3 < ratio < 3e4, result.measured  # (1 / 0.01)² = 1e4, within noise


def test_the_fed_weight_is_the_one_the_session_uses(tmp_path: Path) -> None:
    # One session serves every perturbation only if onnxruntime reads the fed value, not a
    # copy folded in when the session was made: the fed run equals a graph rebuilt with it.
    from weightdna.evaluate.onnx_sensitivity import _session, measurable_graph, onnx_forward
    from weightdna.evaluate.outputs import onnx_inputs
    from weightdna.weights.onnx_format import fill_weights, load_model, serialise

    path = _two_paths(tmp_path / "two.onnx")
    model = load_model(path)
    session = _session(serialise(measurable_graph(model, ["A", "B"])))
    found = onnx_inputs(session, model, 4, np.random.default_rng(0), skip={"A", "B", "s"})
    forward = onnx_forward(session, found)
    changed = {"A": np.ones((128, 64), np.float32), "B": np.full((128, 64), 3, np.float32)}
    for name, value in changed.items():
        rebuilt = load_model(path)
        fill_weights(rebuilt, {name: torch.from_numpy(value)})
        plain = ort.InferenceSession(serialise(rebuilt), providers=["CPUExecutionProvider"])
        expected = plain.run(None, found.feeds[0])[0]
        moved = forward(name, value)
        assert not np.allclose(moved, forward("", np.empty(0)))
        np.testing.assert_allclose(moved, expected.reshape(4, -1), rtol=1e-5, atol=1e-6)


def _constant_output(path: Path) -> Path:
    """y = 0 · (x·A): the same output for every input."""
    rng = np.random.default_rng(0)
    a = numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32), "A")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "A"], ["xa"]),
         helper.make_node("Mul", ["xa", "zero"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [a, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_compress_with_onnx_sensitivities_and_without_informative_inputs(
        tmp_path: Path, capsys) -> None:
    from weightdna.evaluate.onnx_sensitivity import onnx_sensitivity

    two = _two_paths(tmp_path / "two.onnx")
    assert main(["compress", str(two), "-o", str(tmp_path / "a.dna"), "--bits-per-weight",
                 "3", "--sensitivity", "synthetic"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "output sensitivities of" in out and "measured on synthetic inputs" in out
    assert "bits spent by output sensitivities" in out
    flat = _constant_output(tmp_path / "flat.onnx")
    assert onnx_sensitivity(flat).measured is None
    assert main(["compress", str(flat), "-o", str(tmp_path / "b.dna"), "--bits-per-weight",
                 "3", "--sensitivity", "synthetic"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no output sensitivities: the original gives the same output" in out
    assert "bits spent by output sensitivities" not in out
    assert main(["compress", str(two), "-o", str(tmp_path / "c.dna"), "--bits-per-weight",
                 "3", "--sensitivity", "auto"]) == 1
    assert "--sensitivity synthetic" in " ".join(capsys.readouterr().err.split())


def test_the_api_takes_onnx_sensitivities(tmp_path: Path) -> None:
    import weightdna
    from weightdna.codec import read_dna_file

    two = _two_paths(tmp_path / "two.onnx")
    plain = weightdna.compress(two, tmp_path / "plain.dna", bits_per_weight=2,
                               sensitivity="none")
    measured = weightdna.compress(two, tmp_path / "s.dna", bits_per_weight=2,
                                  sensitivity="synthetic")
    snr = {report.output.name: {t.name: t.snr_db for t in report.tensors}
           for report in (plain, measured)}
    # A's error counts about 10⁴ times B's: A gets the finer step.
    assert snr["s.dna"]["A"] - snr["s.dna"]["B"] > snr["plain.dna"]["A"] - snr["plain.dna"]["B"] + 6
    assert read_dna_file(tmp_path / "s.dna").names
