"""Start-up of the command line: --help and --version load none of what the commands run,
and Ctrl-C while a command's modules load ends without a traceback.

Speed itself is measured by bench/startup.py, not here; these tests check the cause (which
modules are imported), which does not depend on the machine.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import weightdna.cli as cli
from weightdna.cli import main

HEAVY = ("torch", "sklearn", "numba", "numpy", "scipy", "matplotlib", "safetensors")


def _imported_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    script = (f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
              "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return set(done.stdout.splitlines()[-1].split())  # the last line: above it, the help


@pytest.mark.parametrize("argv", [["--version"], ["--help"], [], ["no-such-command"]])
def test_top_level_imports_nothing_heavy(argv: list[str]) -> None:
    modules = _imported_after(f"from weightdna.cli import main; main({argv!r})")
    assert "weightdna" in modules
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.parametrize("command", ["info", "evaluate", "experiment", "demo", "compress",
                                     "decompress", "weights", "fit", "reconstruct", "analyze",
                                     "bench"])
def test_commands_help_imports_nothing_heavy(command: str) -> None:
    # A command's --help reads its choices from light modules (codec/options.py,
    # dna/options.py, analysis/settings.py, baselines/methods.py, weights/roles.py).
    modules = _imported_after(f"from weightdna.cli import main; main([{command!r}, '--help'])")
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.parametrize("command", ["train", "plot"])
def test_engine_commands_help_imports_numpy_only(command: str) -> None:
    # Their choices are the engine's (NumPy only); nothing heavier.
    modules = _imported_after(f"from weightdna.cli import main; main([{command!r}, '--help'])")
    assert modules.isdisjoint(set(HEAVY) - {"numpy"}), sorted(modules & set(HEAVY))


def test_version_and_help_print(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("weightdna ")
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in ("compress", "decompress", "analyze", "fit", "reconstruct", "info"):
        assert command in out


def test_unknown_command_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["compres"])
    assert done.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_ctrl_c_while_loading_is_one_line(monkeypatch, capsys) -> None:
    def interrupted(name: str):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    assert main(["compress", "--help"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
