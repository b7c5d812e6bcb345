"""Targets that are valid but cannot mean what the user thinks get a warning on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weightdna.cli import main
from weightdna.weights import save_weights


@pytest.fixture
def model(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    return save_weights({"layers.0.weight": torch.randn(32, 16, generator=generator),
                         "layers.0.half": torch.randn(8, 16, generator=generator).half()},
                        tmp_path / "m.safetensors")


@pytest.mark.parametrize(("target", "says"), [
    (["--snr", "0"], "as large as the weights themselves"),
    (["--snr", "-5"], "as large as the weights themselves"),
    (["--psnr", "-1"], "as large as the weights themselves"),
    (["--snr", "500"], "above the about 144 dB that float32 itself can hold"),
    (["--bits-per-weight", "40"], "not below the 28.8 bits per weight the source"),
    (["--snr", "30"], None),
    (["--bits-per-weight", "4"], None),
])
def test_target_warnings(model: Path, tmp_path: Path, capsys, target, says) -> None:
    main(["compress", str(model), "-o", str(tmp_path / "m.dna"), *target])
    err = capsys.readouterr().err
    if says is None:
        assert "warning" not in err
    else:
        assert "warning:" in err and says in err


@pytest.mark.parametrize(("target", "says"), [
    (["--max-abs-error", "1e9"], "not below the largest |weight|"),
    (["--max-abs-error", "0.01"], None),
])
def test_max_abs_error_warning(model: Path, tmp_path: Path, capsys, target, says) -> None:
    """A bound at or above every |weight| is said, as an SNR of 0 dB or less is: every
    weight may become 0 (and the file stays within the bound)."""
    main(["compress", str(model), "-o", str(tmp_path / "m.dna"), *target])
    err = capsys.readouterr().err
    if says is None:
        assert "warning: --max-abs-error" not in err
    else:
        assert "warning:" in err and says in err and "every weight may become 0" in err
