"""The `weightdna` command line.

Each module in this package is one command (or a group of them): it defines
``register(subparsers)``, which adds a parser whose ``func`` default takes the parsed
arguments and returns the exit status. Modules are found by name, so adding a command
never edits this file. Only the CLI prints to the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from rich.console import Console

from weightdna import __version__
from weightdna.errors import WeightDNAError

# Errors and progress go to stderr so that --json output on stdout stays clean.
err_console = Console(stderr=True)
console = Console()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightdna",
        description=(
            "Study and compress the weights of trained neural networks: discover their "
            "structure, fit a coordinate network (their 'DNA'), code the residual, and "
            "check what the restored network still does."
        ),
    )
    parser.add_argument("--version", action="version", version=f"weightdna {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WeightDNAError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
