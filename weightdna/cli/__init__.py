"""The `weightdna` command line.

Each module in this package is one command (or a group of them): it names its commands and
their one-line help in ``COMMANDS`` and defines ``register(subparsers)``, which adds the
full parsers, whose ``func`` default takes the parsed arguments and returns the exit status.
Modules are found by name, so adding a command never edits this file. Only the CLI prints
to the terminal.

A module imports only the standard library and rich at its top; what a command runs (torch,
scikit-learn, numba, matplotlib: seconds of start-up and a large part of its memory) is
imported inside the functions that run it. So ``--help`` and ``--version`` read every
module's ``COMMANDS`` in a fraction of a second, and a command line that names a command
registers only that command's module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import textwrap

from rich.console import Console
from rich.markup import escape

from weightdna import __version__
from weightdna.errors import WeightDNAError

# Errors and progress go to stderr so that --json output on stdout stays clean.
err_console = Console(stderr=True)
console = Console()


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default shown; examples (indented lines) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower()
                or default is None or default is False or default == argparse.SUPPRESS
                or default == []):
            return text  # already said, or nothing to say (a flag, an unset option)
        return f"{text} (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Paragraphs are filled; one whose lines are indented (a command) is kept verbatim.
        paragraphs = re.split(r"\n\s*\n", text.strip("\n"))
        return "\n\n".join(
            textwrap.indent(p, indent) if p.startswith(" ") or "\n " in p
            else textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                               subsequent_indent=indent)
            for p in paragraphs
        )


class Parser(argparse.ArgumentParser):
    """argparse's parser with weightdna's help formatting, for every command and subcommand."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def examples(*lines: str) -> str:
    """A command's epilog: the command lines given, under "examples:"."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


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


def warn(message: str) -> None:
    """``warning: message`` on stderr, in yellow, shown as it is (`printable`)."""
    err_console.print(f"warning: {printable(message)}", style="yellow", highlight=False)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with ``command``'s full parser, and every other command by name
    and one-line help only (enough for --help, --version and "invalid choice")."""
    parser = Parser(
        prog="weightdna",
        description=(
            "Study and compress the weights of trained neural networks: discover their "
            "structure, fit a coordinate network (their 'DNA'), code the residual, and "
            "check what the restored network still does."
        ),
        epilog=examples("weightdna demo", "weightdna weights model.safetensors",
                        "weightdna compress model.safetensors -o model.dna --snr 30",
                        "weightdna COMMAND --help     # a command's options and examples"),
    )
    parser.add_argument("--version", action="version", version=f"weightdna {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    modules = [importlib.import_module(f"{__name__}.{name}") for name in names]
    for module in modules:
        if command in module.COMMANDS:
            module.register(subparsers)
            return parser
    for module in modules:
        for name, summary in module.COMMANDS.items():
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(_command(argv))
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        # Ctrl-C while a command's modules load (torch alone takes seconds): no traceback.
        err_console.print("[bold red]interrupted[/]")
        return 130
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
