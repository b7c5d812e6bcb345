"""Synthetic inputs matched to an ONNX graph's first BatchNorm (`weightdna.evaluate.bn_inputs`):
on a torch-exported Conv + BatchNorm whose running statistics are those of smooth,
offset images, the drawn inputs give that BatchNorm its running mean and deviation (white
noise does not); a graph whose input does not go through a Conv into a BatchNorm gets the
output check's inputs, and the bias correction on it is the same under either switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from weightdna.evaluate import bn_inputs  # noqa: E402
from weightdna.evaluate.onnx_correction import onnx_corrected_biases  # noqa: E402
from weightdna.weights.onnx_format import load_model  # noqa: E402

SHAPE = (16, 3, 24, 32)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))))


def _real_like(rng: np.random.Generator) -> np.ndarray:
    """Grey, smooth, offset images: one map for every channel, low-passed at 4 px (a scale
    the fit tries)."""
    noise = bn_inputs.smooth_noise(SHAPE, 4.0, "shared", rng)
    return (0.4 * noise + np.array([0.6, 0.5, 0.7]).reshape(1, 3, 1, 1)).astype(np.float32)


def _exported(path: Path) -> Path:
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        y = net.conv(torch.from_numpy(_real_like(np.random.default_rng(1))))
        net.norm.running_mean.copy_(y.mean(dim=(0, 2, 3)))
        net.norm.running_var.copy_(y.var(dim=(0, 2, 3), unbiased=False))
    torch.onnx.export(net, (torch.zeros(1, 3, 24, 32),), str(path), input_names=["image"],
                      output_names=["out"], opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE,  # EVAL folds the BatchNorm
                      dynamic_axes={"image": {0: "batch"}, "out": {0: "batch"}})
    return path


def test_the_drawn_inputs_give_the_first_batchnorm_its_running_statistics(
        tmp_path: Path) -> None:
    norm = bn_inputs.first_norm(load_model(_exported(tmp_path / "net.onnx")))
    assert norm is not None and norm.name == "image" and norm.weight.shape == (8, 3, 3, 3)
    x, fit = bn_inputs.matched_inputs(norm, SHAPE, np.random.default_rng(0))
    assert x.shape == SHAPE and x.dtype == np.float32
    mean, var = bn_inputs.batch_statistics(norm, x)
    deviation = np.sqrt(norm.var + norm.epsilon)
    assert np.max(np.abs(mean - norm.mean) / deviation) < 0.05
    assert np.max(np.abs(np.log(np.sqrt(var + norm.epsilon) / deviation))) < 0.1
    assert fit.mean_miss < 0.05 and fit.deviation_miss < 0.1
    assert fit.scale > 0  # smooth images are not fitted best by white noise
    white = np.random.default_rng(0).standard_normal(SHAPE)
    misses = bn_inputs._misses(norm, *bn_inputs.batch_statistics(norm, white))
    assert misses[0] > 5 * fit.mean_miss + 0.1 or misses[1] > 5 * fit.deviation_miss + 0.1


def test_the_bias_correction_runs_on_them_and_says_so(tmp_path: Path) -> None:
    path = _exported(tmp_path / "net.onnx")
    model = load_model(path)
    protos = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    head = next(n for n in protos if protos[n].ndim == 4 and protos[n].shape[0] == 4)
    restored = {head: torch.from_numpy(protos[head] * 1.3)}  # a coding error
    biases = [n for n in protos if protos[n].ndim == 1]
    plain = onnx_corrected_biases(path, restored, biases, max_shift=1e9, inputs="normal")
    matched = onnx_corrected_biases(path, restored, biases, max_shift=1e9,
                                    inputs="batchnorm")
    assert plain.fed == "" and matched.fed.startswith("BatchNorm-matched inputs")
    assert matched.biases and set(matched.biases) == set(plain.biases)
    assert any(not torch.equal(matched.biases[b], plain.biases[b]) for b in plain.biases)
    with pytest.raises(ValueError):
        onnx_corrected_biases(path, restored, biases, inputs="imagenet")


def _no_first_norm(path: Path) -> Path:
    rng = np.random.default_rng(2)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4),
               "s": np.ones(4), "o": rng.standard_normal(4), "m": rng.standard_normal(4),
               "v": np.ones(4)}
    nodes = [helper.make_node("Relu", ["x"], ["r"]),  # the input is not read by the Conv
             helper.make_node("Conv", ["r", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_graph_without_a_first_batchnorm_keeps_the_output_check_s_inputs(
        tmp_path: Path) -> None:
    path = _no_first_norm(tmp_path / "g.onnx")
    assert bn_inputs.first_norm(load_model(path)) is None
    restored = {"w": torch.from_numpy(
        numpy_helper.to_array(load_model(path).graph.initializer[0]) * 1.2)}
    plain = onnx_corrected_biases(path, restored, ["b", "o"], inputs="normal")
    matched = onnx_corrected_biases(path, restored, ["b", "o"], inputs="batchnorm")
    assert plain.biases and matched.fed == ""
    assert set(plain.biases) == set(matched.biases)
    for name in plain.biases:
        assert torch.equal(plain.biases[name], matched.biases[name])


def test_the_default_corrects_only_on_inputs_matched_to_a_first_batchnorm(
        tmp_path: Path) -> None:
    """`bias_correction_for`'s default for an ONNX graph: none where no first BatchNorm
    matches the inputs to the data's scale (the note says why), the matched correction
    where one does; ``synthetic`` corrects either."""
    from weightdna.codec.ratecontrol import Target
    from weightdna.evaluate.correction import bias_correction_for
    from weightdna.evaluate.onnx_correction import UNMATCHED

    target = Target("bits_per_weight", 3.0)
    unmatched = _no_first_norm(tmp_path / "g.onnx")
    heard: list[str] = []
    assert bias_correction_for("none", unmatched, ["w", "b"], None, target,
                               note=heard.append) is None
    assert heard == [UNMATCHED]
    restored = {"w": torch.from_numpy(
        numpy_helper.to_array(load_model(unmatched).graph.initializer[0]) * 1.2)}
    asked = bias_correction_for("none", unmatched, ["w", "b"], "synthetic", target)
    assert asked is not None and asked(restored)
    assert not onnx_corrected_biases(unmatched, restored, ["b", "o"],
                                     matched_only=True).biases
    matched = _exported(tmp_path / "net.onnx")
    model = load_model(matched)
    protos = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    head = next(n for n in protos if protos[n].ndim == 4 and protos[n].shape[0] == 4)
    heard = []
    default = bias_correction_for("none", matched, list(protos), None, target,
                                  note=heard.append)
    assert default is not None
    assert default({head: torch.from_numpy(protos[head] * 1.3)})
    assert heard and "BatchNorm-matched inputs" in heard[0]


@pytest.mark.parametrize("damage", ["negative variance", "nan mean", "short pads", "group"])
def test_a_first_batchnorm_that_does_not_add_up_is_not_used(damage: str,
                                                            tmp_path: Path) -> None:
    """A file's first Conv + BatchNorm whose statistics or attributes are not a layer the fit
    can use (a negative or NaN statistic, pads of the wrong length, a group that does not
    divide the channels) leaves the output check's inputs: `first_norm` gives None."""
    model = load_model(_exported(tmp_path / "m.onnx"))
    assert bn_inputs.first_norm(model) is not None
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    norm = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    inits = {i.name: i for i in model.graph.initializer}
    if damage in ("negative variance", "nan mean"):
        name = norm.input[4] if damage == "negative variance" else norm.input[3]
        values = numpy_helper.to_array(inits[name]).copy()
        values[0] = -1.0 if damage == "negative variance" else np.nan
        inits[name].CopyFrom(numpy_helper.from_array(values, name))
    else:
        key, value = ("pads", [1, 1]) if damage == "short pads" else ("group", 3)
        kept = [a for a in conv.attribute if a.name != key]
        del conv.attribute[:]
        conv.attribute.extend(kept + [helper.make_attribute(key, value)])
    assert bn_inputs.first_norm(model) is None


def test_gptq_hessians_on_them_where_a_first_batchnorm_matches(tmp_path: Path) -> None:
    """`onnx_hessians` with ``inputs="batchnorm"`` measures H on the matched inputs (and says
    so) where the graph has a first BatchNorm, and on the output check's inputs, the same
    H to the bit, where it has none."""
    from weightdna.evaluate.onnx_calibration import onnx_hessians

    path = _exported(tmp_path / "net.onnx")
    plain = onnx_hessians(path, samples=8, inputs="normal")
    matched = onnx_hessians(path, samples=8, inputs="batchnorm")
    assert plain.fed == "" and matched.fed.startswith("BatchNorm-matched inputs")
    assert plain.hessians and set(plain.hessians) == set(matched.hessians)
    first = next(n for n, h in plain.hessians.items() if h.shape == (27, 27))
    # smooth, offset inputs: neighbouring taps of a channel move together, white noise not
    assert abs(_correlation(matched.hessians[first])) > 2 * abs(
        _correlation(plain.hessians[first])) + 0.2
    with pytest.raises(ValueError):
        onnx_hessians(path, inputs="imagenet")
    unmatched = _no_first_norm(tmp_path / "g.onnx")
    a = onnx_hessians(unmatched, samples=8, inputs="normal")
    b = onnx_hessians(unmatched, samples=8, inputs="batchnorm")
    assert a.hessians and b.fed == "" and set(a.hessians) == set(b.hessians)
    for name in a.hessians:
        assert np.array_equal(a.hessians[name], b.hessians[name])


def _correlation(h: np.ndarray) -> float:
    """The correlation of the first channel's first two taps under H (columns c, kh, kw)."""
    return float(h[0, 1] / np.sqrt(h[0, 0] * h[1, 1]))


def test_calibration_synthetic_measures_a_matched_graph_on_the_matched_inputs(
        tmp_path: Path) -> None:
    """``--calibration synthetic`` on an ONNX graph whose image input goes Conv → BatchNorm:
    the Hessians of the matched inputs (`onnx_calibration.INPUTS`), not the output check's."""
    from weightdna.codec.ratecontrol import Target
    from weightdna.evaluate.calibration import calibration_for
    from weightdna.evaluate.onnx_calibration import onnx_hessians

    path = _exported(tmp_path / "net.onnx")
    got = calibration_for(path, "synthetic", Target("bits_per_weight", 3.0))
    matched = onnx_hessians(path, inputs="batchnorm").hessians
    plain = onnx_hessians(path, inputs="normal").hessians
    assert set(got) == set(matched) == set(plain)
    assert all(np.array_equal(got[n], matched[n]) for n in got)
    assert not all(np.array_equal(got[n], plain[n]) for n in got)
