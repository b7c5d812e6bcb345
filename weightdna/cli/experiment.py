"""`weightdna experiment overparam -o DIR`: experiments that test the seeds' claims."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from weightdna.atomic import check_output
from weightdna.cli import console, examples
from weightdna.cli._tables import print_table

COMMANDS = {
    "experiment": "run an experiment with the engine (overparam: error against network size)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help=COMMANDS["experiment"],
        description=(
            "overparam: train one-hidden-layer MLPs on digits with widths from far fewer to "
            "far more parameters than the 1437 training examples, and write their training "
            "and test error against parameter count (overparam.json, overparam.csv, "
            "overparam.png) into the output folder. About half a minute on one core."
        ),
        epilog=examples(
            "weightdna experiment overparam -o out/overparam",
            "weightdna experiment overparam --widths 1,8,64,512 --epochs 20",
        ),
    )
    parser.add_argument("name", choices=["overparam"], help="which experiment")
    parser.add_argument(
        "-o", "--output", default="out/overparam", metavar="DIR",
        help="folder for the results (default out/overparam)",
    )
    parser.add_argument(
        "--widths", type=_widths, default=None, metavar="W1,W2,...",
        help="hidden widths to train (default 1,2,4,...,2048)",
    )
    parser.add_argument("--epochs", type=int, default=60, help="epochs per width (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, init and order")
    parser.add_argument("--force", action="store_true", help="overwrite existing results")
    parser.set_defaults(func=run)


def _widths(text: str) -> list[int]:
    try:
        widths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def run(args: argparse.Namespace) -> int:
    from weightdna.experiments.overparam import (
        DEFAULT_WIDTHS,
        run_overparam,
        write_overparam,
    )

    directory = Path(args.output)
    for name in ("overparam.json", "overparam.csv", "overparam.png"):
        check_output(directory / name, args.force, {Path(name).suffix: name})

    def report(row) -> None:
        console.print(
            f"width {row.width:>5}: {row.parameters:>7,} parameters, train error "
            f"{row.train_error:.4f}, test error {row.test_error:.4f} ({row.seconds:.1f} s)",
            highlight=False,
        )

    result = run_overparam(
        widths=args.widths or DEFAULT_WIDTHS, epochs=args.epochs, seed=args.seed,
        on_width_done=report,
    )
    paths = write_overparam(result, directory)
    table = Table(title=f"digits: {result.train_examples} training examples, "
                        f"{result.test_examples} test")
    for column in ("width", "parameters", "params / examples", "train error", "test error"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(
            str(row.width), f"{row.parameters:,}",
            f"{row.parameters / result.train_examples:.2f}",
            f"{row.train_error:.4f}", f"{row.test_error:.4f}",
        )
    print_table(table)
    for path in paths.values():
        console.print(f"wrote {path}", highlight=False)
    return 0
