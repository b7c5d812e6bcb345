"""`weightdna compress MODEL -o model.dna` and `weightdna decompress model.dna -o out`."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from weightdna.atomic import check_output
from weightdna.cli import console, examples, printable, warn
from weightdna.cli._progress import JobBar, job_progress
from weightdna.cli._tables import print_table
from weightdna.codec.options import COMPRESS_FORMS, DECOMPRESS_FORMS
from weightdna.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

    from weightdna.codec.compress import CompressionReport
    from weightdna.codec.container import DnaFile
    from weightdna.codec.ratecontrol import Target
    from weightdna.evaluate.outputs import OutputCheck
    from weightdna.weights import ModelWeights

COMMANDS = {
    "compress": "compress a model's weights to a .dna file under a size or accuracy target",
    "decompress": "decode a .dna file back to safetensors, a torch state dict, a model "
                  "folder or ONNX",
}

TARGET_FLAGS = {
    "bits_per_weight": "--bits-per-weight",
    "snr": "--snr",
    "psnr": "--psnr",
    "max_abs_error": "--max-abs-error",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from weightdna.codec.options import CANDIDATES, OBJECTIVES, SENSITIVITY_MODES

    parser = subparsers.add_parser(
        "compress",
        help=COMMANDS["compress"],
        description=(
            "Code every tensor of a model in the representation that meets the target at "
            "the fewest bits: quantised (trellis-coded: dependent quantisation on "
            "NNCodec's 8-state trellis, 64 states from 16384 weights; on tensors of 4096+ "
            "weights at 0.5+ bits each) and entropy-coded "
            "per context, a low-rank prediction plus coded "
            "residual, or a DNA (a SIREN) plus coded residual where cheap tests suggest "
            "structure. Only weight matrices, kernels and embeddings are quantised at the "
            "target's rate: normalisation statistics come back within a relative error of "
            "2^-10 (under 1e-3), biases, norm gains and small tensors within 2^-10 of their "
            "max |w|, "
            "integer tensors, buffers and constants (shapes, scales) exactly "
            "(`weightdna weights MODEL` shows each tensor's role). Bits are spread over "
            "tensors by equal rate-distortion slope of the --objective. Every figure "
            "printed is measured on the coded file, and tensors that lost most of "
            "their weights are named in a warning."
        ),
        epilog=examples(
            "weightdna compress model.safetensors -o model.dna --snr 30",
            "weightdna compress model.safetensors -o model.dna --bits-per-weight 3",
            "weightdna compress bert_folder/ -o bert.dna --snr 25 --calibration auto",
            "weightdna compress hf_folder/ -o model.dna --bits-per-weight 3 "
            "--calibration texts.txt",
            "weightdna compress model.safetensors -o model.dna --lossless",
            "weightdna compress hf_folder/ -o model.dna --snr 30 --include 'onnx/*'",
        ),
    )
    parser.add_argument("model", help="model file or Hugging Face model folder (never changed)")
    parser.add_argument("-o", "--output", required=True,
                        help="the .dna file to write (NAME.dna; missing folders are created)")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                        help="a model folder: also store the files matching GLOB (a path in "
                             "the folder; repeatable). Its small text files (config, "
                             "tokenizer, sentence-transformers modules) are stored anyway; "
                             "every other file is named as left out")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--bits-per-weight", type=float, metavar="B",
                       help="whole model: file size (header included) at most B bits per weight")
    group.add_argument("--snr", type=float, metavar="DB",
                       help="whole-model SNR 10·log10(Σw²/Σ(w−ŵ)²) at least DB "
                            "(every tensor's with --per-tensor)")
    group.add_argument("--psnr", type=float, metavar="DB",
                       help="PSNR 10·log10(MAX²/MSE) with MAX = max|w| of each tensor, pooled "
                            "over the model (every tensor's with --per-tensor)")
    group.add_argument("--max-abs-error", type=float, metavar="E",
                       help="every element restored within E (guaranteed)")
    group.add_argument("--lossless", action="store_true",
                       help="bit-exact (NaN, Inf and signed zeros included)")
    parser.add_argument("--per-tensor", action="store_true",
                        help="--snr/--psnr hold for every tensor, not the model as a whole")
    parser.add_argument("--per-row", action="store_true",
                        help="a step per row, proportional to the row's max |w| (as per-channel "
                             "rounding); off by default, as one step is MSE-optimal")
    parser.add_argument("--objective", choices=OBJECTIVES, default="layer",
                        help="what the allocation of a whole-model --bits-per-weight or --snr "
                             "target minimises, with no data: layer = each tensor's error "
                             "relative to its own size (per output row), counted once per "
                             "tensor, as each layer's relative error adds to the output's "
                             "(no tensor or channel starves because another is larger or "
                             "has more weights; per-row steps where they pay); relative = "
                             "the same counted per weight; mse = the pooled squared error, "
                             "one step on the raw scale (the highest whole-model SNR; what "
                             "`bench rd` compares). Chosen by the model panel's accuracy "
                             "(BENCHMARKS.md) (default: layer)")
    parser.add_argument("--representations", default=",".join(CANDIDATES),
                        metavar="LIST",
                        help=f"candidates to try, from {','.join(CANDIDATES)} (quantized always; "
                             "default: all)")
    parser.add_argument("--calibration", default=None, metavar="none|auto|synthetic|FILE",
                        help="auto: choose each weight matrix's symbols by GPTQ so that its "
                             "outputs (not its weights) change least, on calibration data "
                             "picked by the model's kind: digits training images for an "
                             "engine digits model, the bundled sentences for a Hugging Face "
                             "model folder (BERT by our own forward; any other transformers "
                             "model by transformers itself, hooking each torch.nn.Linear; "
                             "GPT-2's Conv1D and tied LM heads are left to rounding, and "
                             "named); FILE: a text file of one calibration text per line, "
                             "tokenized by the folder's own tokenizer; under "
                             "--bits-per-weight the weights of inputs the data never "
                             "reaches (always-blank pixels, dead units) become 0, so the "
                             "weight SNR stops rising while the outputs stay; synthetic: "
                             "the same on inputs distilled from an engine model itself (no "
                             "data; the digits CNN at 2 bits/weight: 7 of 10 seeds lost "
                             "over 10%% of their accuracy without it, none with it), or for "
                             "an ONNX file on the output check's synthetic inputs run by "
                             "onnxruntime, its image input matched to the first BatchNorm's "
                             "statistics where it goes through a Conv into one (Conv, Gemm "
                             "and MatMul weights stored (out, in); "
                             "the rest left to rounding, and named); same "
                             "file format (default: synthetic for an engine model under "
                             "--bits-per-weight, else none)")
    parser.add_argument("--sensitivity", choices=SENSITIVITY_MODES,
                        default=None,
                        help="auto: measure how much each tensor's error moves the model's "
                             "outputs (on the same calibration data as --calibration) and "
                             "spend bits where they matter: the downstream figures rise, "
                             "the weight SNR falls; synthetic: the same with no data, on "
                             "random token sequences for a BERT model, drawn by a token "
                             "prior from vocab.txt's order that also weighs the word "
                             "embedding's rows, and whose biases are then corrected for "
                             "the coded weights' error on those tokens (MiniLM's mean "
                             "cosine 0.818 → 0.928 at 2 bits/weight, 0.976 → 0.986 at 3), "
                             "on inputs "
                             "distilled from an engine model itself, and for an ONNX file "
                             "(with onnxruntime) on the output check's synthetic inputs "
                             "(none where the original gives the same output for every one; "
                             "not the default there: on magika and Silero VAD it kept fewer "
                             "decisions than none); none: the --objective "
                             "alone (default: synthetic for a BERT model under a whole-model "
                             "target, else none)")
    parser.add_argument("--columns", choices=("none", "synthetic"), default=None,
                        help="synthetic: code a BERT model's linear weights with a factor per "
                             "input column, from E[x²] of each layer's inputs on random "
                             "tokens drawn by vocab.txt's order (no data), so columns whose "
                             "inputs are large get finer steps; the factors are stored "
                             "(format version 9, about 0.004 bits/weight); MiniLM's mean "
                             "cosine 0.935 → 0.941 at 2 bits/weight, 0.9877 → 0.9883 at 3, "
                             "0.9969 → 0.9971 at 4 (default: synthetic with --sensitivity "
                             "synthetic, the default for a BERT model, under a whole-model "
                             "target without --ray or --calibration; else none)")
    parser.add_argument("--bias-correction", choices=("none", "synthetic"), default=None,
                        help="synthetic: after the weights are coded, move each bias by the "
                             "shift of its layer's mean output, stage by stage, with no data: "
                             "on random tokens for a BERT model, or for an ONNX file (with "
                             "onnxruntime) on the output check's synthetic inputs, drawn "
                             "to give a first Conv's BatchNorm its running statistics where "
                             "the image input has one (Conv, "
                             "BatchNormalization, Gemm and MatMul+Add biases; a shift over "
                             "half its bias's size is not made: noise far from the data's "
                             "scale measures those); rapidocr's recognizer at 3 bits/weight "
                             "read 3%% → 64%% of lines as the original does; none: "
                             "no correction (default: synthetic for a BERT model with "
                             "--sensitivity synthetic and for an ONNX file under a "
                             "whole-model target whose image input goes through a Conv "
                             "into a BatchNorm, so that the inputs match the data's scale; "
                             "else none: on Silero VAD at 4 bits/weight the correction on "
                             "unmatched inputs kept 82%% of its speech decisions, none "
                             "95%%)")
    parser.add_argument("--check", choices=("auto", "none"), default="auto",
                        help="auto: where the model can be run (an engine model, a BERT folder, "
                             "ONNX with onnxruntime), compare the restored model's outputs "
                             "with the original's on a few synthetic inputs and warn if they "
                             "diverge (default: auto)")
    parser.add_argument("--workers", type=int, metavar="N", default=None,
                        help="processes coding tensors side by side, each reading its own "
                             "tensors from the model's file (safetensors or .npz; other "
                             "formats run in one process); the file is the same for any N "
                             "(default: every core this process may use for a model of 4M "
                             "weights or more, where they pay for their start; else one "
                             "process)")
    parser.add_argument("--ray", nargs="?", const=True, default=False, metavar="ADDRESS",
                        help="run the tensors' tasks on the Ray cluster at ADDRESS (as "
                             "ray.init takes it), or on a local one of --workers CPUs when "
                             "no address is given; every node must see MODEL at the same "
                             "path; the file is the same as a local run's (needs "
                             "pip install 'weightdna[distributed]')")
    parser.add_argument("--resume", action="store_true",
                        help="finish a compress that was killed: it left OUTPUT.work/ (a "
                             "manifest and the tensors it had coded); only what is missing is "
                             "done, and the file is the one an unbroken run writes. Without "
                             "it, a leftover OUTPUT.work/ is started over")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    parser.set_defaults(func=run_compress)

    restore = subparsers.add_parser(
        "decompress",
        help=COMMANDS["decompress"],
        description=(
            "Decode every tensor of a .dna file (checking every checksum) and write them "
            "with their original names, shapes and dtypes, in the form the output's name "
            "says: NAME.safetensors; NAME.pt or NAME.pth, a torch state dict "
            "(torch.load(path, weights_only=True)); DIR/ (a trailing slash, or an existing "
            "folder), the model's folder: the weights, sharded as the source was, and every "
            "file stored with them (config, tokenizer), ready for "
            "transformers.AutoModel.from_pretrained(DIR); NAME.onnx, the ONNX model, for a "
            "model compressed from ONNX. Missing folders are created."
        ),
        epilog=examples(
            "weightdna decompress model.dna -o restored.safetensors",
            "weightdna decompress model.dna -o restored/",
            "weightdna decompress model.dna -o restored.pt",
            "weightdna evaluate model.safetensors restored.safetensors   # does it still work?",
        ),
    )
    restore.add_argument("file", help="a .dna file written by `weightdna compress`")
    restore.add_argument("-o", "--output", required=True,
                         help="NAME.safetensors, NAME.pt, NAME.pth, DIR/ or NAME.onnx")
    restore.add_argument("--workers", type=int, metavar="N", default=None,
                         help="processes decoding tensors side by side, each writing its "
                              "tensors into their place in OUTPUT; the same file for any N "
                              "(default: every core this process may use for files of 200M "
                              "weights or more, where they pay for their start; else one)")
    restore.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    restore.set_defaults(func=run_decompress)


def _workers(args: argparse.Namespace, weights: int | None = None) -> int | None:
    """--workers (refused below 1); by default every core for a model of ``weights``
    PARALLEL_ENCODE_WEIGHTS or more (or with --ray), else None: this process."""
    if args.workers is None:
        from weightdna.codec.compress import PARALLEL_ENCODE_WEIGHTS
        from weightdna.codec.workers import default_workers

        large = weights is None or weights >= PARALLEL_ENCODE_WEIGHTS
        return default_workers() if large or getattr(args, "ray", False) else None
    if args.workers < 1:
        raise InvalidInputError(f"--workers must be 1 or more, not {args.workers}.")
    return args.workers


def _target(args: argparse.Namespace) -> Target:
    from weightdna.codec.ratecontrol import Target

    if args.lossless:
        if args.per_tensor:
            raise InvalidInputError("--per-tensor applies to --snr and --psnr.")
        return Target("lossless")
    for kind, flag in TARGET_FLAGS.items():
        value = getattr(args, kind)
        if value is not None:
            if args.per_tensor and kind not in ("snr", "psnr"):
                raise InvalidInputError(f"--per-tensor applies to --snr and --psnr, not {flag}.")
            return Target(kind, value, per_tensor=args.per_tensor)
    raise InvalidInputError("give one target: " + ", ".join(TARGET_FLAGS.values())
                            + " or --lossless.")


def _target_warnings(target: Target, weights: ModelWeights) -> list[str]:
    """Targets that are valid but cannot mean what the user thinks: said, not refused."""
    import torch

    floats = [i for i in weights if getattr(torch, i.dtype).is_floating_point and i.numel]
    if target.kind in ("snr", "psnr") and target.value <= 0:
        flag = TARGET_FLAGS[target.kind]
        return [f"{flag} {target.value:g} allows an error as large as the weights themselves "
                "(0 dB: every weight may become 0); SNR targets that keep a model working "
                "are usually 20-40 dB."]
    if target.kind == "max_abs_error" and floats:
        peak, name = max((float(weights.tensor(i.name).abs().max()), i.name) for i in floats)
        if target.value >= peak:
            return [f"--max-abs-error {target.value:g} is not below the largest |weight| "
                    f"({peak:.3g}, {name}): every weight may become 0. Ask for an error well "
                    f"below the weights' size (e.g. --max-abs-error {peak / 100:.2g}), or "
                    "for an SNR: targets that keep a model working are usually 20-40 dB."]
    if target.kind in ("snr", "psnr") and floats:
        # Rounding to a float format of m mantissa bits alone gives about 6.02·m dB.
        widest = max(floats, key=lambda i: torch.finfo(getattr(torch, i.dtype)).bits)
        ceiling = 6.02 * (1 - math.log2(torch.finfo(getattr(torch, widest.dtype)).eps))
        if target.value > ceiling:
            return [f"{TARGET_FLAGS[target.kind]} {target.value:g} is above the about "
                    f"{ceiling:.0f} dB that {widest.dtype} itself can hold: every tensor will "
                    "be stored exactly; --lossless says so directly."]
    if target.kind == "bits_per_weight" and weights.total_numel:
        source = 8 * sum(i.nbytes for i in weights) / weights.total_numel
        if target.value >= source:
            return [f"--bits-per-weight {target.value:g} is not below the {source:.3g} bits "
                    "per weight the source itself takes: nothing needs to be given up, and the "
                    "file may be no smaller than the original; --lossless keeps every bit."]
    return []


SENSITIVITY_DATA = {"auto": "the calibration data of the model's kind",
                    "synthetic": "synthetic inputs, no data"}


def _plan(target: Target) -> dict[str, int]:
    """The stages compress_model reports, with their expected passes (reading: each tensor's
    first pass, which codes those its role fixes): a whole-model target
    allocates and encodes every tensor once per round of its rate control (up to
    MEASURE_ROUNDS; usually two or three)."""
    if not target.whole_model:
        return {"reading": 1, "analysing": 1, "writing": 1}
    return {"reading": 1, "analysing": 1, "allocating": 3, "encoding": 3, "writing": 1}


def _db(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "exact"
    return f"{value:.2f}"


def _with_unit(value: float | None) -> str:
    text = _db(value)
    return text if text == "exact" else f"{text} dB"


def _table(report: CompressionReport) -> Table:
    table = Table(title=f"{report.output} ({report.target})")
    table.add_column("name")
    table.add_column("role")
    table.add_column("representation")
    for column in ("bits/weight", "SNR dB", "PSNR dB", "max |error|", "zeroed"):
        table.add_column(column, justify="right")
    for t in report.tensors:
        bpw = t.bits_per_weight
        table.add_row(t.name, t.role, t.representation, "-" if bpw is None else f"{bpw:.3f}",
                      _db(t.snr_db), _db(t.psnr_db), f"{t.max_abs_error:.3g}",
                      "-" if t.zeroed is None else f"{t.zeroed:.0%}")
    return table


def _as_json(report: CompressionReport, check: OutputCheck | None, sensitivity: str,
             args: argparse.Namespace, corrected: bool) -> str:
    from weightdna.codec.quality import warnings

    def number(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else x

    return json.dumps({
        "output": str(report.output),
        "target": report.target,
        "file_bytes": report.file_bytes,
        "original_bytes": report.original_bytes,
        "weights": report.weights,
        "bits_per_weight": report.bits_per_weight,
        "ratio": report.ratio,
        "snr_db": number(report.snr_db),
        "psnr_db": number(report.psnr_db),
        "seconds": report.seconds,
        "sensitivity": sensitivity,
        "files": list(report.files),
        "files_bytes": report.files_bytes,
        "left_out": [{"path": p, "why": why} for p, why in report.left_out],
        "warnings": warnings(report.quality(), number(report.snr_db))
        + ([diverged] if (diverged := _diverged(check, args, corrected)) else []),
        "output_check": None if check is None else {
            "kind": check.kind, "samples": check.samples, "worst_cosine": check.worst_cosine,
            "mean_cosine": check.mean_cosine,
            "probability_distance": check.probability_distance,
            "top_changed": check.top_changed, "lead_change": check.lead_change,
            "diverged": check.diverged, "informative": check.informative,
            "fed": check.fed},
        "tensors": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "role": t.role,
             "zeroed": t.zeroed, "representation": t.representation, "bytes": t.bytes,
             "bits_per_weight": t.bits_per_weight, "snr_db": number(t.snr_db),
             "psnr_db": number(t.psnr_db), "max_abs_error": t.max_abs_error}
            for t in report.tensors
        ],
    }, indent=2)


def run_compress(args: argparse.Namespace) -> int:
    from weightdna.codec.compress import compress_model
    from weightdna.codec.quality import summary, warnings
    from weightdna.codec.ratecontrol import CANDIDATES
    from weightdna.evaluate.defaults import CORRECTING_STAGE, compress_inputs
    from weightdna.weights import load_weights

    target = _target(args)
    representations = [r.strip() for r in args.representations.split(",") if r.strip()]
    unknown = set(representations) - set(CANDIDATES)
    if unknown:
        raise InvalidInputError(f"unknown representation(s) {', '.join(sorted(unknown))}; "
                                f"choose from {', '.join(CANDIDATES)}.")
    if "quantized" not in representations:
        representations.append("quantized")
    check_output(args.output, args.force, COMPRESS_FORMS)
    weights = load_weights(args.model)
    for warning in _target_warnings(target, weights):
        warn(warning)
    from weightdna.bert import EMBEDDING_TENSORS
    from weightdna.evaluate.calibration import is_onnx_file

    notes: list[str] = []  # what measuring the sensitivities said (an ONNX graph's)
    with job_progress() as bar:
        def progress_for(stages: list[str]) -> JobBar:
            plan = dict.fromkeys((s for s in stages if s != CORRECTING_STAGE), 1)
            plan.update(_plan(target))
            if CORRECTING_STAGE in stages:  # after encoding, before writing
                plan = {**plan, CORRECTING_STAGE: 1}
                plan["writing"] = plan.pop("writing")
            return JobBar(bar, "compress", plan)

        inputs = compress_inputs(args.model, weights, target, include=args.include,
                                 calibration=args.calibration, sensitivity=args.sensitivity,
                                 columns=args.columns, bias_correction=args.bias_correction,
                                 ray=args.ray, warn=warn, note=notes.append,
                                 progress_for=progress_for)
        report = compress_model(weights, Path(args.output), target,
                                representations=representations, per_row=args.per_row,
                                objective=args.objective, overwrite=args.force,
                                workers=_workers(args, weights.total_numel), ray=args.ray,
                                resumable=True, resume=args.resume, **inputs.options())
    sensitivity, mode, adjust = inputs.sensitivity, inputs.mode, inputs.adjust
    check = _check_outputs(args.model, report) if args.check == "auto" else None
    onnx_corrected = adjust is not None and is_onnx_file(args.model)
    if args.json:
        console.print(_as_json(report, check, "none" if sensitivity is None else mode, args,
                               onnx_corrected),
                      markup=False, highlight=False, soft_wrap=True)
        return 0
    print_table(_table(report))
    console.print(
        f"wrote {printable(report.output)}: {report.file_bytes:,} bytes, "
        f"{report.bits_per_weight:.3f} bits per weight on disk ({report.weights:,} weights), "
        f"ratio {report.ratio:.2f} against the original {report.original_bytes:,} bytes; "
        f"overall SNR {_with_unit(report.snr_db)}, PSNR {_with_unit(report.psnr_db)} "
        f"(MAX = max|w| per tensor); {report.seconds:.1f} s.",
        highlight=False,
    )
    if target.kind != "lossless" and report.snr_db is not None and math.isinf(report.snr_db):
        console.print(f"every tensor is stored exactly: {TARGET_FLAGS[target.kind]} "
                      f"{target.value:g} asks for no less, or leaves room for it here; "
                      "--lossless says so directly.", highlight=False, markup=False)
    for line in notes:
        console.print(line, highlight=False, markup=False)
    if sensitivity is not None:
        tokens = sum(1 for name in inputs.row_weights if name.endswith(EMBEDDING_TENSORS[0]))
        linear = len(inputs.row_weights) - tokens
        console.print(f"bits spent by output sensitivities measured on {SENSITIVITY_DATA[mode]} "
                      f"(--sensitivity {mode})"
                      + ("; the word embedding's rows weighed by how often vocab.txt's order "
                         "says their tokens occur" if tokens else "")
                      + (f"; the rows of {linear} linear weights by how much their outputs "
                         "move the embedding on random tokens" if linear else "")
                      + ("; biases corrected for the coded weights' error on random tokens"
                         if adjust is not None and not is_onnx_file(args.model) else ""),
                      highlight=False)
    if inputs.column_factors:
        console.print(f"{len(inputs.column_factors)} linear weights coded with a factor per "
                      "input column, from their inputs on random tokens (--columns "
                      "synthetic, format version 9"
                      + ("; --columns none codes none)" if args.columns is None else ")"),
                      highlight=False)
    if inputs.calibration is not None and args.calibration is None:
        console.print("weight matrices' symbols chosen by GPTQ on inputs distilled from the "
                      "model, no data (--calibration synthetic, the default for an engine "
                      "model): their weight SNR falls while the outputs stay closer; "
                      "--calibration none skips it", highlight=False)
    if report.files:
        count = f"{len(report.files)} file{'' if len(report.files) == 1 else 's'}"
        console.print(f"stored {count} of the model with the weights ({report.files_bytes:,} "
                      f"bytes): {printable(', '.join(report.files))}.", highlight=False)
    for path, why in report.left_out:
        warn(f"left out {printable(path)} ({why}); store it with --include "
             f"{printable(repr(path))}.")
    quality = report.quality()
    line = summary(quality)
    if line:
        console.print(printable(line), highlight=False)
    for warning in warnings(quality, report.snr_db):
        warn(warning)
    if check is None and args.check == "auto" and Path(args.model).suffix == ".onnx":
        console.print("outputs not checked: the graph did not run on synthetic inputs made "
                      "from its input specs, nor on a few guesses of lengths and of the "
                      "values it compares scalar inputs with (or onnxruntime is not "
                      "installed); judge it on "
                      "real inputs: weightdna evaluate MODEL.onnx RESTORED.onnx --inputs "
                      "X.npz", highlight=False, markup=False)
    if check is not None:
        console.print(check.describe(), highlight=False, markup=False)
        if diverged := _diverged(check, args, onnx_corrected):
            warn(diverged)
    return 0


def _diverged(check: OutputCheck | None, args: argparse.Namespace,
              corrected: bool = False) -> str | None:
    """The warning for an output check that found the outputs diverged, else None: what to
    do (`_more_bits`; where an ONNX graph's biases were corrected, also without that: Silero
    VAD at 4 and 6 bits per weight kept 82% and 80% of its speech decisions with the
    correction on unmatched inputs, the default then and --bias-correction synthetic now,
    95% and 99% with --bias-correction none, BENCHMARKS.md, "The output check on
    BatchNorm-matched inputs"), and how to judge the file on real inputs."""
    if check is None or not check.diverged:
        return None
    from weightdna.evaluate.calibration import is_onnx_file

    real = " --inputs X.npz (real inputs)" if is_onnx_file(args.model) else ""
    without = (", and once with --bias-correction none (the correction fits synthetic "
               "inputs, which can mislead it)" if corrected else "")
    return (f"the restored model's outputs diverge from the original's ({check.warning()}): "
            f"it may no longer do its job. Compress again with {_more_bits(args)}{without}; "
            f"judge the file on real inputs: weightdna evaluate {args.model} "
            f"{args.output}{real}.")


def _more_bits(args: argparse.Namespace) -> str:
    """About one more bit per weight than ``args``' target asked for (6 dB of SNR, half the
    error): the files the output check warned on kept their function one bit up (the CLI's
    defaults; BENCHMARKS.md, "The output check on BatchNorm-matched inputs": the angle
    classifier 72% → 96% of its calls from 3 to 4 bits per weight, the text recognizer 67%
    → 86% of its lines, Silero VAD 84% → 90% of its decisions from 2 to 3)."""
    if args.bits_per_weight is not None:
        return f"more bits per weight (--bits-per-weight {args.bits_per_weight + 1:g})"
    if args.snr is not None:
        return f"a higher SNR (--snr {args.snr + 6:g})"
    if args.psnr is not None:
        return f"a higher PSNR (--psnr {args.psnr + 6:g})"
    if args.max_abs_error is not None:
        return f"a smaller error (--max-abs-error {args.max_abs_error / 2:g})"
    return "more bits per weight"


def _check_outputs(model: str, report: CompressionReport) -> OutputCheck | None:
    """`weightdna.evaluate.outputs.check_outputs` on the file just written."""
    from weightdna.codec.container import read_dna_file
    from weightdna.evaluate.outputs import check_outputs

    dna = read_dna_file(report.output)
    return check_outputs(model, _Decoded(dna))


class _Decoded(Mapping):
    """A .dna file's tensors, each decoded when read (the check holds one model at a time)."""

    def __init__(self, dna: DnaFile) -> None:
        self.dna = dna

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.dna.names:
            raise KeyError(name)
        return self.dna.tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.dna.names)

    def __len__(self) -> int:
        return len(self.dna.names)


def run_decompress(args: argparse.Namespace) -> int:
    from weightdna.codec.compress import decompress_model

    started = time.perf_counter()
    check_output(args.output, args.force, DECOMPRESS_FORMS)
    with job_progress() as bar:
        progress = JobBar(bar, "decompress")
        count, size = decompress_model(args.file, args.output, overwrite=args.force,
                                       progress=progress,
                                       workers=None if args.workers is None else _workers(args))
    console.print(f"wrote {printable(args.output)}: {count} tensors, {size:,} bytes, "
                  f"{time.perf_counter() - started:.1f} s.", highlight=False)
    return 0
