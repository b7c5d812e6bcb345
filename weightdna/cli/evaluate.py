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
TASKS = ("auto", "digits", "sentences", "hf", "onnx")


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
            "embeddings and the Spearman correlation of the pairwise-similarity matrices. "
            "hf: any Hugging Face model folder (transformers, the head its config names) "
            "runs the sentences through its own tokenizer with both weight sets: cosine of "
            "each token's last hidden state, relative error, and a classification head's "
            "argmax agreement. onnx: every output of an ONNX model and of the restored one "
            "(an .onnx file, or weights put into the original graph) on --inputs or on "
            "seeded inputs made from the graph's input specs. RESTORED may be a .dna file, "
            "a weights file or a folder (hf)."
        ),
        epilog=examples(
            "weightdna evaluate digits_cnn.safetensors restored.safetensors",
            "weightdna evaluate minilm restored.safetensors --json",
            "weightdna evaluate gpt2_folder/ restored_folder/ --texts prompts.txt",
            "weightdna evaluate model.onnx restored.onnx --inputs batch.npz",
        ),
    )
    parser.add_argument(
        "original",
        help="engine model file, Hugging Face model folder (or its safetensors), ONNX file "
             "('minilm': the installed all-MiniLM-L6-v2)",
    )
    parser.add_argument("restored", help="restored model: weights (safetensors, .dna, ...), "
                                         "a folder, or an .onnx file")
    parser.add_argument("--task", choices=TASKS, default="auto",
                        help="auto: digits for an engine model, onnx for an ONNX file, "
                             "sentences for a BERT folder, hf for any other Hugging Face "
                             "folder; anything else is an error")
    parser.add_argument("--sentences", "--texts", dest="sentences", metavar="FILE",
                        help="texts, one per line (default: the bundled set of 540)")
    parser.add_argument("--inputs", metavar="X.npz",
                        help="onnx: the inputs, arrays named as the model's inputs (default: "
                             "8 seeded samples made from the input specs, or, where the graph "
                             "does not run on those, one at a time with guessed lengths and "
                             "the values it compares scalar inputs with, as compress's check)")
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
    from weightdna.evaluate.compare import restored_state

    model = _engine_model(original)
    if model is None:
        raise InvalidInputError(
            f"{original} is not an engine model file (written by `weightdna train` or "
            "Model.save); for a BERT model use --task sentences"
        )
    return {"task": "digits", **accuracy_of_restored(model, restored_state(Path(restored)))}


def _evaluate_sentences(original: str, restored: str, sentences: str | None,
                        batch_size: int) -> dict:
    from weightdna.evaluate import load_sentences, sentence_fidelity
    from weightdna.evaluate.compare import restored_state
    from weightdna.weights import load_weights

    weights, folder = _bert_folder(original)
    texts = load_sentences(sentences)
    with job_progress() as bar:
        progress = JobBar(bar, "embedding", {"original": 1, "restored": 1})
        result = sentence_fidelity(load_weights(weights).state_dict(),
                                   restored_state(Path(restored)), texts, folder,
                                   batch_size, progress)
    return {"task": "sentences", **result}


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    task = _task(args.original) if args.task == "auto" else args.task
    if task == "digits":
        result = _evaluate_digits(args.original, args.restored)
    elif task == "onnx":
        from weightdna.evaluate.compare import evaluate_onnx

        result = evaluate_onnx(args.original, args.restored, args.inputs)
    elif task == "hf":
        from weightdna.evaluate import load_sentences
        from weightdna.evaluate.compare import evaluate_hf

        result = evaluate_hf(args.original, args.restored, load_sentences(args.sentences),
                             args.batch_size)
    else:
        result = _evaluate_sentences(args.original, args.restored, args.sentences,
                                     args.batch_size)
    if args.json:
        console.print(json.dumps(result, indent=2), markup=False, highlight=False,
                      soft_wrap=True)
    else:
        print_table(_table(result, args.original, args.restored))
    return 0


def _task(original: str) -> str:
    """The task ``original`` calls for; an error listing what is supported otherwise."""
    from weightdna.evaluate.compare import SUPPORTED

    path = Path(original)
    if original == "minilm":
        return "sentences"
    if not path.exists():
        raise InvalidInputError(f"{original} does not exist; give the original model: "
                                f"{SUPPORTED}.")
    if path.suffix == ".onnx" and path.is_file():
        return "onnx"
    if path.is_file() and _engine_model(original) is not None:
        return "digits"
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if config.is_file():
        try:
            settings = json.loads(config.read_text())
            model_type, heads = settings.get("model_type"), settings.get("architectures")
        except (OSError, ValueError, AttributeError):
            model_type, heads = None, None
        # The engine's BERT forward runs a bare encoder; a model with a head runs in
        # transformers itself.
        plain = model_type == "bert" and heads in (None, [], ["BertModel"])
        return "sentences" if plain else "hf"
    raise InvalidInputError(
        f"cannot tell how to run {original}: evaluate takes {SUPPORTED}. For weights alone "
        "(a state dict or safetensors file with no model to run), `weightdna info FILE.dna` "
        "shows each tensor's error.")


def _table(result: dict, original: str, restored: str) -> Table:
    fed = f"; synthetic inputs {result['fed']}" if result.get("fed") else ""
    table = Table(title=f"{restored} against {original} ({result['task']}{fed})")
    if result["task"] in ("hf", "onnx"):
        for column in ("output", "samples", "mean cosine", "min cosine", "relative error",
                       "argmax agreement"):
            table.add_column(column, justify="left" if column == "output" else "right")
        for name, o in result["outputs"].items():
            agreement = o.get("argmax_agreement")
            table.add_row(name, str(o["samples"]), f"{o['mean_cosine']:.5f}",
                          f"{o['min_cosine']:.5f}", f"{o['relative_error']:.4g}",
                          "-" if agreement is None else f"{100 * agreement:.2f}%")
        return table
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
