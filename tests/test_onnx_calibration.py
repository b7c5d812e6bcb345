"""Data-free GPTQ Hessians of an ONNX graph: what onnxruntime records for each Conv / Gemm /
MatMul weight is the XᵀX/N of its inputs, im2col'd by hand here (stride, pads, dilation,
groups, 1-D and 2-D, inside an If branch), and weights GPTQ cannot serve are left alone."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target
from weightdna.errors import InvalidInputError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(7)
W = {
    "conv2d": RNG.standard_normal((6, 2, 3, 2)),  # groups 2 over 4 channels
    "conv1d": RNG.standard_normal((4, 3, 3)),
    "same1d": RNG.standard_normal((2, 3, 4)),
    "gemm": RNG.standard_normal((3, 5)),  # transB = 1: (out, in)
    "left": RNG.standard_normal((2, 5)),  # MatMul(left, b): (out, in)
    "right": RNG.standard_normal((5, 3)),  # MatMul(a, right): (in, out), left alone
    "then_w": RNG.standard_normal((2, 3, 1)),
    "else_w": RNG.standard_normal((2, 3, 1)),
}
CONV2D = {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}
CONV1D = {"strides": [2], "pads": [1, 2]}
SAME1D = {"strides": [3], "auto_pad": "SAME_UPPER"}


def _graph(path: Path) -> Path:
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in W.items()
             if not k.endswith("_w")]

    def branch(name: str, weight: str) -> onnx.GraphProto:
        value = numpy_helper.from_array(W[weight].astype(np.float32), weight)
        return helper.make_graph(
            [helper.make_node("Constant", [], [weight], value=value),
             helper.make_node("Conv", ["x1", weight], [f"{name}_y"])], name, [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)])

    nodes = [
        helper.make_node("Conv", ["x2", "conv2d"], ["y2"], **CONV2D),
        helper.make_node("Conv", ["x1", "conv1d"], ["y1"], **CONV1D),
        helper.make_node("Conv", ["x1", "same1d"], ["y3"], **SAME1D),
        helper.make_node("Gemm", ["a", "gemm"], ["y4"], transB=1),
        helper.make_node("MatMul", ["left", "b"], ["y5"]),
        helper.make_node("MatMul", ["a", "right"], ["y6"]),
        helper.make_node("If", ["cond"], ["y7"], then_branch=branch("then", "then_w"),
                         else_branch=branch("else", "else_w")),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x2", f, [2, 4, 7, 9]),
         helper.make_tensor_value_info("x1", f, [2, 3, 11]),
         helper.make_tensor_value_info("a", f, [4, 5]),
         helper.make_tensor_value_info("b", f, [5, 6]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(n, f, None) for n in
         ("y2", "y1", "y3", "y4", "y5", "y6", "y7")], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _feeds(count: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x2": rng.standard_normal((2, 4, 7, 9)).astype(np.float32),
             "x1": rng.standard_normal((2, 3, 11)).astype(np.float32),
             "a": rng.standard_normal((4, 5)).astype(np.float32),
             "b": rng.standard_normal((5, 6)).astype(np.float32),
             "cond": np.array(True)} for _ in range(count)]


def _fixed(batches: list[dict[str, np.ndarray]]):
    from weightdna.evaluate.outputs import OnnxInputs

    return lambda session, model, samples, rng, skip: OnnxInputs(batches, np.zeros(1))


def _columns_by_hand(x: np.ndarray, weight_shape: tuple, strides, pads, dilations,
                     groups: int) -> np.ndarray:
    """im2col with loops: for each group, sample and output position, the patch in the
    weight row's (channel, kernel…) order."""
    n, channels = x.shape[:2]
    spatial = x.ndim - 2
    kernel = weight_shape[2:]
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[a], pads[spatial + a])
                                           for a in range(spatial)])
    outs = [(padded.shape[2 + a] - (kernel[a] - 1) * dilations[a] - 1) // strides[a] + 1
            for a in range(spatial)]
    per = channels // groups
    rows = []
    for g in range(groups):
        for s in range(n):
            for position in itertools.product(*map(range, outs)):
                row = [padded[(s, g * per + c) + tuple(
                    position[a] * strides[a] + tap[a] * dilations[a] for a in range(spatial))]
                    for c in range(per) for tap in itertools.product(*map(range, kernel))]
                rows.append(row)
    return np.array(rows, dtype=np.float64)


def _moments(rows: list[np.ndarray]) -> np.ndarray:
    x = np.concatenate(rows)
    return x.T @ x / x.shape[0]


def test_the_recorded_hessians_are_the_im2col_moments(tmp_path: Path) -> None:
    from weightdna.evaluate.onnx_calibration import onnx_hessians

    path = _graph(tmp_path / "g.onnx")
    batches = _feeds()
    result = onnx_hessians(path, loading=0.0, feeds=_fixed(batches))
    assert set(result.hessians) == {"conv2d", "conv1d", "same1d", "gemm", "left", "then_w"}
    assert result.left["transposed"] == ["right"]
    assert result.left["unreached"] == ["else_w"]  # the branch not taken
    # The hand-made columns are those the convolution multiplies: onnxruntime's outputs.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y2, y1, y3 = session.run(["y2", "y1", "y3"], batches[0])
    by_hand = _columns_by_hand(batches[0]["x2"].astype(np.float64), W["conv2d"].shape,
                               CONV2D["strides"], CONV2D["pads"], CONV2D["dilations"], 2)
    half = by_hand.shape[0] // 2  # group 0's rows, then group 1's
    out0 = by_hand[:half] @ W["conv2d"][:3].reshape(3, -1).T  # (n, i, j) × 3 channels
    assert np.allclose(out0, y2[:, :3].transpose(0, 2, 3, 1).reshape(-1, 3), atol=1e-4)
    by_hand1 = _columns_by_hand(batches[0]["x1"].astype(np.float64), W["conv1d"].shape,
                                CONV1D["strides"], [1, 2], [1], 1)
    assert np.allclose(by_hand1 @ W["conv1d"].reshape(4, -1).T,
                       y1.transpose(0, 2, 1).reshape(-1, 4), atol=1e-4)
    # SAME_UPPER on 11 samples, stride 3, kernel 4: 4 outputs, 1 padded at each end.
    by_hand3 = _columns_by_hand(batches[0]["x1"].astype(np.float64), W["same1d"].shape,
                                [3], [1, 1], [1], 1)
    assert np.allclose(by_hand3 @ W["same1d"].reshape(2, -1).T,
                       y3.transpose(0, 2, 1).reshape(-1, 2), atol=1e-4)
    expected = {
        "conv2d": _moments([_columns_by_hand(b["x2"].astype(np.float64), W["conv2d"].shape,
                                             CONV2D["strides"], CONV2D["pads"],
                                             CONV2D["dilations"], 2) for b in batches]),
        "conv1d": _moments([_columns_by_hand(b["x1"].astype(np.float64), W["conv1d"].shape,
                                             [2], [1, 2], [1], 1) for b in batches]),
        "same1d": _moments([_columns_by_hand(b["x1"].astype(np.float64), W["same1d"].shape,
                                             [3], [1, 1], [1], 1) for b in batches]),
        "gemm": _moments([b["a"].astype(np.float64) for b in batches]),
        "left": _moments([b["b"].T.astype(np.float64) for b in batches]),
        "then_w": _moments([b["x1"].transpose(0, 2, 1).reshape(-1, 3).astype(np.float64)
                            for b in batches]),
    }
    for name, hessian in expected.items():
        assert result.hessians[name].shape == hessian.shape, name
        assert np.allclose(result.hessians[name], hessian, rtol=1e-5, atol=1e-6), name


def test_loading_adds_to_the_diagonal_only(tmp_path: Path) -> None:
    from weightdna.evaluate.onnx_calibration import onnx_hessians

    path = _graph(tmp_path / "g.onnx")
    plain = onnx_hessians(path, loading=0.0, feeds=_fixed(_feeds())).hessians["conv1d"]
    loaded = onnx_hessians(path, loading=0.5, feeds=_fixed(_feeds())).hessians["conv1d"]
    extra = loaded - plain
    assert np.allclose(extra, np.eye(len(extra)) * 0.5 * np.mean(np.diag(plain)))


def test_weights_with_too_few_rows_per_column_are_left_to_rounding(tmp_path: Path) -> None:
    from weightdna.evaluate.onnx_calibration import onnx_hessians

    path = _graph(tmp_path / "g.onnx")
    # gemm: 3 batches × 4 rows for 5 columns (2.4 each); conv1d: 3 × 2 × 6 rows for 9 (4).
    result = onnx_hessians(path, feeds=_fixed(_feeds()), min_rows=3)
    assert "gemm" in result.left["few"] and "gemm" not in result.hessians
    assert "conv1d" in result.hessians and "gemm" not in result.left["unreached"]


@pytest.mark.parametrize(("x_shape", "w_shape", "attributes"), [
    # 3-D, depthwise, dilated, asymmetric pads: a rank the graph above does not hold.
    ((2, 3, 5, 6, 4), (3, 1, 2, 3, 2), {"group": 3, "strides": [2, 1, 2],
                                        "dilations": [1, 2, 1], "pads": [0, 1, 1, 1, 0, 0]}),
    # SAME_LOWER (onnxruntime takes it without dilation), grouped 2-D.
    ((2, 4, 7, 8), (6, 2, 3, 2), {"group": 2, "strides": [2, 3], "auto_pad": "SAME_LOWER"}),
])
def test_conv_columns_times_the_weight_rows_are_the_convolution(x_shape, w_shape,
                                                                 attributes) -> None:
    from weightdna.evaluate.onnx_calibration import conv_columns

    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, list(x.shape))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    y = ort.InferenceSession(model.SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    groups = attributes["group"]
    rows = conv_columns(x, w.shape[2:], attributes.get("strides", ()),
                        attributes.get("pads", ()), attributes.get("dilations", ()), groups,
                        attributes.get("auto_pad", "NOTSET"))
    per_group = rows.reshape(groups, -1, rows.shape[1])
    out = w.shape[0] // groups
    for g in range(groups):
        got = per_group[g] @ w[g * out:(g + 1) * out].reshape(out, -1).T  # (n, positions…)
        want = np.moveaxis(y[:, g * out:(g + 1) * out], 1, -1).reshape(-1, out)
        assert np.allclose(got, want, atol=1e-4), g


def test_synthetic_calibration_reaches_the_codec(tmp_path: Path) -> None:
    # `--calibration synthetic` on an ONNX file gives its Hessians to compress_model, which
    # then codes differently from no calibration (GPTQ's symbols) at the same target.
    from weightdna.evaluate.calibration import calibration_for
    from weightdna.weights import load_weights

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1]),
         helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, 50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")])
    path = tmp_path / "c.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    target = Target("bits_per_weight", 2.0)
    notes: list[str] = []
    hessians = calibration_for(path, "synthetic", target, notes.append)
    assert set(hessians) == {"w"} and hessians["w"].shape == (96, 96)
    assert notes and "GPTQ Hessians of 1 weights" in notes[0]
    weights = load_weights(path)
    files = {}
    for mode, calibration in (("none", None), ("synthetic", hessians)):
        compress_model(weights, tmp_path / f"{mode}.dna", target, calibration=calibration)
        from weightdna.codec import read_dna_file

        files[mode] = read_dna_file(tmp_path / f"{mode}.dna").tensor("w")
    assert not torch.equal(files["none"], files["synthetic"])
    # An option: ONNX files get no calibration by default (it cost rapidocr's angle
    # classifier 15 points at 3 bits per weight, BENCHMARKS.md "Data-free GPTQ for ONNX
    # graphs").
    from weightdna.evaluate.calibration import calibration_mode

    assert calibration_mode(path, target) == "none"
    assert calibration_for(path, None, target) is None


def _nothing_to_calibrate(tmp_path: Path) -> Path:
    """An ONNX file whose one weight is a MatMul's right operand (stored (in, out)), which
    GPTQ leaves to rounding: no Hessian to record."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((64, 64), np.float32), "w")])
    path = tmp_path / "t.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_graph_with_nothing_to_calibrate_is_refused(tmp_path: Path) -> None:
    from weightdna.evaluate.calibration import calibration_for

    path = _nothing_to_calibrate(tmp_path)
    with pytest.raises(InvalidInputError, match="no Hessian"):
        calibration_for(path, "synthetic", Target("bits_per_weight", 2.0))


def test_the_cli_refuses_a_graph_with_nothing_to_calibrate(tmp_path: Path, capsys) -> None:
    from weightdna.cli import main

    path = _nothing_to_calibrate(tmp_path)
    source = path.read_bytes()
    out = tmp_path / "t.dna"
    assert main(["compress", str(path), "-o", str(out), "--bits-per-weight", "2",
                 "--calibration", "synthetic"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "no Hessian" in err and "Traceback" not in err
    assert not out.exists() and path.read_bytes() == source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]
