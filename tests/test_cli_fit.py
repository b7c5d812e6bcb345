"""`weightdna fit` and `weightdna reconstruct` end to end on a tiny safetensors model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from weightdna import cli
from weightdna.cli import main
from weightdna.dna import ModelDNA, error_metrics
from weightdna.weights import save_weights
from weightdna.weights.safetensors_format import writer_order


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 240)  # the table unfolded, whatever the tty
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    i = torch.linspace(-1, 1, 12)[:, None]
    tensors = {
        "encoder.layer.0.dense.weight": torch.sin(3 * i) * torch.linspace(-1, 1, 8),
        "encoder.layer.0.dense.bias": 0.01 * torch.randn(12, generator=gen),
        "encoder.layer.1.dense.weight": (torch.cos(2 * i) * torch.linspace(0, 1, 8)).half(),
        "embeddings.position_embeddings.weight": torch.randn(6, 4, generator=gen).bfloat16(),
        "embeddings.position_ids": torch.arange(6)[None],
    }
    return save_weights(tensors, tmp_path / "tiny.safetensors"), tensors


def test_fit_then_reconstruct(tmp_path: Path, capsys) -> None:
    model, tensors = tiny_model(tmp_path)
    dna_path, out_path = tmp_path / "tiny.dna.pt", tmp_path / "restored.safetensors"
    code = main(["fit", str(model), "-o", str(dna_path), "--steps", "150", "--width", "16",
                 "--depth", "2", "--lr", "3e-3", "--holdout", "0.2", "--seed", "1"])
    assert code == 0
    out = capsys.readouterr().out
    for text in ("encoder.layer.0.dense.weight", "PSNR (maxabs)", "SNR", "held-out",
                 "whole model", "(w − mean)/std"):
        assert text in out
    assert "position_ids" not in out.split("wrote")[0]  # a buffer is never fitted
    assert not Path(f"{dna_path}.ckpt").exists()  # the default checkpoint is cleaned up

    assert main(["reconstruct", str(dna_path), "-o", str(out_path)]) == 0
    restored = load_file(out_path)
    # The reference writer's order: by dtype, then by name.
    specs = {n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()}
    assert list(restored) == writer_order(specs)
    for name, original in tensors.items():
        assert restored[name].shape == original.shape and restored[name].dtype == original.dtype
    assert torch.equal(restored["embeddings.position_ids"], tensors["embeddings.position_ids"])
    dna = ModelDNA.load(dna_path)
    smooth = "encoder.layer.0.dense.weight"
    measured = error_metrics(tensors[smooth], restored[smooth])
    assert measured.snr == pytest.approx(dna.tensors[smooth].metrics.snr)
    assert measured.snr > 10.0  # fitted (0 dB is what predicting zero scores)


def test_tensor_selection_copies_the_rest_exactly(tmp_path: Path) -> None:
    model, tensors = tiny_model(tmp_path)
    dna_path, out_path = tmp_path / "sel.dna.pt", tmp_path / "sel.safetensors"
    assert main(["fit", str(model), "-o", str(dna_path), "--steps", "5", "--width", "8",
                 "--tensors", "*.position_embeddings.*", "--granularity", "model"]) == 0
    dna = ModelDNA.load(dna_path)
    assert list(dna.tensors) == ["embeddings.position_embeddings.weight"]
    assert main(["reconstruct", str(dna_path), "-o", str(out_path)]) == 0
    restored = load_file(out_path)
    for name in tensors:
        if name != "embeddings.position_embeddings.weight":
            assert torch.equal(restored[name], tensors[name])


def test_refuses_to_overwrite_and_reports_user_errors(tmp_path: Path, capsys) -> None:
    model, _ = tiny_model(tmp_path)
    dna_path = tmp_path / "x.dna.pt"
    dna_path.write_bytes(b"keep me")
    args = ["fit", str(model), "-o", str(dna_path), "--steps", "2", "--width", "4"]
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert dna_path.read_bytes() == b"keep me"
    assert main([*args, "--force"]) == 0
    assert main(["fit", str(model), "-o", str(tmp_path / "y.dna.pt"),
                 "--tensors", "no.such.*"]) == 1
    assert "no floating-point tensor matches" in capsys.readouterr().err
    assert main(["reconstruct", str(model), "-o", str(tmp_path / "z.safetensors")]) == 1
    assert "error" in capsys.readouterr().err


def test_resume_from_a_checkpoint(tmp_path: Path) -> None:
    model, _ = tiny_model(tmp_path)
    common = ["--steps", "40", "--width", "8", "--depth", "2", "--checkpoint-every", "10"]
    whole, part = tmp_path / "whole.dna.pt", tmp_path / "part.dna.pt"
    assert main(["fit", str(model), "-o", str(whole), *common]) == 0
    checkpoint = tmp_path / "run.ckpt"
    # A run that keeps its checkpoint, then a run resumed from it: the same DNA.
    assert main(["fit", str(model), "-o", str(part), *common,
                 "--checkpoint", str(checkpoint)]) == 0
    assert checkpoint.exists()
    assert main(["fit", str(model), "-o", str(part), *common, "--force",
                 "--resume", str(checkpoint)]) == 0
    a, b = ModelDNA.load(whole), ModelDNA.load(part)
    ra, rb = a.reconstruct(device="cpu"), b.reconstruct(device="cpu")
    assert all(torch.equal(ra[n], rb[n]) for n in ra)
