"""`weightdna bench rd MODEL`: the .dna codec and every available peer across rates on the
same weights, written as a markdown table, JSON and a rate–distortion plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from weightdna.atomic import check_output
from weightdna.cli import console, err_console, examples
from weightdna.cli._tables import print_table
from weightdna.errors import InvalidInputError

COMMANDS = {"bench": "benchmarks: rate–distortion against peers"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from weightdna.baselines.methods import METHODS

    parser = subparsers.add_parser(
        "bench", help=COMMANDS["bench"],
        epilog=examples("weightdna bench rd model.safetensors -o rd",
                        "weightdna bench rd --help   # its options"),
    )
    commands = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    rd = commands.add_parser(
        "rd",
        help="the .dna codec and its peers across rates: table, JSON and plot",
        description=(
            "Code the same tensors with the .dna codec (weightdna: `compress` to each rate, "
            "the file's bytes counted; weightdna-step: its quantised representation at one "
            "global step, a sweep without rate control) and every available peer: NNCodec, "
            "the quantisers users pick today (GGUF, bitsandbytes NF4/FP4, HQQ, "
            "optimum-quanto; their true bytes, scales and metadata counted), "
            "round-to-nearest int8/4/2 + zstd, low-rank SVD, magnitude pruning, zstd and "
            "ZipNN, at settings spanning RATES bits per weight. Writes NAME.md (SNR at equal "
            "size, every point), NAME.json and NAME.png (bits per weight against SNR, with "
            "the per-row Shannon limit: the best SNR any coder could reach with each row's "
            "scale known, estimated from the weights). Missing optional peers are listed as "
            "skipped."
        ),
        epilog=examples(
            "weightdna bench rd model.safetensors -o rd",
            "weightdna bench rd model.safetensors --rates 2,4,8 --methods weightdna,rtn,svd",
        ),
    )
    rd.add_argument("model", help="model file or Hugging Face model folder")
    rd.add_argument(
        "-o",
        "--output",
        default="rd",
        metavar="DIR",
        help="folder for the table, JSON and plot (default: ./rd)",
    )
    rd.add_argument("--name", help="file name stem (default: the model's name)")
    rd.add_argument(
        "--tensors",
        action="append",
        default=[],
        metavar="GLOB",
        help="only tensors matching this glob (repeatable; default: all floating-point tensors)",
    )
    rd.add_argument(
        "--rates",
        default="1,2,3,4,6,8",
        help="bits per weight to compare at, comma-separated (default 1,2,3,4,6,8)",
    )
    rd.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (default: all)",
    )
    rd.add_argument("--force", action="store_true", help="overwrite existing output files")
    rd.set_defaults(func=run_rd)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InvalidInputError(f"--rates takes numbers separated by commas, not {text!r}") from exc


def run_rd(args: argparse.Namespace) -> int:
    from weightdna.baselines.report import write_report
    from weightdna.baselines.sweep import DNA_CODEC, DNA_STEP, rate_distortion
    from weightdna.dna import select_tensors
    from weightdna.weights import load_weights

    weights = load_weights(args.model)
    infos = [i for i in select_tensors(weights, args.tensors or None) if i.numel]
    stem = args.name or Path(weights.path).stem.removesuffix(".safetensors") or "model"
    directory = Path(args.output)
    for ext in (".md", ".json", ".png"):
        check_output(directory / f"{stem}{ext}", args.force, {ext: ext[1:]})
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    tensors = {i.name: weights.tensor(i.name) for i in infos}
    title = f"{stem}, {len(tensors)} tensors"
    with err_console.status("coding") as status:
        rd = rate_distortion(
            tensors,
            _floats(args.rates),
            methods,
            progress=lambda message: status.update(f"coding: {message}"),
        )
    paths = write_report(rd, directory, stem, title)

    table = Table(title=f"SNR (dB) at equal size — {title}")
    shown = [m for m in (DNA_CODEC, DNA_STEP, "nncodec", "rtn", "svd", "pruning") if rd.points(m)]
    table.add_column("bits/weight", justify="right")
    for m in shown:
        table.add_column(m, justify="right")
    for rate in rd.rates:
        cells = [rd.snr_at(m, rate) for m in shown]
        table.add_row(f"{rate:g}", *("—" if c is None else f"{c:.2f}" for c in cells))
    print_table(table)
    for name, why in rd.skipped.items():
        console.print(f"skipped {name}: {why}", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)
    return 0
