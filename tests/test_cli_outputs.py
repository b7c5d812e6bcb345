"""Output names mean what they say: `decompress -o X.safetensors | X.pt | DIR/`, anything else
a clear error listing the accepted forms; and every command creates missing output folders
the same way (one rule: `weightdna.atomic.check_output`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from weightdna.atomic import FOLDER, check_output, output_form
from weightdna.cli import main
from weightdna.codec.options import DECOMPRESS_FORMS
from weightdna.errors import InvalidInputError, OutputExistsError
from weightdna.weights import save_weights


def _model(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    tensors = {"layers.0.weight": torch.randn(16, 8, generator=generator),
               "layers.0.bias": torch.randn(16, generator=generator).half(),
               "layers.1.weight": torch.randn(4, 16, generator=generator).bfloat16(),
               "steps": torch.arange(5)}
    return save_weights(tensors, tmp_path / "m.safetensors"), tensors


@pytest.fixture
def dna(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    model, tensors = _model(tmp_path)
    out = tmp_path / "m.dna"
    assert main(["compress", str(model), "-o", str(out), "--lossless", "--check", "none"]) == 0
    return out, tensors


def test_the_name_chooses_the_form(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    assert output_form("a/x.safetensors", DECOMPRESS_FORMS) == ".safetensors"
    assert output_form("x.PT", DECOMPRESS_FORMS) == ".pt"
    assert output_form("x.pth", DECOMPRESS_FORMS) == ".pth"
    assert output_form("new/", DECOMPRESS_FORMS) == FOLDER
    assert output_form(tmp_path / "there", DECOMPRESS_FORMS) == FOLDER
    assert output_form("m.onnx", DECOMPRESS_FORMS) == ".onnx"
    assert output_form("m.dna.pt", {".pt": "", ".dna.pt": ""}) == ".dna.pt"  # longest first
    for bad in ("restored", "x.bin", "x.safetensors.tmp", ".pt"):
        with pytest.raises(InvalidInputError, match=r"NAME\.safetensors.*NAME\.pt.*DIR/"):
            output_form(bad, DECOMPRESS_FORMS)
    with pytest.raises(InvalidInputError, match=r"is a directory .* NAME\.png"):
        output_form("dir/", {".png": "a picture"})


@pytest.mark.parametrize("name", ["restored.safetensors", "restored.pt", "restored/"])
def test_decompress_writes_the_form_the_name_says(dna, tmp_path: Path, name: str) -> None:
    path, tensors = dna
    out = tmp_path / "out" / name  # the folder "out" is created
    assert main(["decompress", str(path), "-o", f"{out}{'/' if name.endswith('/') else ''}"]) == 0
    if name.endswith("/"):
        assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
        restored = load_file(out / "model.safetensors")
    elif name.endswith(".pt"):
        assert out.read_bytes()[:2] == b"PK"  # torch.save's zip, not safetensors
        restored = torch.load(out, weights_only=True)
        assert isinstance(restored, dict)
    else:
        restored = load_file(out)
    assert sorted(restored) == sorted(tensors)
    for key, tensor in tensors.items():
        assert restored[key].dtype == tensor.dtype and torch.equal(restored[key], tensor)


def test_other_names_are_refused_before_any_work(dna, tmp_path: Path, capsys) -> None:
    path, _ = dna
    for bad in ("restored", "restored.bin", "restored.onnx"):
        assert main(["decompress", str(path), "-o", str(tmp_path / bad)]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "Traceback" not in err
        if bad.endswith(".onnx"):
            assert "not compressed from ONNX" in err
        else:
            assert "NAME.safetensors" in err and "DIR/" in err and "NAME.pt" in err
        assert not (tmp_path / bad).exists()
    model, _ = _model(tmp_path / "src")
    assert main(["compress", str(model), "-o", str(tmp_path / "m.safetensors"), "--lossless"]) == 1
    assert "NAME.dna" in " ".join(capsys.readouterr().err.split())


def test_a_folder_that_holds_files_needs_force(dna, tmp_path: Path, capsys) -> None:
    path, _ = dna
    out = tmp_path / "folder"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["decompress", str(path), "-o", str(out)]) == 1
    assert "not empty" in " ".join(capsys.readouterr().err.split())
    assert main(["decompress", str(path), "-o", str(out), "--force"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(OutputExistsError):
        check_output(out / "notes.txt", overwrite=False)


@pytest.mark.parametrize("command", [
    ["compress", "{model}", "--lossless", "--check", "none", "-o", "{out}/m.dna"],
    ["decompress", "{dna}", "-o", "{out}/r.safetensors"],
    ["decompress", "{dna}", "-o", "{out}/r.pt"],
    ["decompress", "{dna}", "-o", "{out}/folder/"],
    ["train", "spiral", "--epochs", "1", "-o", "{out}/s.safetensors",
     "--history", "{out}/h/s.json"],
    ["plot", "activations", "-o", "{out}/a.png"],
    ["fit", "{model}", "--steps", "2", "--width", "4", "-o", "{out}/f.dna.pt"],
    ["analyze", "{model}", "--dna-tensors", "0", "--max-rows", "8", "--json", "{out}/a.json"],
])
def test_every_command_creates_missing_output_folders(dna, tmp_path: Path, command) -> None:
    model, _ = _model(tmp_path / "src")
    out = tmp_path / "new" / "deeper"
    argv = [a.format(model=model, dna=dna[0], out=out) for a in command]
    assert main(argv) == 0
    written = [a for a in argv if a.startswith(str(out))]
    for path in written:
        assert Path(path).exists(), path
