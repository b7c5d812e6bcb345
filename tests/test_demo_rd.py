"""The demo's rate–distortion picture shows the codec the README describes (rate control,
one .dna file per rate) and marks the demo's own compressed file on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import weightdna.baselines.report as rd_report
from weightdna import pipeline
from weightdna.baselines.sweep import DNA_CODEC, DNA_STEP, rate_distortion
from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target
from weightdna.weights import ModelWeights


@pytest.fixture
def weights() -> ModelWeights:
    generator = torch.Generator().manual_seed(0)
    return ModelWeights.from_tensors({
        "layers.0.weight": torch.randn(48, 32, generator=generator),
        "layers.1.weight": torch.randn(32, 48, generator=generator) * 0.1,
    })


def test_the_demo_sweeps_the_real_codec() -> None:
    assert DNA_CODEC in pipeline.DEMO_RD_METHODS
    assert DNA_STEP not in pipeline.DEMO_RD_METHODS


def test_own_point_on_the_whole_file_and_on_a_subset(weights, tmp_path: Path) -> None:
    target = Target("snr", 25.0)
    report = compress_model(weights, tmp_path / "m.dna", target)
    names = [info.name for info in weights.float_infos()]
    bpw, snr, label = pipeline._own_point(report, weights, names, target)
    assert (bpw, snr) == (report.bits_per_weight, report.snr_db)  # the file, header included
    assert "this demo's file" in label
    one = report.tensors[0]
    bpw, snr, label = pipeline._own_point(report, weights, [one.name], target)
    assert snr == pytest.approx(one.snr_db)
    assert bpw == pytest.approx(8 * one.bytes / one.shape[0] / one.shape[1])
    assert "sections" in label


def test_the_plot_marks_the_point(weights, tmp_path: Path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(rd_report, "save_figure_atomic",
                        lambda fig, path, dpi: figures.append(fig) or Path(path))
    tensors = {info.name: weights.tensor(info.name) for info in weights.float_infos()}
    rd = rate_distortion(tensors, (2.0, 4.0), (DNA_CODEC, "rtn"))
    rd_report.plot(rd, tmp_path / "rd.png", "test", mark=(3.1, 17.0, "this demo's file"))
    labels = [line.get_label() for line in figures[0].axes[0].lines]
    assert "this demo's file" in labels
    assert any(label.startswith("weightdna") for label in labels)
    star = next(line for line in figures[0].axes[0].lines if line.get_label() == "this demo's file")
    assert list(star.get_xdata()) == [3.1] and list(star.get_ydata()) == [17.0]
