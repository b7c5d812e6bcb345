"""`weightdna weights MODEL`: the table, --json, role overrides, and errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from weightdna.cli import main
from weightdna.weights import minilm_path, save_weights


def small_model(tmp_path: Path) -> Path:
    return save_weights(
        {
            "layers.0.weight": torch.ones(4, 2),
            "layers.0.bias": torch.zeros(4),
            "norm.weight": torch.ones(4),
            "position_ids": torch.arange(4),
        },
        tmp_path / "m.safetensors",
    )


def test_table(tmp_path: Path, capsys) -> None:
    assert main(["weights", str(small_model(tmp_path))]) == 0
    out = capsys.readouterr().out
    for text in ("layers.0.weight", "4×2", "float32", "matrix", "norm", "buffer", "int64"):
        assert text in out
    assert "totals" in out and "parameters" in out


def test_json(tmp_path: Path, capsys) -> None:
    assert main(["weights", str(small_model(tmp_path)), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    tensors = {t["name"]: t for t in data["tensors"]}
    assert tensors["layers.0.weight"] == {
        "name": "layers.0.weight", "shape": [4, 2], "dtype": "float32", "role": "matrix",
        "layer": 0, "kind": "layers.*.weight", "numel": 8, "fittable": True,
    }
    assert tensors["position_ids"]["role"] == "buffer"
    assert data["totals"]["numel"] == 8 + 4 + 4 + 4
    assert data["totals"]["params"] == 16
    assert data["totals"]["by_role"]["buffer"]["tensors"] == 1


def test_role_override(tmp_path: Path, capsys) -> None:
    path = str(small_model(tmp_path))
    assert main(["weights", path, "--json", "--role", "layers.*=other"]) == 0
    roles = {t["name"]: t["role"] for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert roles["layers.0.weight"] == roles["layers.0.bias"] == "other"
    assert main(["weights", path, "--role", "layers.0.weight"]) == 1
    assert "NAME=ROLE" in capsys.readouterr().err


def test_minilm_json(capsys) -> None:
    assert main(["weights", str(minilm_path()), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "safetensors"
    assert len(data["tensors"]) == 104
    assert data["totals"]["params"] == 22_713_216


def test_bad_file_is_an_error_not_a_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights at all")
    assert main(["weights", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert main(["weights", str(tmp_path / "missing.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
