"""`weightdna demo`: the embedded default job, the whole pipeline on the digits CNN."""

from __future__ import annotations

import argparse
from pathlib import Path

from weightdna.cli import console, err_console
from weightdna.cli._engine import TrainingProgress

DEFAULT_OUTPUT = Path("out/demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the default job: train, analyse, compress, restore and evaluate the digits CNN",
        description=(
            "The whole pipeline on an embedded default: train the small digits CNN with "
            "weightdna's NumPy engine (or reuse the one an earlier run saved), analyse its "
            "weights against shuffled and Gaussian nulls, compress it to a .dna file at the "
            "target SNR, restore it, measure the restored model's test accuracy, sweep "
            "rate against distortion beside the peer codecs, and write one self-contained "
            "HTML report. The demo owns the files in its output folder and replaces them."
        ),
    )
    parser.add_argument(
        "-o", "--output", default=str(DEFAULT_OUTPUT), metavar="DIR",
        help=f"folder for the outputs (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of split, init and order")
    parser.add_argument(
        "--snr", type=float, default=30.0, metavar="DB",
        help="compression target: whole-model SNR in dB (default 30)",
    )
    parser.add_argument("--retrain", action="store_true", help="train even if a model is cached")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from weightdna.codec.ratecontrol import Target
    from weightdna.pipeline import run_demo
    from weightdna.train import train_digits_cnn

    def train(seed: int):
        with TrainingProgress("train cnn") as progress:
            return train_digits_cnn(seed=seed, callbacks=[progress])

    def say(message: str) -> None:
        err_console.print(f"[dim]·[/] {message}", highlight=False)

    result = run_demo(
        Path(args.output), seed=args.seed, target=Target("snr", args.snr),
        retrain=args.retrain, train=train, say=say,
    )
    c, a = result.compression, result.accuracy
    verdicts = ", ".join(f"{claim.key} {claim.verdict}" for claim in result.analysis.claims)
    console.print(f"[bold]claims[/]  {verdicts}", highlight=False)
    console.print(
        f"[bold]compressed[/]  {c.file_bytes:,} bytes, {c.bits_per_weight:.2f} bits/weight, "
        f"ratio {c.ratio:.1f}, SNR {c.snr_db:.2f} dB",
        highlight=False,
    )
    console.print(
        f"[bold]accuracy[/]  original {a['original_accuracy']:.4f}, restored "
        f"{a['restored_accuracy']:.4f} ({a['delta_points']:+.2f} points)",
        highlight=False,
    )
    console.print(f"[bold]report[/]  {result.paths['report']}", highlight=False)
    return 0
