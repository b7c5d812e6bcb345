"""`weightdna analyze` finds a windowed DFT basis: the structure map names the tensor and the
lens in the table, the JSON and the report's opening summary, and flags no Gaussian tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weightdna.cli import console, main
from weightdna.experiments.structured import windowed_dft_basis
from weightdna.weights import save_weights


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    generator = torch.Generator().manual_seed(0)
    return save_weights({
        "frontend.stft.weight": torch.from_numpy(windowed_dft_basis(256, "hann")),
        "layers.0.weight": torch.randn(256, 256, generator=generator) * 0.05,
    }, tmp_path_factory.mktemp("structure") / "stft.safetensors")


def test_analyze_names_the_dft_tensor_and_its_lens(model: Path, tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "a.json", tmp_path / "a.html"
    with pytest.MonkeyPatch.context() as mp, console.capture() as captured:
        mp.setattr(console, "width", 250)
        code = main(["analyze", str(model), "--json", str(out_json), "--report", str(out_html),
                     "--dna-tensors", "0", "--max-rows", "128"])
    assert code == 0
    out = captured.get()
    assert "structure map" in out and "the seed's claims" in out
    assert "1 of 2 tensors hold structure" in out
    assert "frontend.stft.weight: DFT along rows, sparsity" in out

    data = json.loads(out_json.read_text())
    ranked = data["structure_map"]
    assert [e["tensor"] for e in ranked] == ["frontend.stft.weight", "layers.0.weight"]
    top, noise = ranked
    assert top["verdict"] == "structured"
    assert top["best"]["lens"] == "dft_rows_sparsity"
    assert top["best"]["ratio"] < 0.05 and top["best"]["bits_saved"] > 0
    assert set(data["tensors"][0]["stats"]["dft_rows_sparsity"]) == {
        "weights", "shuffled", "gaussian", "within_rows"}
    assert noise["verdict"] != "structured"
    assert not [f for f in noise["lenses"] if f["verdict"] == "structured"]
    assert [c["key"] for c in data["claims"]]  # the seed's claims are still judged

    html = out_html.read_text()
    opening = html[html.index("<h2>What was found</h2>"):html.index("<h2>Structure map")]
    assert "1 of 2 tensors hold structure" in opening
    assert "frontend.stft.weight: DFT along rows, sparsity" in opening


def test_lenses_only_skips_the_seeds_estimators(model: Path, tmp_path: Path, capsys) -> None:
    out_html = tmp_path / "l.html"
    assert main(["analyze", str(model), "--lenses-only", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "pca_k95_fraction" not in data["tensors"][0]["stats"]
    assert data["structure_map"][0]["best"]["lens"] == "dft_rows_sparsity"
    assert main(["analyze", str(model), "--lenses-only", "--report", str(out_html)]) == 0
    out = capsys.readouterr().out
    assert "structure map" in out and "the seed's claims" not in out
    assert "frontend.stft.weight" in out_html.read_text()
