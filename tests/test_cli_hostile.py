"""Hostile or wrong inputs a new user may give (s33's CLI walk, BENCHMARKS.md "Hostile
files and new-user faults"): each is one line that says what to do, exit status 1, no
traceback, nothing written — where each of these went wrong before."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.cli import main
from weightdna.codec import encode_tensor, write_dna_file
from weightdna.weights import load_weights, save_weights


class _Evil:
    """Unpickled, it would create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _error(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error:"), err
    return " ".join(err.split())


def _dna(tmp_path: Path) -> Path:
    entry, sections = encode_tensor(torch.arange(12.0).reshape(3, 4), name="w", lossless=True)
    path = tmp_path / "m.dna"
    write_dna_file(path, [entry], [sections])
    return path


@pytest.mark.parametrize("command", [["reconstruct", "{file}", "-o", "{out}"],
                                     ["fit", "{model}", "-o", "{out2}", "--resume", "{file}"]])
def test_a_hostile_pickle_for_a_fit_is_refused_in_one_line(tmp_path: Path, capsys,
                                                           command: list[str]) -> None:
    """Before: torch's many lines, telling the user to load it with weights_only=False,
    after a UserWarning about the pickle protocol."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.dna.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": _Evil(marker)}, f, protocol=4)
    model = save_weights({"w": torch.randn(8, 8)}, tmp_path / "m.safetensors")
    out, out2 = tmp_path / "out.safetensors", tmp_path / "out.dna.pt"
    argv = [a.format(file=evil, model=model, out=out, out2=out2) for a in command]
    assert main(argv) == 1
    error = _error(capsys)
    assert "never unpickles" in error and "weights_only=False" not in error
    assert "warning" not in error.lower()
    assert not marker.exists() and not out.exists() and not out2.exists()


def test_a_dna_file_given_for_a_fitted_dna_says_decompress(tmp_path: Path, capsys) -> None:
    assert main(["reconstruct", str(_dna(tmp_path)), "-o", str(tmp_path / "o.safetensors")]) == 1
    assert "weightdna decompress" in _error(capsys)


def test_a_dna_file_given_as_a_model_says_it_is_compressed(tmp_path: Path, capsys) -> None:
    assert main(["compress", str(_dna(tmp_path)), "-o", str(tmp_path / "again.dna"),
                 "--bits-per-weight", "3"]) == 1
    assert "already compressed" in _error(capsys) and not (tmp_path / "again.dna").exists()


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Before: `weightdna weights pipe.safetensors` waited for a writer for ever."""
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)

    def stop(signum, frame):  # noqa: ANN001, ANN202
        raise TimeoutError("blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    try:
        with pytest.raises(Exception, match="not a regular file"):
            load_weights(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_empty_dna_file_says_it_is_empty(tmp_path: Path, capsys) -> None:
    (tmp_path / "zero.dna").write_bytes(b"")
    assert main(["info", str(tmp_path / "zero.dna")]) == 1
    error = _error(capsys)
    assert "is empty (0 bytes)" in error and "weightdna compress" in error


def test_an_empty_checkpoint_dict_is_named(tmp_path: Path, capsys) -> None:
    torch.save({}, tmp_path / "empty.pt")
    assert main(["weights", str(tmp_path / "empty.pt")]) == 1
    assert "holds an empty dict" in _error(capsys)


def _onnx(tmp_path: Path, external: bool = False) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path, save_as_external_data=external,
              location="m.onnx_data", size_threshold=0)
    return path


@pytest.mark.parametrize(("damage", "says"), [
    ("truncated", "truncated or not an ONNX model"),
    ("data missing", "external data is missing"),
    ("data linked", "cp -L"),
])
def test_an_onnx_file_that_cannot_be_read_says_what_to_do(tmp_path: Path, capsys, damage: str,
                                                          says: str) -> None:
    path = _onnx(tmp_path, external=damage != "truncated")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    data = tmp_path / "m.onnx_data"
    if damage == "data missing":
        data.unlink()
    if damage == "data linked":  # as in a Hugging Face cache
        data.rename(tmp_path / "blob")
        data.symlink_to(tmp_path / "blob")
    assert main(["weights", str(path)]) == 1
    assert says in _error(capsys)


def test_evaluate_refuses_restored_weights_of_another_model(tmp_path: Path, capsys) -> None:
    """Before: weights naming none of the graph's left the graph as it was, and evaluate
    reported a perfect match (cosine 1.00000)."""
    pytest.importorskip("onnxruntime")
    model = _onnx(tmp_path)
    other = save_weights({"layers.0.weight": torch.randn(4, 2)}, tmp_path / "other.safetensors")
    assert main(["evaluate", str(model), str(other)]) == 1
    assert "lacks weights of" in _error(capsys)
    assert main(["evaluate", str(model), str(load_weights(model).path)]) == 0  # itself


def test_evaluate_of_a_missing_model_says_it_does_not_exist(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nothere.safetensors"), str(_dna(tmp_path))]) == 1
    assert "does not exist" in _error(capsys)


def test_an_unwritable_folder_output_is_named_not_its_probe(tmp_path: Path, capsys) -> None:
    (tmp_path / "plain").write_text("x")
    out = tmp_path / "plain" / "sub"
    assert main(["decompress", str(_dna(tmp_path)), "-o", f"{out}/"]) == 1
    error = _error(capsys)
    # rich breaks a path longer than the terminal inside it: compare without whitespace
    assert f"cannotwrite{out}:" in "".join(error.split()) and "probe" not in error


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("fit")
    model = save_weights({"a.weight": torch.randn(8, 4), "a.bias": torch.randn(8)},
                         folder / "m.safetensors")
    assert main(["fit", str(model), "-o", str(folder / "m.dna.pt"), "--steps", "2",
                 "--width", "8", "--depth", "2"]) == 0
    return folder / "m.dna.pt"


def _change(state: dict, change: str) -> None:
    if change == "width":  # refused before too, but after building 10^5 × 10^5 weights
        state["config"]["width"] = 100_000
    elif change == "shape":  # a traceback (ValueError from a reshape) at reconstruct
        next(iter(state["tensors"].values()))["shape"] = [1000, 1000]
    else:  # a kept "tensor" that is a number was written out
        state["kept"] = {"x": 5}


@pytest.mark.parametrize("change", ["width", "shape", "kept"])
def test_a_fitted_dna_that_contradicts_itself_is_refused(fitted: Path, tmp_path: Path, capsys,
                                                         change: str) -> None:
    state = torch.load(fitted, weights_only=True)
    _change(state, change)
    hostile = tmp_path / "hostile.dna.pt"
    torch.save(state, hostile)
    out = tmp_path / "out.safetensors"
    assert main(["reconstruct", str(hostile), "-o", str(out)]) == 1
    assert "is not a valid .dna.pt file" in _error(capsys) and not out.exists()
    assert main(["reconstruct", str(fitted), "-o", str(out)]) == 0


@pytest.mark.parametrize("architecture", ["siren", "fourier", "relu"])
def test_every_architecture_is_checked_without_memory_then_built(architecture: str) -> None:
    from weightdna.dna import FitConfig
    from weightdna.dna.fit import build_network
    from weightdna.dna.model import COORDINATE_COUNT, _stored_network

    config = FitConfig(architecture=architecture, width=8, depth=2)
    stored = build_network(config, COORDINATE_COUNT).state_dict()
    net = _stored_network(config, stored)
    assert all(torch.equal(v, stored[k]) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="do not match its settings"):
        _stored_network(FitConfig(architecture=architecture, width=9, depth=2), stored)
