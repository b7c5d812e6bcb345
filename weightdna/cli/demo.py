"""`weightdna demo`: the embedded default job (for now: train the digits CNN with the engine)."""

from __future__ import annotations

import argparse
from pathlib import Path

from weightdna.cli import console
from weightdna.cli._engine import TrainingProgress, check_output

DEFAULT_OUTPUT = Path("out/demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the default job: train the digits CNN with the NumPy engine and save it",
        description=(
            "Train the small digits CNN with weightdna's NumPy engine (fixed seed), print its "
            "test accuracy, and write the model as safetensors (cnn.safetensors) and its "
            "training curves (cnn_training.png) into the output folder, replacing those two "
            "files of an earlier demo run. Under a minute on one core."
        ),
    )
    parser.add_argument(
        "-o", "--output", default=str(DEFAULT_OUTPUT), metavar="DIR",
        help=f"folder for the outputs (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of split, init and order")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from weightdna.plots import plot_training
    from weightdna.train import train_digits_cnn

    directory = Path(args.output)
    model_path = directory / "cnn.safetensors"
    curve_path = directory / "cnn_training.png"
    # `make demo` is run again and again; it owns these two names, so it replaces them.
    # Anything else at those paths (a folder) is still refused.
    for path in (model_path, curve_path):
        check_output(path, force=True)
    console.print("Training the digits CNN with the NumPy engine ...", highlight=False)
    with TrainingProgress("train cnn") as progress:
        result = train_digits_cnn(seed=args.seed, callbacks=[progress])
    model = result.model
    console.print(
        f"digits CNN: test accuracy {result.test_accuracy:.4f} on the held-out 20% "
        f"({len(result.history['loss'])} epochs, {result.seconds:.1f} s, "
        f"{model.num_parameters():,} parameters)",
        highlight=False,
    )
    model.save(model_path)
    plot_training(result.history, curve_path, title=f"Digits CNN (seed {args.seed})")
    console.print(f"model:  {model_path}", highlight=False)
    console.print(f"curves: {curve_path}", highlight=False)
    return 0
