"""`weightdna plot {activations,training,boundary,momentum} -o FILE.png`: engine pictures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from weightdna.atomic import check_output
from weightdna.cli import console, examples
from weightdna.errors import InvalidInputError, ModelFileError

COMMANDS = {
    "plot": "draw the engine's pictures: activations, training curves, decision boundary, "
            "momentum",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from weightdna.train import RECIPES

    parser = subparsers.add_parser(
        "plot",
        help=COMMANDS["plot"],
        description=(
            "Write one PNG. activations: ReLU, Sigmoid, Tanh and Sine with their derivatives. "
            "training: loss and accuracy per epoch, of a recipe trained now (--recipe) or of a "
            "history saved by `weightdna train --history`. boundary: the spiral model's "
            "decision boundary over a fresh spiral, for a model saved by `weightdna train "
            "spiral` (--model) or trained now. momentum: the paths of SGD with and without "
            "momentum on an elongated quadratic."
        ),
        epilog=examples(
            "weightdna plot activations -o activations.png",
            "weightdna plot training --history history.json -o training.png",
            "weightdna plot boundary --model spiral.safetensors -o boundary.png",
        ),
    )
    parser.add_argument(
        "kind", choices=["activations", "training", "boundary", "momentum"], help="which picture"
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE.png", help="PNG to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="spiral",
        help="training: the recipe to train and plot (default spiral)",
    )
    parser.add_argument(
        "--history", metavar="FILE.json", help="training: plot this saved history instead"
    )
    parser.add_argument(
        "--model", metavar="FILE", help="boundary: a spiral model saved by `weightdna train`"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs when training here")
    parser.add_argument("--seed", type=int, default=0, help="seed when training here")
    parser.add_argument(
        "--learning-rate", type=float, default=0.05, help="momentum: SGD learning rate"
    )
    parser.add_argument("--momentum", type=float, default=0.6, help="momentum: β")
    parser.add_argument("--steps", type=int, default=30, help="momentum: optimisation steps")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from weightdna import plots

    output = check_output(args.output, args.force, {".png": "a PNG picture"})
    if args.kind == "activations":
        path = plots.plot_activations(output)
    elif args.kind == "momentum":
        path = plots.plot_momentum(
            output, learning_rate=args.learning_rate, momentum=args.momentum, steps=args.steps
        )
    elif args.kind == "training":
        if args.history:
            history = _read_history(Path(args.history))
            title = f"Training ({Path(args.history).name})"
        else:
            history = _train(args.recipe, args).history
            title = f"Training the {args.recipe} model (seed {args.seed})"
        path = plots.plot_training(history, output, title=title)
    else:
        path = _boundary(args, output)
    console.print(f"picture: {path}", highlight=False)
    return 0


def _train(recipe: str, args: argparse.Namespace):  # -> TrainingRun
    from weightdna.cli._engine import TrainingProgress
    from weightdna.train import train_recipe

    with TrainingProgress(f"train {recipe}") as progress:
        return train_recipe(recipe, epochs=args.epochs, seed=args.seed, callbacks=[progress])


def _boundary(args: argparse.Namespace, output: Path) -> Path:
    from weightdna import plots
    from weightdna.data import spiral_data
    from weightdna.nn.model import Model
    from weightdna.train import (
        SPIRAL_CLASSES,
        SPIRAL_VALIDATION_OFFSET,
        SPIRAL_VALIDATION_POINTS,
    )

    if args.model:
        model = Model.load(args.model)
        first = model.layers[0] if model.layers else None
        if getattr(first, "in_features", None) != 2:
            raise InvalidInputError(
                f"{args.model} does not take 2-D points; a decision boundary needs a model "
                f"trained by `weightdna train spiral`"
            )
        title = f"Decision boundary of {Path(args.model).name}"
    else:
        model = _train("spiral", args).model
        title = f"Spiral model (seed {args.seed})"
    X, y = spiral_data(
        SPIRAL_VALIDATION_POINTS, SPIRAL_CLASSES, seed=args.seed + SPIRAL_VALIDATION_OFFSET
    )
    return plots.plot_decision_boundary(model, X, y, output, title=title)


def _read_history(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        raise ModelFileError(f"no history file at {path}; write one with `weightdna train "
                             f"... --history FILE.json`")
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable JSON history: {exc}") from exc
    if not isinstance(history, dict) or not history.get("loss"):
        raise ModelFileError(f"{path} has no 'loss' list; it is not a training history")
    return history
