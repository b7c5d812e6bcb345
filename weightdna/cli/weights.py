"""`weightdna weights MODEL`: list a model's tensors with their roles and layers."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import TYPE_CHECKING

from rich.table import Table

from weightdna.cli import console, examples
from weightdna.cli._tables import print_table
from weightdna.errors import InvalidInputError

if TYPE_CHECKING:
    from weightdna.weights import ModelWeights

COMMANDS = {"weights": "list a model's tensors: name, shape, dtype, role, layer"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from weightdna.weights import ROLES

    parser = subparsers.add_parser(
        "weights",
        help=COMMANDS["weights"],
        description=(
            "Read a model (safetensors, .pt/.pth/.bin, .npz, ONNX or a Hugging Face folder) "
            "and list every tensor with its role and layer, then totals per role."
        ),
        epilog=examples(
            "weightdna weights model.safetensors",
            "weightdna weights bert_folder/ --role 'cls.*=other' --json",
        ),
    )
    parser.add_argument("model", help="model file or Hugging Face model folder")
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="NAME=ROLE",
        help=f"override a role (NAME may be a glob pattern; ROLE one of {', '.join(ROLES)})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from weightdna.weights import load_weights

    weights = load_weights(args.model, roles=_parse_roles(args.role))
    if args.json:
        console.print(json.dumps(_as_json(weights), indent=2), markup=False, highlight=False,
                      soft_wrap=True)
        return 0
    table = Table(title=f"{weights.path} ({weights.format}, {len(weights)} tensors)")
    for column in ("name", "shape", "dtype", "role", "layer"):
        table.add_column(column, overflow="fold")
    table.add_column("numel", justify="right")
    for info in weights:
        layer = "—" if info.layer is None else str(info.layer)
        shape = "×".join(map(str, info.shape)) or "scalar"
        table.add_row(info.name, shape, info.dtype, info.role, layer, f"{info.numel:,}")
    print_table(table)
    print_table(_totals_table(weights))
    return 0


def _parse_roles(pairs: list[str]) -> dict[str, str]:
    roles = {}
    for pair in pairs:
        name, sep, role = pair.rpartition("=")
        if not sep or not name:
            raise InvalidInputError(f"--role {pair!r}: expected NAME=ROLE.")
        roles[name] = role
    return roles


def _totals(weights: ModelWeights) -> dict[str, dict[str, int]]:
    from weightdna.weights import ROLES

    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "numel": 0, "bytes": 0})
    for info in weights:
        row = totals[info.role]
        row["tensors"] += 1
        row["numel"] += info.numel
        row["bytes"] += info.nbytes
    return {role: totals[role] for role in ROLES if role in totals}


def _totals_table(weights: ModelWeights) -> Table:
    table = Table(title="totals")
    table.add_column("role")
    for column in ("tensors", "numel", "bytes"):
        table.add_column(column, justify="right")
    for role, row in _totals(weights).items():
        table.add_row(role, str(row["tensors"]), f"{row['numel']:,}", f"{row['bytes']:,}")
    table.add_section()
    nbytes = sum(i.nbytes for i in weights)
    table.add_row("all", str(len(weights)), f"{weights.total_numel:,}", f"{nbytes:,}")
    table.add_row("parameters (no buffers)", "", f"{weights.total_params:,}", "")
    return table


def _as_json(weights: ModelWeights) -> dict:
    return {
        "path": str(weights.path),
        "format": weights.format,
        "metadata": weights.metadata,
        "tensors": [
            {
                "name": i.name,
                "shape": list(i.shape),
                "dtype": i.dtype,
                "role": i.role,
                "layer": i.layer,
                "kind": i.kind,
                "numel": i.numel,
                "fittable": i.fittable,
            }
            for i in weights
        ],
        "totals": {
            "tensors": len(weights),
            "numel": weights.total_numel,
            "params": weights.total_params,
            "bytes": sum(i.nbytes for i in weights),
            "by_role": _totals(weights),
        },
    }
