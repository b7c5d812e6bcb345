"""`weightdna train {spiral,mlp,cnn} -o MODEL.safetensors`: train a reference model."""

from __future__ import annotations

import argparse
import json

from weightdna.atomic import check_output, write_text_atomic
from weightdna.cli import console, examples

COMMANDS = {
    "train": "train a reference model with the NumPy engine and save it as safetensors",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from weightdna.train import RECIPES

    parser = subparsers.add_parser(
        "train",
        help=COMMANDS["train"],
        description=(
            "Train one of the engine's reference models with a fixed seed and save its "
            "weights (named layers.{i}.weight / layers.{i}.bias, as torch.nn.Sequential "
            "names them) and architecture as one safetensors file. "
            "spiral: an MLP on seed 002's three interleaved spirals, judged on a fresh "
            "spiral; mlp: an MLP on scikit-learn's 8x8 digits; cnn: a small CNN on the same "
            "digits."
        ),
        epilog=examples(
            "weightdna train cnn -o digits_cnn.safetensors",
            "weightdna train spiral -o spiral.safetensors --epochs 50 --history history.json",
        ),
    )
    parser.add_argument("model", choices=sorted(RECIPES), help="which reference model")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to write the .safetensors"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: the recipe's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, init, order")
    parser.add_argument(
        "--history",
        metavar="FILE.json",
        help="also write the per-epoch history as JSON (for `weightdna plot training`)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from weightdna.cli._engine import TrainingProgress
    from weightdna.train import train_recipe

    output = check_output(args.output, args.force, {".safetensors": "safetensors"})
    history_path = None
    if args.history:
        history_path = check_output(args.history, args.force, {".json": "JSON"})
    with TrainingProgress(f"train {args.model}") as progress:
        result = train_recipe(args.model, epochs=args.epochs, seed=args.seed, callbacks=[progress])
    path = result.model.save(output)
    held_out = "fresh validation spiral" if args.model == "spiral" else "test set"
    line = f"{args.model}: {held_out} accuracy {result.test_accuracy:.4f}"
    if "bayes_accuracy" in result.details:
        line += f" (best possible on it: {result.details['bayes_accuracy']:.4f})"
    console.print(line, highlight=False)
    console.print(
        f"{len(result.history['loss'])} epochs in {result.seconds:.1f} s, "
        f"{result.model.num_parameters():,} parameters",
        highlight=False,
    )
    console.print(f"model: {path}", highlight=False)
    if history_path is not None:
        write_text_atomic(history_path, json.dumps(result.history, indent=1) + "\n")
        console.print(f"history: {history_path}", highlight=False)
    return 0
