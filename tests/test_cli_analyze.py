"""`weightdna analyze` end to end on a small engine model: table, JSON, HTML report, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from weightdna.analysis.claims import CLAIMS, VERDICTS
from weightdna.cli import console, main

FAST = ["--dna-tensors", "1", "--dna-steps", "20", "--max-rows", "64"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("analyze") / "mlp.safetensors"
    assert main(["train", "mlp", "-o", str(path), "--epochs", "2"]) == 0
    return path


@pytest.fixture(scope="module")
def outputs(model: Path) -> dict[str, Path]:
    """One analysis written as JSON and as a report (and its table captured)."""
    folder = model.parent
    with pytest.MonkeyPatch.context() as mp, console.capture() as captured:
        mp.setattr(console, "width", 200)  # tensor names on one line
        code = main(["analyze", str(model), "--json", str(folder / "a.json"),
                     "--report", str(folder / "a.html"), *FAST])
    assert code == 0
    return {"json": folder / "a.json", "html": folder / "a.html", "stdout": captured.get()}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command in this interpreter: its exit status, stdout and stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_table_lists_tensors_and_claims_with_verdicts(outputs) -> None:
    out = outputs["stdout"]
    assert "layers.0.weight" in out and "the seed's claims" in out
    assert any(v in out for v in VERDICTS)
    assert "tensors analysed" in out


def test_json_has_every_claim_with_a_verdict_and_evidence(outputs) -> None:
    data = json.loads(outputs["json"].read_text())
    assert [c["key"] for c in data["claims"]] == [c.key for c in CLAIMS]
    for claim in data["claims"]:
        assert claim["verdict"] in VERDICTS and claim["evidence"]
    names = [t["name"] for t in data["tensors"]]
    assert names == ["layers.0.weight", "layers.2.weight", "layers.4.weight"]
    assert set(data["skipped"]) == {"layers.0.bias", "layers.2.bias", "layers.4.bias"}
    stats = data["tensors"][0]["stats"]["pca_k95_fraction"]
    assert set(stats) == {"weights", "shuffled", "gaussian"}
    assert data["tensors"][0]["sample_rows"] == 64  # 128 rows cut to --max-rows
    dna = [t["dna"] for t in data["tensors"] if t["dna"]]
    assert len(dna) == 1 and dna[0]["weights"]["psnr_normalisation"] == "maxabs"


def test_the_report_is_one_self_contained_html_file(outputs) -> None:
    text = outputs["html"].read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 4
    assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:)", text)
    assert "http://" not in text and "https://" not in text
    for verdict_row in ("local dimension", "Lipschitz", "H_trained"):
        assert verdict_row in text


def test_json_to_stdout_is_clean(model: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "analyze", str(model), "--json", "-", "--tensors",
                             "layers.4.*", "--dna-tensors", "0")
    assert code == 0, err
    data = json.loads(out)
    assert [t["name"] for t in data["tensors"]] == ["layers.4.weight"]


def test_existing_outputs_are_not_overwritten_without_force(outputs, model: Path,
                                                          capsys) -> None:
    before = outputs["json"].read_text()
    code, _, err = run_cli(capsys, "analyze", str(model), "--json", str(outputs["json"]))
    assert code == 1
    assert "--force" in err and "Traceback" not in err
    assert outputs["json"].read_text() == before
    code, _, err = run_cli(capsys, "analyze", str(model), "--report", str(outputs["json"].parent))
    assert code == 1 and "directory" in err


def test_a_missing_model_is_a_clean_error(tmp_path: Path, capsys) -> None:
    # main() returns instead of raising: the user sees one line, never a traceback.
    code, _, err = run_cli(capsys, "analyze", str(tmp_path / "nope.safetensors"))
    assert code == 1
    # Rich wraps a long path across lines: compare without the breaks.
    assert "error:" in err and "nope.safetensors" in "".join(err.split())
