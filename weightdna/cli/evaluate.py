"""`weightdna evaluate ORIGINAL RESTORED`: does the restored network still do its job?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from weightdna.cli import console, examples
from weightdna.cli._progress import JobBar, job_progress
from weightdna.cli._tables import print_table
from weightdna.errors import InvalidInputError, ModelFileError

if TYPE_CHECKING:
    from weightdna.nn.model import Model

COMMANDS = {
    "evaluate": "compare a model with its restored weights on the task it was made for",
}
TASKS = ("auto", "digits", "sentences")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help=COMMANDS["evaluate"],
        description=(
            "Load the original model and the restored weights (a safetensors file written "
            "by decompress or reconstruct, same tensor names) and measure what users care "
            "about. digits: held-out test accuracy of an engine digits model (a file written "
            "by `weightdna train`) before and after, and how often both agree. sentences: a "
            "BERT sentence encoder such as all-MiniLM-L6-v2 embeds a fixed set of sentences "
            "with both weight sets; reports the cosine between each sentence's two "
            "embeddings and the Spearman correlation of the pairwise-similarity matrices."
        ),
        epilog=examples(
            "weightdna evaluate digits_cnn.safetensors restored.safetensors",
            "weightdna evaluate minilm restored.safetensors --json",
        ),
    )
    parser.add_argument(
        "original",
        help="engine model file, or BERT model folder / safetensors ('minilm': the installed "
             "all-MiniLM-L6-v2)",
    )
    parser.add_argument("restored", help="restored weights (safetensors)")
    parser.add_argument("--task", choices=TASKS, default="auto",
                        help="auto: digits for an engine model, else sentences")
    parser.add_argument("--sentences", metavar="FILE",
                        help="sentences, one per line (default: the bundled set of 540)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _engine_model(path: str) -> Model | None:
    """The engine model saved at ``path``; None when it is not one."""
    from weightdna.nn.model import load_model

    try:
        return load_model(path)
    except ModelFileError:
        return None


def _bert_folder(original: str) -> tuple[Path, Path]:
    """(weights, folder with config.json and the tokenizer) for a BERT ``original``."""
    from weightdna.weights import minilm_path

    if original == "minilm":
        folder = minilm_path()
        return folder, folder
    path = Path(original)
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file():
        raise InvalidInputError(
            f"{folder} has no config.json: give the Hugging Face model folder of {original}"
        )
    return path, folder


def _evaluate_digits(original: str, restored: str) -> dict:
    from weightdna.evaluate import accuracy_of_restored
    from weightdna.weights import load_weights

    model = _engine_model(original)
    if model is None:
        raise InvalidInputError(
            f"{original} is not an engine model file (written by `weightdna train` or "
            "Model.save); for a BERT model use --task sentences"
        )
    return {"task": "digits", **accuracy_of_restored(model, load_weights(restored).state_dict())}


def _evaluate_sentences(original: str, restored: str, sentences: str | None,
                        batch_size: int) -> dict:
    from weightdna.evaluate import load_sentences, sentence_fidelity
    from weightdna.weights import load_weights

    weights, folder = _bert_folder(original)
    texts = load_sentences(sentences)
    with job_progress() as bar:
        progress = JobBar(bar, "embedding", {"original": 1, "restored": 1})
        result = sentence_fidelity(load_weights(weights).state_dict(),
                                   load_weights(restored).state_dict(), texts, folder,
                                   batch_size, progress)
    return {"task": "sentences", **result}


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    task = args.task
    if task == "auto":
        task = "digits" if _engine_model(args.original) is not None else "sentences"
    if task == "digits":
        result = _evaluate_digits(args.original, args.restored)
    else:
        result = _evaluate_sentences(args.original, args.restored, args.sentences,
                                     args.batch_size)
    if args.json:
        console.print(json.dumps(result, indent=2), markup=False, highlight=False,
                      soft_wrap=True)
    else:
        print_table(_table(result, args.original, args.restored))
    return 0


def _table(result: dict, original: str, restored: str) -> Table:
    table = Table(title=f"{restored} against {original} ({result['task']})")
    if result["task"] == "digits":
        for column in ("", "original", "restored", "change"):
            table.add_column(column, justify="right" if column else "left")
        table.add_row(f"test accuracy ({result['test_images']} images)",
                      f"{100 * result['original_accuracy']:.2f}%",
                      f"{100 * result['restored_accuracy']:.2f}%",
                      f"{result['delta_points']:+.2f} points")
        table.add_row("same prediction", "", "", f"{100 * result['agreement']:.2f}%")
        return table
    table.add_column("sentence embeddings")
    table.add_column("value", justify="right")
    table.add_row("sentences", str(result["sentences"]))
    table.add_row("mean cosine (original, restored)", f"{result['mean_cosine']:.5f}")
    table.add_row("5th percentile cosine", f"{result['p5_cosine']:.5f}")
    table.add_row("min cosine", f"{result['min_cosine']:.5f}")
    table.add_row("Spearman of pairwise similarities", f"{result['spearman']:.5f}")
    table.add_row("seconds", f"{result['seconds']:.1f}")
    return table
