"""`weightdna info FILE.dna`: the tensor table of a .dna file."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

from rich.table import Table

from weightdna.cli import console, examples, printable, warn
from weightdna.cli._tables import print_table

if TYPE_CHECKING:
    from weightdna.codec.container import DnaFile

COMMANDS = {"info": "show what a .dna file holds: tensors, representations, bits, errors"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help=COMMANDS["info"],
        description=(
            "Read a .dna file, check its structure and checksums, and list every tensor with "
            "its representation, its size on disk in bits per weight and the error the "
            "encoder measured. Bits per weight count the tensor's sections; the header is "
            "reported separately."
        ),
        epilog=examples(
            "weightdna info model.dna",
            "weightdna info model.dna --json > model.json",
        ),
    )
    parser.add_argument("file", help="a .dna file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def _describe(entry: dict) -> str:
    """The representation with its key parameters, e.g. ``quantized (laplace, per-row)``."""
    params = entry["params"]
    if entry["representation"] == "quantized" and isinstance(params, dict):
        model = params.get("model")
        kind = model.get("kind", "?") if isinstance(model, dict) else "?"
        step = params.get("step")
        if params.get("rows") is not None:
            step = "per-row"
        else:
            step = f"step {step:.3g}" if isinstance(step, int | float) else "step ?"
        return f"quantized ({kind}, {step})"
    return str(entry["representation"])


def _rows(dna: DnaFile) -> list[dict]:
    from weightdna.codec.dtypes import DTYPES
    from weightdna.weights.roles import infer_role

    rows = []
    for entry in dna.entries:
        numel = math.prod(entry["shape"])
        size = dna.section_bytes(entry["name"])
        stats = entry.get("stats", {})
        rows.append(
            {
                "name": entry["name"],
                "role": infer_role(entry["name"], tuple(entry["shape"]),
                                   DTYPES[entry["dtype"]]),
                "dtype": entry["dtype"],
                "shape": entry["shape"],
                "representation": _describe(entry),
                "bytes": size,
                "bits_per_weight": 8 * size / numel if numel else None,
                "max_abs_error": stats.get("max_abs_error"),
                "snr_db": stats.get("snr_db"),
            }
        )
    return rows


def _no_snr(row: dict) -> str:
    return "exact" if row["max_abs_error"] == 0 else "-"


def run(args: argparse.Namespace) -> int:
    from weightdna.codec.container import read_dna_file
    from weightdna.codec.quality import TensorQuality, summary, warnings

    dna = read_dna_file(args.file)
    rows = _rows(dna)
    weights = sum(math.prod(e["shape"]) for e in dna.entries)
    overview = {
        "file": str(dna.path),
        "version": dna.version,
        "tensors": len(rows),
        "weights": weights,
        "file_bytes": dna.file_bytes,
        "header_bytes": dna.header_bytes,
        "bits_per_weight": 8 * dna.file_bytes / weights if weights else None,
        "metadata": dna.metadata,
        "files": [{"path": e["path"], "kind": e.get("kind", "file"), "bytes": e["bytes"],
                   "stored_bytes": e["sections"]["data"][1]} for e in dna.files],
    }
    quality = [TensorQuality(r["name"], r["snr_db"]) for r in rows]
    notes = warnings(quality, None)  # the header keeps no pooled figure
    if args.json:
        text = json.dumps({**overview, "warnings": notes, "tensor_table": rows}, indent=2)
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        return 0
    table = Table(title=f"{printable(dna.path)} (.dna version {dna.version})")
    for column in ("name", "role", "dtype", "shape", "representation", "bytes", "bits/weight"):
        table.add_column(column, justify="right" if column in ("bytes", "bits/weight") else "left")
    table.add_column("max |error|", justify="right")
    table.add_column("SNR dB", justify="right")
    for row in rows:
        table.add_row(
            printable(row["name"]),
            row["role"],
            row["dtype"],
            "×".join(map(str, row["shape"])) or "scalar",
            row["representation"],
            str(row["bytes"]),
            "-" if row["bits_per_weight"] is None else f"{row['bits_per_weight']:.3f}",
            "-" if row["max_abs_error"] is None else f"{row['max_abs_error']:.3g}",
            f"{row['snr_db']:.2f}" if row["snr_db"] is not None else _no_snr(row),
        )
    print_table(table)
    bpw = overview["bits_per_weight"]
    console.print(
        f"{len(rows)} tensors, {weights} weights, {dna.file_bytes} bytes "
        f"(header {dna.header_bytes}), "
        + ("no weights" if bpw is None else f"{bpw:.3f} bits per weight overall"),
        highlight=False,
    )
    if dna.files:
        stored = sum(f["stored_bytes"] for f in overview["files"])
        count = f"{len(dna.files)} file{'' if len(dna.files) == 1 else 's'}"
        console.print(f"{count} stored with the weights ({stored} bytes): "
                      + printable(", ".join(f["path"] for f in overview["files"])),
                      highlight=False)
    line = summary(quality)
    if line:
        # names from the file: as escapes, never as markup or control characters
        console.print(printable(line), highlight=False)
    for note in notes:
        warn(note)
    if line:
        # `weightdna compress`'s output check and its zeroed shares are printed, not stored
        console.print("the outputs' check that compress ran is not stored in the file; "
                      "compare the restored model's outputs with the original's: weightdna "
                      f"evaluate ORIGINAL {printable(str(dna.path))}", highlight=False,
                      markup=False)
    return 0
