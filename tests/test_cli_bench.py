"""`weightdna bench rd`: one run writes the equal-size table, JSON and plot; missing peers skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.baselines.methods import QUANTIZER_FAMILIES
from weightdna.baselines.quantizers import available
from weightdna.cli import main
from weightdna.weights import save_weights


def tiny_model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return save_weights(
        {
            "layers.0.weight": torch.from_numpy(rng.standard_normal((256, 128)).astype(np.float32)),
            "layers.0.bias": torch.from_numpy(rng.standard_normal(256).astype(np.float32) * 0.1),
            "layers.1.weight": torch.from_numpy(rng.standard_normal((64, 256)).astype(np.float32)),
        },
        tmp_path / "tiny.safetensors",
    )


def test_bench_rd_writes_table_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIGHTDNA_PEERS_PYTHON", str(tmp_path / "absent" / "python"))
    out = tmp_path / "rd"
    argv = [
        "bench",
        "rd",
        str(tiny_model(tmp_path)),
        "-o",
        str(out),
        "--rates",
        "2,4",
        "--methods",
        "weightdna,weightdna-step,nncodec,rtn,svd,pruning,zstd",
        "--tensors",
        "layers.*",
    ]
    assert main(argv) == 0
    md = (out / "tiny.md").read_text()
    assert "SNR (dB) at equal size" in md and "nncodec" in md.split("## Skipped")[1]
    data = json.loads((out / "tiny.json").read_text())
    assert set(data["tensors"]) == {"layers.0.weight", "layers.0.bias", "layers.1.weight"}
    assert data["skipped"].keys() == {"nncodec"}
    for ours in ("weightdna", "weightdna-step"):
        snr = data["snr_at_rate"][ours]
        assert snr["2.0"] is not None and snr["4.0"] > snr["2.0"] > 0
    # The file-based run meets each size target, and one a bit above the top rate (so that
    # the top rate is bracketed).
    file_points = [p for p in data["points"] if p["name"] == "weightdna"]
    assert sorted(round(p["bits_per_weight"]) for p in file_points) == [2, 4, 5]
    assert all(p["bits_per_weight"] <= rate for p, rate in zip(file_points, (2, 4, 5), strict=True))
    # No coder beats the per-row limit: the codec's points sit under it, within a few dB
    # of it on Gaussian weights.
    for rate in ("2.0", "4.0"):
        gap = data["limit_snr_db"][rate] - data["snr_at_rate"]["weightdna"][rate]
        assert 0 < gap < 3
    assert "per-row limit" in md
    names = {p["name"] for p in data["points"]}
    assert names == {"weightdna", "weightdna-step", "rtn", "svd", "pruning", "zstd"}
    assert (out / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skipped nncodec" in capsys.readouterr().out

    # The outputs are not overwritten without --force.
    cheap = [*argv[:-4], "--methods", "rtn"]
    assert main(cheap) == 1
    assert "--force" in capsys.readouterr().err
    assert main([*cheap, "--force"]) == 0


def test_bench_rd_rejects_bad_rates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = str(tiny_model(tmp_path))
    assert main(["bench", "rd", model, "-o", str(tmp_path), "--rates", "two"]) == 1
    assert main(["bench", "rd", model, "-o", str(tmp_path), "--rates", "0,40"]) == 1
    assert main(["bench", "rd", model, "-o", str(tmp_path), "--methods", "gzip"]) == 1
    assert "unknown methods" in capsys.readouterr().err


def test_bench_rd_runs_the_quantisers_users_pick(tmp_path: Path) -> None:
    # bitsandbytes left out: its first call takes ~40 s here (tests/test_quantizer_peers.py
    # covers it)
    families = [f for f in ("gguf", "hqq", "quanto") if available(QUANTIZER_FAMILIES[f])]
    if not families:
        pytest.skip("no peer quantiser installed")
    out = tmp_path / "rd"
    argv = ["bench", "rd", str(tiny_model(tmp_path)), "-o", str(out), "--rates", "4,6",
            "--methods", ",".join(["weightdna", *families])]
    assert main(argv) == 0
    data = json.loads((out / "tiny.json").read_text())
    assert {p["name"] for p in data["points"]} == {"weightdna", *families}
    for family in families:
        points = [p for p in data["points"] if p["name"] == family]
        # Every setting the family has, each at its true bytes (4.25–8.5 bits per weight
        # for these block formats, with their scales), ours ahead at the same size.
        assert len(points) >= 3
        for p in points:
            assert 2 < p["bits_per_weight"] < 9
            if 4 <= p["bits_per_weight"] <= 6:
                ours = data["snr_at_rate"]["weightdna"]
                at = np.interp(p["bits_per_weight"], [4.0, 6.0], [ours["4.0"], ours["6.0"]])
                assert at > p["snr_db"] + 1, (p["setting"], at, p["snr_db"])
    assert "HQQ" in (out / "tiny.md").read_text() or "hqq" not in families
