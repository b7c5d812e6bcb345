"""Tables on stdout that never cut a name or a number."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from weightdna.cli import console


def print_table(table: Table) -> None:
    """Print ``table`` whole: on a terminal a cell too wide for its column wraps onto the
    next line (instead of ``encoder.laye…``, ``8.12e…``); into a pipe or a file, where no
    screen limits the width, every column gets its full width."""
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    # The width a console gives a table caps it (80 columns when not a terminal), and a
    # print's own width cannot exceed the console's: a console as wide as the table then.
    natural = Measurement.get(console, console.options.update(width=1_000_000), table).maximum
    Console(file=console.file, width=natural, color_system=None).print(table)
