"""Data-free bias correction of an ONNX graph (`weightdna.evaluate.onnx_correction`): after
it, each corrected layer's mean output on the synthetic inputs is the original's (a grouped,
strided, padded conv, a BatchNormalization, a Gemm, a MatMul + Add, float16); a shift too
large for its bias is not made; shared biases, Loop bodies and graphs without biases are
left alone; the CLI and the API do it by default under a whole-model target."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.errors import InvalidInputError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from weightdna.evaluate.onnx_correction import (  # noqa: E402
    correctable_biases,
    onnx_bias_correction,
    onnx_corrected_biases,
    sites,
)

RNG = np.random.default_rng(3)
W = {
    "conv_w": RNG.standard_normal((6, 2, 3, 2)),  # groups 2 over 4 channels
    "conv_b": RNG.standard_normal(6),
    "bn_scale": RNG.uniform(0.5, 2.0, 6),
    "bn_b": RNG.standard_normal(6),
    "bn_mean": RNG.standard_normal(6),
    "bn_var": RNG.uniform(0.5, 2.0, 6),
    "point_w": RNG.standard_normal((3, 6, 1, 1)),
    "point_b": RNG.standard_normal(3),
    "gemm_w": RNG.standard_normal((4, 5)),  # transB = 1
    "gemm_b": RNG.standard_normal(4),
    "mm_w": RNG.standard_normal((4, 3)),  # x @ W, then + b
    "mm_b": RNG.standard_normal(3),
}
CONV = {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}
SITE_VALUES = ("c1", "n1", "c2", "g1", "m2")


def _graph(path: Path, dtype: type = np.float32) -> Path:
    f = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in W.items()]
    nodes = [
        helper.make_node("Relu", ["x"], ["xr"]),  # E[x] > 0: the coding error moves means
        helper.make_node("Conv", ["xr", "conv_w", "conv_b"], ["c1"], **CONV),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_b", "bn_mean", "bn_var"],
                         ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "point_w", "point_b"], ["c2"]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Gemm", ["ar", "gemm_w", "gemm_b"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["r2"]),
        helper.make_node("MatMul", ["r2", "mm_w"], ["m1"]),
        helper.make_node("Add", ["m1", "mm_b"], ["m2"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", f, ["N", 4, 7, 9]),
         helper.make_tensor_value_info("a", f, ["N", 5])],
        [helper.make_tensor_value_info(n, f, None) for n in SITE_VALUES], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _coded(dtype: type = np.float32) -> dict[str, torch.Tensor]:
    """The weights with an error of about 10% of their size; biases as they are."""
    rng = np.random.default_rng(11)
    return {k: torch.from_numpy((v + (0.1 * rng.standard_normal(v.shape) if k.endswith("_w")
                                      else 0)).astype(dtype)) for k, v in W.items()}


def _means(path: Path, state: dict[str, torch.Tensor] | None) -> list[np.ndarray]:
    """Each site's per-channel mean over the synthetic inputs the correction runs on."""
    from weightdna.evaluate.onnx_correction import SAMPLES
    from weightdna.evaluate.onnx_sensitivity import _session
    from weightdna.evaluate.outputs import onnx_inputs, onnx_with_initializers

    model = onnx.load(str(path))
    found = onnx_inputs(_session(model.SerializeToString()), model, SAMPLES,
                        np.random.default_rng(0), set(W))
    session = _session(onnx_with_initializers(path, state))
    outputs = [session.run(None, feeds) for feeds in found.feeds]
    means = []
    for i, name in enumerate(SITE_VALUES):
        value = np.concatenate([np.asarray(o[i], np.float64) for o in outputs])
        means.append(value.mean(axis=(0, 2, 3)) if name[0] in "cn" else value.mean(0))
    return means


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_the_corrected_layers_keep_their_mean_outputs(tmp_path: Path, dtype: type) -> None:
    path = _graph(tmp_path / "g.onnx", dtype)
    found = sites(onnx.load(str(path)), [k for k in W if k.endswith("_b")])
    assert {(s.bias, s.value, s.how) for s in found} == {
        ("conv_b", "c1", "conv"), ("bn_b", "n1", "conv"), ("point_b", "c2", "conv"),
        ("gemm_b", "g1", "broadcast"), ("mm_b", "m2", "broadcast")}
    assert {s.bias: s.level for s in found} == {"conv_b": 1, "bn_b": 2, "point_b": 3,
                                                "gemm_b": 1, "mm_b": 2}
    coded = _coded(dtype)
    result = onnx_corrected_biases(path, coded, correctable_biases(path), max_shift=math.inf)
    assert set(result.biases) == {"conv_b", "bn_b", "point_b", "gemm_b", "mm_b"}
    assert result.stages == 3 and not result.why_not
    assert all(v.dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
               for v in result.biases.values())
    original = _means(path, None)
    before = _means(path, coded)
    after = _means(path, {**coded, **result.biases})
    tolerance = 2e-3 if dtype == np.float16 else 1e-4
    for o, b, a in zip(original, before, after, strict=True):
        scale = np.abs(o).max()
        assert np.abs(b - o).max() > 20 * tolerance * scale  # there was a shift to correct
        assert np.abs(a - o).max() < tolerance * scale


def test_a_shift_too_large_for_its_bias_is_not_made(tmp_path: Path) -> None:
    path = _graph(tmp_path / "g.onnx")
    coded = _coded()
    every = onnx_corrected_biases(path, coded, correctable_biases(path), max_shift=math.inf)
    size = {k: float(np.sqrt(np.mean(W[k] ** 2))) for k in every.biases}
    ratio = {k: float(np.sqrt(np.mean((v.double().numpy() - W[k]) ** 2))) / size[k]
             for k, v in every.biases.items()}
    # conv_b and gemm_b come first (nothing upstream): their shifts are those measured alone.
    cut = (ratio["conv_b"] + ratio["gemm_b"]) / 2
    assume = sorted((ratio["conv_b"], ratio["gemm_b"]))
    assert assume[0] < cut < assume[1]
    some = onnx_corrected_biases(path, coded, correctable_biases(path), max_shift=cut)
    first = min(("conv_b", "gemm_b"), key=ratio.get)
    assert first in some.biases and max(("conv_b", "gemm_b"), key=ratio.get) not in some.biases
    assert torch.equal(some.biases[first], every.biases[first]) and some.refused >= 1
    none = onnx_corrected_biases(path, coded, correctable_biases(path), max_shift=0.0)
    assert none.biases == {} and none.refused == 5 and "over 0 of its bias" in none.why_not


def _shared_and_looped(path: Path) -> Path:
    """A bias read by two Convs, a Conv in a Loop body, and a Conv without a bias."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "shared_b"),
             numpy_helper.from_array(b.copy(), "loop_b"),
             numpy_helper.from_array(np.array(2, np.int64), "trips")]
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Conv", ["carried", "w", "loop_b"], ["next"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", f, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("next", f, None)])
    nodes = [
        helper.make_node("Conv", ["x", "w", "shared_b"], ["y1"]),
        helper.make_node("Conv", ["y1", "w", "shared_b"], ["y2"]),
        helper.make_node("Conv", ["y2", "w"], ["y3"]),
        helper.make_node("Loop", ["trips", "", "y3"], ["y4"], body=body),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, ["N", 2, 3, 3])],
                              [helper.make_tensor_value_info("y4", f, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_shared_biases_and_loop_bodies_are_left_alone(tmp_path: Path) -> None:
    path = _shared_and_looped(tmp_path / "s.onnx")
    assert sites(onnx.load(str(path)), ["shared_b", "loop_b"]) == []
    result = onnx_corrected_biases(path, {"w": torch.ones(2, 2, 1, 1)}, ["shared_b", "loop_b"])
    assert result.biases == {} and result.why_not


def _no_biases(path: Path) -> Path:
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "k"),
             numpy_helper.from_array(rng.standard_normal((8, 16 * 16)).astype(np.float32), "m")]
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["flat"]),
             helper.make_node("Gemm", ["flat", "m"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, ["N", 8, 4, 4])],
                              [helper.make_tensor_value_info("y", f, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_graph_without_biases_is_left_alone(tmp_path: Path) -> None:
    from weightdna.weights import load_weights

    path = _no_biases(tmp_path / "n.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    weights = load_weights(path)
    target = Target("bits_per_weight", 3.0)
    compress_model(weights, tmp_path / "plain.dna", target)
    seen: list[str] = []
    compress_model(weights, tmp_path / "corrected.dna", target,
                   adjust=onnx_bias_correction(path, note=seen.append))
    assert (tmp_path / "plain.dna").read_bytes() == (tmp_path / "corrected.dna").read_bytes()
    assert len(seen) == 1 and seen[0].startswith("0 of 0 biases")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _panel_net(path: Path) -> Path:
    """The panel's ONNX net (`weightdna.evaluate.panel`), untrained: conv + BatchNorm + ReLU
    blocks, a Resize front and a linear head, exported by torch with opaque names."""
    from weightdna.evaluate.panel import BatchNormCNN, export_onnx, give_outlier_channels

    torch.manual_seed(0)
    model = BatchNormCNN()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 0.5)
    give_outlier_channels(model, [3, 17], 300.0)
    model.eval()
    return export_onnx(model, path)


def test_the_panel_net_s_output_mean_shift_falls_and_its_file_is_untouched(
        tmp_path: Path) -> None:
    from weightdna.evaluate.outputs import onnx_with_initializers
    from weightdna.weights import load_weights

    path = _panel_net(tmp_path / "net.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    weights = load_weights(path)
    target = Target("bits_per_weight", 2.0)
    seen: list[str] = []
    restored = {}
    for name, adjust in (("plain", None),
                         ("corrected", onnx_bias_correction(path, note=seen.append,
                                                            max_shift=math.inf))):
        compress_model(weights, tmp_path / f"{name}.dna", target, adjust=adjust)
        decompress_model(tmp_path / f"{name}.dna", tmp_path / f"{name}.safetensors")
        restored[name] = load_weights(tmp_path / f"{name}.safetensors").state_dict()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # 2 convs, 2 BatchNormalizations, 2 Gemms
    assert seen and seen[0].startswith("6 of 6 biases corrected")
    changed = [n for n in restored["plain"]
               if not torch.equal(restored["plain"][n], restored["corrected"][n])]
    assert changed and all(load_weights(path).info(n).role in ("bias", "norm")
                           for n in changed)
    # Fresh synthetic inputs (not those the correction ran on): the mean logits move less.
    x = np.random.default_rng(99).standard_normal((512, 1, 8, 8)).astype(np.float32)

    def logits(state: dict | None) -> np.ndarray:
        session = ort.InferenceSession(onnx_with_initializers(path, state),
                                       providers=["CPUExecutionProvider"])
        return session.run(None, {"image": x})[0].astype(np.float64)

    reference = logits(None).mean(0)
    shift = {n: np.abs(logits(s).mean(0) - reference).mean() for n, s in restored.items()}
    assert shift["corrected"] < 0.5 * shift["plain"]


def test_the_option_reaches_the_cli_and_is_refused_where_it_cannot_run(
        tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    from weightdna.cli import main

    path = _graph(tmp_path / "g.onnx")
    source = path.read_bytes()
    out = tmp_path / "g.dna"
    # Its tensors are all small (coded by role): an SNR target reaches what is left.
    assert main(["compress", str(path), "-o", str(out), "--snr", "20",
                 "--bias-correction", "synthetic", "--check", "none"]) == 0
    assert "of 5 biases corrected in 3 stages" in capsys.readouterr().out
    assert path.read_bytes() == source
    assert main(["compress", str(path), "-o", str(out), "--snr", "20",
                 "--force", "--check", "none"]) == 0
    # The default: its input is not read by a Conv into a BatchNorm, so no correction.
    said = capsys.readouterr().out
    assert "biases corrected" not in said and "no bias corrected by default" in said
    for off in (["--bias-correction", "none"], ["--per-tensor"]):
        assert main(["compress", str(path), "-o", str(out), "--snr", "20", "--force",
                     "--check", "none", *off]) == 0
        assert "biases corrected" not in capsys.readouterr().out
    flat = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(64, 64), "b": torch.randn(64)}, str(flat))
    assert main(["compress", str(flat), "-o", str(tmp_path / "w.dna"), "--bits-per-weight",
                 "3", "--bias-correction", "synthetic"]) == 1
    err = capsys.readouterr().err
    assert "neither" in err and "Traceback" not in err
    assert main(["compress", str(path), "-o", str(tmp_path / "l.dna"), "--lossless",
                 "--bias-correction", "synthetic"]) == 1
    assert "applies to" in capsys.readouterr().err


def test_an_unknown_bias_correction_is_refused() -> None:
    from weightdna.evaluate.correction import bias_correction_for

    with pytest.raises(InvalidInputError, match="unknown bias correction"):
        bias_correction_for("none", "x.onnx", [], "always")


def test_without_onnxruntime_the_option_says_how_to_go_on(tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    """``--bias-correction synthetic`` on an ONNX file where onnxruntime cannot be imported:
    exit 1, one error line naming the package and ``--bias-correction none``, no
    traceback, no output left, the input unchanged."""
    import sys

    from weightdna.cli import main

    path = _graph(tmp_path / "g.onnx")
    source = path.read_bytes()
    out = tmp_path / "g.dna"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # its import fails
    assert main(["compress", str(path), "-o", str(out), "--snr", "20",
                 "--bias-correction", "synthetic", "--check", "none"]) == 1
    err = capsys.readouterr().err
    assert "pip install onnxruntime" in err and "--bias-correction none" in err
    assert "Traceback" not in err
    assert not out.exists() and path.read_bytes() == source
