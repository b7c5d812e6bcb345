"""The output check on synthetic inputs: it runs the kinds of model it knows, and only those,
and it tells unchanged weights from broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

from weightdna.cli import main
from weightdna.evaluate.outputs import check_outputs
from weightdna.train import train_digits_mlp
from weightdna.weights import load_weights


def _broken(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    changed = dict(state)
    changed[name] = torch.zeros_like(state[name])
    return changed


def test_engine_model_outputs(tmp_path: Path) -> None:
    path = train_digits_mlp(epochs=2).model.save(tmp_path / "mlp.safetensors")
    state = load_weights(path).state_dict()
    same = check_outputs(path, state)
    assert same is not None and same.kind == "engine" and same.worst_cosine == 1.0
    assert not same.diverged
    broken = check_outputs(path, _broken(state, "layers.2.weight"))
    assert broken.diverged and broken.worst_cosine < 0.99


def test_onnx_outputs(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from weightdna.evaluate.panel import BatchNormCNN, export_onnx

    torch.manual_seed(0)
    path = export_onnx(BatchNormCNN().eval(), tmp_path / "m.onnx")
    state = load_weights(path).state_dict()
    assert check_outputs(path, state).worst_cosine > 0.9999
    conv = next(n for n, t in state.items() if t.ndim == 4)
    noisy = dict(state)
    noisy[conv] = state[conv] + torch.randn_like(state[conv]) * state[conv].std() * 3
    assert check_outputs(path, noisy).diverged


def test_a_graph_exported_for_batch_one_is_fed_one_input_at_a_time(tmp_path: Path) -> None:
    # Every input's first dimension fixed at 1: fed as a batch of `samples` it ran one
    # input, which the check compared with itself ("the same output for every input").
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(weight, "W")])
    path = tmp_path / "batch1.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    same = check_outputs(path, {"W": torch.from_numpy(weight)}, samples=6)
    assert same.informative and same.samples == 6 and same.worst_cosine > 0.9999
    noisy = torch.from_numpy(weight + np.random.default_rng(1).standard_normal((64, 64))
                             .astype(np.float32))
    broken = check_outputs(path, {"W": noisy}, samples=6)
    assert broken.informative and broken.diverged


def test_outputs_the_same_for_every_input_tell_nothing(tmp_path: Path) -> None:
    # A network whose output is 0 for every synthetic input, as rapidocr's text detector
    # gave for the 1×1 images the check made: zeros against zeros is no evidence that the
    # restored model works (it said cosine 1.0000 for a detector that found no text at 1
    # bit per weight), and zeros against tiny values none that it is broken (0.0000 for
    # one that kept every line at 3).
    pytest.importorskip("onnxruntime")
    from weightdna.evaluate.panel import BatchNormCNN, export_onnx

    torch.manual_seed(0)
    model = BatchNormCNN().eval()
    with torch.no_grad():
        model.classifier[-1].bias.fill_(-1e4)
    path = export_onnx(torch.nn.Sequential(model, torch.nn.ReLU()), tmp_path / "dead.onnx")
    state = load_weights(path).state_dict()
    bias = next(n for n, t in state.items() if t.ndim == 1 and float(t.min()) < -1e3)
    lively = dict(state)
    lively[bias] = state[bias] + 1e4 + 1.0  # the restored model's outputs are not all 0
    for restored in (state, lively):
        check = check_outputs(path, restored)
        assert not check.informative and not check.diverged
        assert "cannot tell" in check.describe()
    # The check of the same network without the dead end still tells: informative.
    torch.manual_seed(0)
    path = export_onnx(BatchNormCNN().eval(), tmp_path / "alive.onnx")
    assert check_outputs(path, load_weights(path).state_dict()).informative


def test_a_graph_that_does_not_run_is_reported_unchecked(tmp_path: Path, capfd) -> None:
    # As Silero VAD's: its symbolic input made 1 sample long, the graph fails. compress says
    # so, and onnxruntime's own error lines stay off stderr.
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 3], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["rows"]),
         helper.make_node("MatMul", ["rows", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, shape])
    path = tmp_path / "frames.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert check_outputs(path, load_weights(path).state_dict()) is None  # 8 values, rows of 3
    assert main(["compress", str(path), "-o", str(tmp_path / "m.dna"), "--lossless"]) == 0
    captured = capfd.readouterr()
    assert "outputs not checked" in captured.out
    assert "onnxruntime" not in captured.err


def test_unknown_models_are_not_run(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.randn(4, 4)}, str(path))
    assert check_outputs(path, {"w": torch.zeros(4, 4)}) is None


@requires_minilm
def test_bert_outputs() -> None:
    state = load_weights(MINILM).state_dict()
    same = check_outputs(MINILM, state, samples=2)
    assert same.kind == "bert" and same.worst_cosine > 0.9999
    name = next(n for n in state if n.endswith("layer.0.attention.output.dense.weight"))
    assert check_outputs(MINILM, _broken(state, name), samples=2).worst_cosine < 0.999


def test_compress_reports_the_check(tmp_path: Path, capsys) -> None:
    path = train_digits_mlp(epochs=2).model.save(tmp_path / "mlp.safetensors")
    assert main(["compress", str(path), "-o", str(tmp_path / "m.dna"),
                 "--bits-per-weight", "0.8"]) == 0
    captured = capsys.readouterr()
    assert "synthetic inputs (engine; logits" in captured.out.replace("\n", " ")
    assert "outputs diverge" in captured.err
    assert main(["compress", str(path), "-o", str(tmp_path / "n.dna"), "--lossless",
                 "--check", "none"]) == 0
    assert "synthetic" not in capsys.readouterr().out
    # --json lists the check's warning with the others, not only its "diverged" flag.
    assert main(["compress", str(path), "-o", str(tmp_path / "j.dna"),
                 "--bits-per-weight", "0.8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output_check"]["diverged"]
    assert any("outputs diverge" in w for w in report["warnings"]), report["warnings"]
    # It says what to do: about a bit per weight more, and how to judge the file on real
    # inputs; a classifier's logits: the share of inputs whose top class changed.
    assert any("--bits-per-weight 1.8" in w and "weightdna evaluate" in w
               for w in report["warnings"]), report["warnings"]
    assert 0.0 <= report["output_check"]["top_changed"] <= 1.0


def test_synthetic_ids_come_in_runs_and_stay_within_the_table_they_index(tmp_path) -> None:
    """An id input looked up by a Gather (through a Cast) gets ids below the table's rows;
    others below ID_RANGE; ids repeat in runs along the last axis."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from weightdna.evaluate.outputs import ID_RANGE, gathered_rows, onnx_feeds

    table = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "table")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["types"], ["types64"], to=TensorProto.INT64),
         helper.make_node("Gather", ["table", "types64"], ["looked"]),
         helper.make_node("Cast", ["other"], ["other_f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceSum", ["looked"], ["y"], keepdims=0)],
        "g", [helper.make_tensor_value_info("types", TensorProto.INT32, ["n", 64]),
              helper.make_tensor_value_info("other", TensorProto.INT64, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("other_f", TensorProto.FLOAT, ["n", 64])],
        [table])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    assert gathered_rows(path) == {"types": 3}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = onnx_feeds(session, 4, np.random.default_rng(0), ids=gathered_rows(path))
    assert feeds["types"].shape == (4, 64) and feeds["types"].dtype == np.int32
    assert feeds["types"].min() >= 0 and feeds["types"].max() < 3
    other = feeds["other"]
    assert other.dtype == np.int64 and 0 <= other.min() and other.max() < ID_RANGE
    # runs: far fewer changes along a row than an iid draw would make
    assert np.count_nonzero(np.diff(other, axis=1)) < 0.25 * other.size
    session.run(None, feeds)


def test_one_value_per_input_is_compared_as_one_vector() -> None:
    # A probability per input: each row's cosine is only its sign (1 here for every row);
    # the cosine of the column of all of them sees the change.
    from weightdna.evaluate.outputs import output_cosines, row_cosines

    a, b = np.array([[1.0], [2.0], [3.0]]), np.array([[3.0], [2.0], [1.0]])
    assert row_cosines(a, b).tolist() == [1.0, 1.0, 1.0]
    assert output_cosines(a, b) == pytest.approx([10 / 14])
    assert output_cosines(a, a).tolist() == [1.0]
    wide = np.arange(6.0).reshape(3, 2) + 1
    assert output_cosines(wide, wide[::-1]).shape == (3,)  # rows of two values: per row


def _framed_graph(path: Path) -> Path:
    """A graph that runs only on frames of 512 samples, and only when its scalar int64
    input ``sr`` is 16000 (an If on Equal(sr, 16000) picks the frame shape: [-1, 512],
    else [-1, 3]), as Silero VAD does with its sample rate and chunk length."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((512, 4)).astype(np.float32), "w"),
               numpy_helper.from_array(np.array(16000, dtype=np.int64), "rate")]

    def branch(name: str, shape: list[int]) -> object:
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"{name}_shape"], value=numpy_helper.from_array(
                np.array(shape, dtype=np.int64), f"{name}_value"))], name, [],
            [helper.make_tensor_value_info(f"{name}_shape", TensorProto.INT64, [2])])

    graph = helper.make_graph(
        [helper.make_node("Equal", ["sr", "rate"], ["is_rate"]),
         helper.make_node("If", ["is_rate"], ["shape"], then_branch=branch("yes", [-1, 512]),
                          else_branch=branch("no", [-1, 3])),
         helper.make_node("Reshape", ["x", "shape"], ["frames"]),
         helper.make_node("MatMul", ["frames", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_graph_that_needs_a_length_and_a_compared_value_is_fed(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from weightdna.evaluate.outputs import compared_constants

    path = _framed_graph(tmp_path / "framed.onnx")
    assert compared_constants(path) == {"sr": [16000]}
    state = load_weights(path).state_dict()
    same = check_outputs(path, state)
    assert same is not None and same.informative and same.worst_cosine == 1.0, same
    assert "symbolic last dimensions 512" in same.describe()
    assert "sr=16000" in same.describe()
    noisy = dict(state)
    noisy["w"] = state["w"] + torch.randn_like(state["w"]) * 3
    broken = check_outputs(path, noisy)
    assert broken is not None and broken.diverged, broken


def test_evaluate_feeds_a_graph_that_needs_the_ladder(tmp_path: Path) -> None:
    # `weightdna evaluate` finds the inputs as compress's check does (`onnx_inputs`): the
    # framed graph runs only one sample at a time, 512 long, with sr=16000.
    pytest.importorskip("onnxruntime")
    from safetensors.torch import save_file

    from weightdna.evaluate.compare import evaluate_onnx

    path = _framed_graph(tmp_path / "framed.onnx")
    state = load_weights(path).state_dict()
    same = tmp_path / "same.safetensors"
    save_file(state, str(same))
    result = evaluate_onnx(path, same)
    assert "sr=16000" in result["fed"] and "512" in result["fed"]
    assert result["outputs"]["y"]["samples"] == 8 and result["worst_cosine"] == 1.0
    noisy = dict(state)
    noisy["w"] = state["w"] + torch.randn_like(state["w"]) * 3
    save_file(noisy, str(tmp_path / "noisy.safetensors"))
    assert evaluate_onnx(path, tmp_path / "noisy.safetensors")["worst_cosine"] < 0.9


def _normalised_image_net(path: Path, shape: list) -> Path:
    """A small image network: each image normalised over its sides (InstanceNormalization,
    as a norm layer does), a 3×3 conv, ReLU, global average pool, a 8×4 matrix. Fed 1×1
    images, every one normalises to its bias: the same output for every input."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("scale", np.ones(3)), ("bias", rng.standard_normal(3)),
        ("kernel", rng.standard_normal((8, 3, 3, 3))), ("W", rng.standard_normal((8, 4))))]
    graph = helper.make_graph(
        [helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["normal"]),
         helper.make_node("Conv", ["normal", "kernel"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["relu"]),
         helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_open_image_sides_are_fed_as_images_the_check_can_tell(tmp_path: Path) -> None:
    # PP-OCR's recognizer ([N, 3, H, W], H and W open) was fed 1×1 images, on which it
    # answers "blank" for every one: the check could not tell a restore that read 1 line of
    # 300 from the original. Open image sides are now 48×192 (64×64 before).
    pytest.importorskip("onnxruntime")
    path = _normalised_image_net(tmp_path / "image.onnx", ["n", 3, "h", "w"])
    state = load_weights(path).state_dict()
    same = check_outputs(path, state)
    assert same is not None and same.informative and same.worst_cosine == 1.0, same
    assert "48×192" in same.describe()
    noisy = dict(state)
    noisy["kernel"] = state["kernel"] + torch.randn_like(state["kernel"])
    broken = check_outputs(path, noisy)
    assert broken is not None and broken.informative and broken.diverged, broken


def test_image_sides(tmp_path: Path) -> None:
    # Both sides open: 48×192; one open: a strip of the fixed one (rapidocr's 48-high lines:
    # 192 wide); channels last (NHWC) too; other inputs and fixed sides untouched.
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from weightdna.evaluate.outputs import image_sides, onnx_feeds

    assert image_sides(["n", 3, "h", "w"]) == {2: 48, 3: 192}
    assert image_sides([None, 3, 48, None]) == {3: 192}
    assert image_sides([1, 3, None, 320]) == {2: 80}
    assert image_sides(["n", "h", "w", 3]) == {1: 48, 2: 192}
    assert image_sides(["n", 1, 64, "t"]) == {3: 256}
    assert image_sides(["n", 3, 224, "w"]) == {3: 512}
    for other in (["n", 3, 224, 224], ["n", 7, "h", "w"], ["n", "t", 80], ["n", "c", "h", "w"]):
        assert image_sides(other) == {}
    specs = {"nchw": ["n", 3, "h", "w"], "line": ["n", 3, 48, "w"], "nhwc": ["n", "h", "w", 3],
             "frames": ["n", "t", 16]}
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in specs], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in specs.items()],
        [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, None) for n in specs])
    path = tmp_path / "specs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = onnx_feeds(session, 2, np.random.default_rng(0))
    assert {n: f.shape for n, f in feeds.items()} == {
        "nchw": (2, 3, 48, 192), "line": (2, 3, 48, 192), "nhwc": (2, 48, 192, 3),
        "frames": (2, 1, 16)}
    plain = onnx_feeds(session, 2, np.random.default_rng(0), images=False)
    assert plain["nchw"].shape == (2, 3, 1, 1) and plain["line"].shape == (2, 3, 48, 1)


def test_a_graph_that_runs_only_on_one_pixel_images_is_fed_those(tmp_path: Path) -> None:
    # Where the graph does not run on 48×192 (a Reshape to (batch, 3): one pixel per
    # image), the spec's 1s, as before.
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "rows"),
               numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 4))
                                       .astype(np.float32), "W")]
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "rows"], ["pixels"]),
         helper.make_node("MatMul", ["pixels", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    path = tmp_path / "pixels.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    check = check_outputs(path, load_weights(path).state_dict())
    assert check is not None and check.informative and check.worst_cosine == 1.0, check
    assert check.fed == ""


def test_probabilities_near_zero_for_every_input_tell_nothing(tmp_path: Path) -> None:
    # rapidocr's text detector, fed noise of any size, gives a probability map below 10⁻⁴
    # everywhere: its rows differ by all of their largest value, so they looked informative
    # and a detector that kept 94% of its text pixels scored a worst cosine of 0.0000.
    # A probability (a Sigmoid's or Softmax's output) is measured against 1.
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from weightdna.evaluate.outputs import output_scale, same_for_every_input

    rng = np.random.default_rng(0)

    def sigmoid_net(path: Path, offset: float) -> Path:
        weights = [numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32),
                                           "W"),
                   numpy_helper.from_array(np.full(4, offset, dtype=np.float32), "b")]
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["logits"]),
             helper.make_node("Add", ["logits", "b"], ["shifted"]),
             helper.make_node("Sigmoid", ["shifted"], ["p"]),
             helper.make_node("Identity", ["p"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], weights)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
        return path

    dead = sigmoid_net(tmp_path / "dead.onnx", -30.0)
    assert output_scale(dead) == 1.0
    state = load_weights(dead).state_dict()
    noisy = dict(state, W=state["W"] + torch.randn_like(state["W"]))
    check = check_outputs(dead, noisy)
    assert check is not None and not check.informative and not check.diverged, check
    alive = sigmoid_net(tmp_path / "alive.onnx", 0.0)
    state = load_weights(alive).state_dict()
    check = check_outputs(alive, dict(state, W=state["W"] + torch.randn_like(state["W"])))
    assert check is not None and check.informative and check.diverged, check
    tiny = np.array([[1e-6, 0.0], [0.0, 2e-6]])
    assert not same_for_every_input(tiny) and same_for_every_input(tiny, scale=1.0)


def test_probabilities_are_judged_by_their_distance_not_their_cosine() -> None:
    # PP-OCR's angle classifier answers p(0°) ≈ 0.4-0.6 on noise images; a restore that
    # moves 0.5 to 0.6 (a two-value cosine of 0.98, under the 0.99 line) has moved a tenth
    # of the probability: it kept 98-99.7% of the real calls where the check warned.
    from weightdna.evaluate.outputs import (
        PROBABILITY_DISTANCE_WARNING,
        OutputCheck,
        output_cosines,
        probability_distances,
    )

    original = np.array([[0.5, 0.5], [0.4, 0.6], [0.7, 0.3]])
    near = np.array([[0.6, 0.4], [0.45, 0.55], [0.65, 0.35]])
    far = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8]])
    assert output_cosines(original, near).min() < 0.99
    assert probability_distances(original, near) == pytest.approx([0.1, 0.05, 0.05])
    assert probability_distances(original, far) == pytest.approx([0.4, 0.4, 0.5])
    # Values that do not sum to 1 over the last axis (a Sigmoid's map): each its own.
    maps = np.array([[[0.2, 0.3, 0.9]], [[0.1, 0.1, 0.1]]])
    assert probability_distances(maps, maps + 0.05).shape == (2, 1, 3)
    assert probability_distances(maps, maps + 0.05) == pytest.approx(np.full((2, 1, 3), 0.05))

    def check(restored: np.ndarray, probability: bool) -> OutputCheck:
        cosines = output_cosines(original, restored)
        distance = float(probability_distances(original, restored).mean())
        return OutputCheck("onnx", 3, float(cosines.min()), float(cosines.mean()),
                           probability_distance=distance if probability else None)

    kept = check(near, probability=True)
    assert kept.probability_distance < PROBABILITY_DISTANCE_WARNING and not kept.diverged
    assert "total variation distance to the original's 0.0667" in kept.describe()
    broken = check(far, probability=True)
    assert broken.diverged and "0.4333 > 0.13" in broken.warning()
    # An output not known to be a probability keeps the cosine's line.
    assert check(near, probability=False).diverged
    assert "worst cosine" in check(near, probability=False).warning()
    nan = OutputCheck("onnx", 3, float("nan"), float("nan"), probability_distance=float("nan"))
    assert nan.diverged


def test_a_softmax_output_is_checked_by_its_probability_distance(tmp_path: Path) -> None:
    # Through check_outputs: a Softmax graph gets the distance, and a restore that zeroes
    # its weights (every answer 0.5) is reported as diverged.
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 2))
                                       .astype(np.float32), "W")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["p"], axis=-1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)], weights)
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    state = load_weights(path).state_dict()
    same = check_outputs(path, state)
    assert same is not None and same.probability_distance == 0.0 and not same.diverged
    broken = check_outputs(path, _broken(state, "W"))
    assert broken is not None and broken.informative and broken.diverged, broken
    assert broken.probability_distance > 0.13 and "total variation" in broken.describe()


def test_a_graph_that_runs_only_on_square_images_is_fed_64_by_64(tmp_path: Path) -> None:
    # Open sides, but a weight of 64×64 multiplies the image: it does not run on the 48×192
    # strip; it is fed the square sides (SQUARE_SIDES) before falling back to 1×1.
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 64, 64))
                                       .astype(np.float32), "W")]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    path = tmp_path / "square.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    state = load_weights(path).state_dict()
    check = check_outputs(path, state)
    assert check is not None and check.informative and check.worst_cosine == 1.0, check
    assert "image x 64×64 (open sides)" in check.describe(), check.describe()
    broken = check_outputs(path, dict(state, W=-state["W"]))
    assert broken is not None and broken.diverged, broken
