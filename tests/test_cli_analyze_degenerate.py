"""`weightdna analyze` on degenerate weights: no numpy warnings, no traceback; a degenerate
estimate reads "undefined" with its reason; a constant tensor is skipped with its reason.
And the report: a plain-language summary first, axis labels on every histogram."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import weightdna.report.html as report_html
from weightdna.cli import main
from weightdna.weights import save_weights

FAST = ["--dna-tensors", "0", "--max-rows", "64"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    generator = torch.Generator().manual_seed(0)
    return save_weights({
        "layers.0.weight": torch.randn(64, 32, generator=generator),
        # Eight distinct rows, each 8 times: nearest neighbours at distance 0.
        "layers.1.weight": torch.randn(8, 32, generator=generator).repeat(8, 1),
        "layers.2.weight": torch.ones(32, 16),
    }, tmp_path_factory.mktemp("degenerate") / "m.safetensors")


def test_degenerate_weights_are_undefined_not_warnings(model: Path, tmp_path: Path,
                                                      capsys) -> None:
    out_json = tmp_path / "a.json"
    with _no_warning_escapes():
        assert main(["analyze", str(model), "--json", str(out_json), *FAST]) == 0
    captured = capsys.readouterr()
    assert "RuntimeWarning" not in captured.err and "Traceback" not in captured.err
    assert "undefined[1]" in captured.out
    assert "undefined[1]: 0 up to rounding" in " ".join(captured.out.split())
    data = json.loads(out_json.read_text())
    assert "constant" in data["skipped"]["layers.2.weight"]
    assert [t["name"] for t in data["tensors"]] == ["layers.0.weight", "layers.1.weight"]


def test_report_summary_and_labels(model: Path, tmp_path: Path, monkeypatch) -> None:
    figures = []
    real = report_html._png

    def keep(fig) -> bytes:
        figures.append(fig)
        return real(fig)

    monkeypatch.setattr(report_html, "_png", keep)
    path = tmp_path / "r.html"
    assert main(["analyze", str(model), "--report", str(path), *FAST]) == 0
    text = path.read_text()
    assert text.index("What was found") < text.index("The seed's claims")
    assert "hold," in text and "fail," in text
    assert "undefined (0 up to rounding" in text
    for fig in figures:
        for ax in fig.axes:
            if ax.get_visible() and (ax.patches or ax.lines):
                assert ax.get_ylabel(), f"a panel of {ax.get_title()!r} has no y label"


class _no_warning_escapes:
    """Fail if any warning reaches the warnings machinery outside the command."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc) -> None:
        self._catch.__exit__(*exc)
        assert not [str(w.message) for w in self._caught]
