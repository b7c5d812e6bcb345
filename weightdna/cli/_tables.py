"""Tables on stdout that never cut a name or a number."""

from __future__ import annotations

from rich.measure import Measurement
from rich.segment import Segments
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
    # A console caps a table at its width (80 columns when not a terminal), and a print's
    # own width cannot exceed it: the table is rendered at its natural width and its lines
    # printed as they are (through the same console, so its capture and file still apply).
    natural = Measurement.get(console, console.options.update(width=1_000_000), table).maximum
    options = console.options.update(width=max(natural, 1))
    console.print(Segments(console.render(table, options)), soft_wrap=True)
