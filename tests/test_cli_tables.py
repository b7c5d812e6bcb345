"""Tables into a pipe (pytest's capture is one) show every name and number whole, and
commands with a table have --json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from weightdna import cli
from weightdna.cli import main
from weightdna.cli._tables import print_table
from weightdna.weights import save_weights

LONG = "encoder.layer.11.attention.output.dense.a_rather_long_parameter_name.weight"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    return save_weights({LONG: torch.randn(24, 16, generator=generator),
                         f"{LONG}.bias": torch.randn(24, generator=generator)},
                        tmp_path / "m.safetensors")


def test_piped_tables_are_whole(model: Path, tmp_path: Path, capsys) -> None:
    assert not cli.console.is_terminal
    assert main(["weights", str(model)]) == 0
    out = capsys.readouterr().out
    assert LONG in out and "…" not in out
    assert main(["compress", str(model), "--snr", "25", "-o", str(tmp_path / "m.dna")]) == 0
    out = capsys.readouterr().out
    assert LONG in out and "…" not in out
    assert main(["info", str(tmp_path / "m.dna")]) == 0
    out = capsys.readouterr().out
    assert LONG in out and "…" not in out


def test_terminal_tables_wrap_instead_of_cutting(monkeypatch, capsys) -> None:
    from rich.console import Console
    from rich.table import Table

    terminal = Console(file=sys.stdout, force_terminal=True, width=40, color_system=None)
    monkeypatch.setattr("weightdna.cli._tables.console", terminal)
    table = Table()
    table.add_column("name")
    table.add_column("value", justify="right")
    table.add_row(LONG, "8.123456789e-05")
    print_table(table)
    out = capsys.readouterr().out
    assert "…" not in out
    # Every character is there, folded over lines inside the name cell.
    cells = "".join(line.split("│")[1].strip() for line in out.splitlines() if "│" in line)
    assert cells == LONG


def test_fit_json(model: Path, tmp_path: Path, capsys) -> None:
    assert main(["fit", str(model), "-o", str(tmp_path / "m.dna.pt"), "--steps", "5",
                 "--width", "8", "--depth", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in data["tensors"]] == [LONG, f"{LONG}.bias"]
    assert data["tensors"][0]["metrics"]["snr"] is not None
    assert data["config"]["steps"] == 5
