"""The `weightdna` command line.

Each module in this package is one command (or a group of them): it defines
``register(subparsers)``, which adds a parser whose ``func`` default takes the parsed
arguments and returns the exit status. Modules are found by name, so adding a command
never edits this file. Only the CLI prints to the terminal.

A command line that names a command imports only the module that defines it (the module
of that name, or the one `COMMAND_MODULES` names): the others' imports (scikit-learn,
matplotlib, ...) would otherwise be a large part of a command's memory. Without one (or for
a command not found that way) every module is imported, so nothing depends on that table
but memory.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from rich.console import Console
from rich.markup import escape

from weightdna import __version__
from weightdna.errors import WeightDNAError

# Errors and progress go to stderr so that --json output on stdout stays clean.
err_console = Console(stderr=True)
console = Console()

# Commands defined by a module of another name.
COMMAND_MODULES = {"decompress": "compress", "reconstruct": "fit"}


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` safe to hand to rich and the terminal: every control character, lone
    surrogate or other non-printable character (but spaces, and newlines if asked) written
    as its Python escape (``\\x1b``, ``\\ud800``), and rich markup escaped, so a tensor
    name or a path from a file is shown as it is, never interpreted."""
    shown = "".join(
        ch if ch.isprintable() or ch == " " or (keep_newlines and ch == "\n")
        else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in str(text)
    )
    return escape(shown)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given ``command``, at least of that one."""
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
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    wanted = COMMAND_MODULES.get(command or "", command)
    if wanted in names:
        importlib.import_module(f"{__name__}.{wanted}").register(subparsers)
        # Not where it was expected: every command, then.
        return parser if command in subparsers.choices else build_parser()
    for name in names:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WeightDNAError as exc:
        err_console.print(f"[bold red]error:[/] {printable(exc, keep_newlines=True)}",
                          highlight=False)
        return 1
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        return 130


def _command(argv: list[str]) -> str | None:
    """The command an argument list names: its first argument, unless that is an option."""
    return argv[0] if argv and not argv[0].startswith("-") else None


if __name__ == "__main__":
    sys.exit(main())
