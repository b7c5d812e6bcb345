"""The model panel: does the default keep networks working that it was never tuned on?

    .venv/bin/python bench/panel.py
        [--models mlp,cnn,bncnn,onnx,detector,minilm,magika,silero,ocr,ocrrec,ocrcls]
        [--rates 1,2,3,4,6,8] [--objectives relative,mse] [--sensitivity none,synthetic]
        [--calibration none,synthetic] [--bias-correction none,synthetic,batchnorm]
        [--out results/panel]

Each model is compressed with `compress_model` at a whole-model bits-per-weight target
(no calibration data), decompressed and judged by what it does. ``--objectives`` also takes
the measuring objectives ``layer:α`` and ``share`` (`weightdna.codec.ratecontrol.SHARE`):

* ``mlp``, ``cnn``: the engine's digits models (the recipes, seed 0), held-out accuracy;
* ``bncnn``: `weightdna.evaluate.panel.BatchNormCNN` trained in PyTorch, two output
  channels of its second conv scaled ×300 with their BatchNorm statistics (same function:
  outlier channels, max |w| about 10³× the median), held-out accuracy;
* ``onnx``: the same network exported to ONNX with opaque initializer names (BatchNorm
  kept as an operator, the Resize scales an initializer), run by onnxruntime;
* ``detector``: the BatchNorm CNN with one channel scaled ×10⁴ (a running variance near
  10⁸ beside small weights), as ONNX with opaque names (nothing says "running_var"),
  accuracy, and the SNR of that conv's other channels against the same when the conv is
  coded alone at the same rate;
* ``minilm``: all-MiniLM-L6-v2, mean cosine of restored to original sentence embeddings;
* ``magika``, ``silero``, ``ocr``, ``ocrrec``, ``ocrcls``: real models from pip packages
  we never tuned on (`weightdna.evaluate.unseen`): magika's file-type labels of real files
  on disk, Silero VAD's speech decisions on synthetic speech-like audio, rapidocr's
  PP-OCRv4 detector's text pixels (IoU) on text rendered with PIL, its recognizer's
  strings (lines read identically, character error rate) and its angle classifier's
  0°/180° calls on text lines rendered with PIL, as the share of the original's
  the restored model keeps (and the largest change of a probability), and the worst
  output cosine of `weightdna compress`'s check on synthetic inputs ("not run" where it
  cannot run the model, "cannot tell" where the original's outputs are the same for every
  synthetic input).

``--sensitivity synthetic`` and ``--calibration synthetic`` add points with data-free
sensitivities and GPTQ calibration (random token sequences for MiniLM, sensitivities
only, with its word embedding's rows weighed by the token prior,
`weightdna.evaluate.sensitivity.row_weights_for`; inputs distilled from the model itself
for the digits models, both; for the ONNX models, on the output check's synthetic inputs,
sensitivities by `weightdna.evaluate.onnx_sensitivity` (none where they cannot tell: no
point is added then) and GPTQ Hessians by `weightdna.evaluate.onnx_calibration`, measured
once per model): what
`weightdna compress --bits-per-weight B` does by default for those models is
``--sensitivity synthetic`` (MiniLM) and both (digits).

``--bias-correction synthetic`` adds points with an ONNX graph's biases corrected for the
coded weights' error on synthetic inputs (`weightdna.evaluate.onnx_correction`, objective
"+bias"): what `weightdna compress --bias-correction synthetic` does for a graph without a
first BatchNorm; `compress_model`, which the panel calls, does it only when asked.
``--bias-correction batchnorm``: the same on inputs drawn so that the graph's first
BatchNorm sees its running statistics (`weightdna.evaluate.bn_inputs`; objective "+bias-bn";
a graph without one gets the same inputs as "synthetic"): what `weightdna compress` does
by default for an ONNX file under a whole-model target where the graph has that
BatchNorm; for a graph without one the default is no correction (the "none" points).

Besides the judge, each point reports the worst tensor's SNR and the largest share of a
tensor's non-zero weights restored as 0. Writes OUT/panel.json and OUT/panel.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from weightdna.codec.compress import CompressionReport, compress_model, decompress_model
from weightdna.codec.options import OBJECTIVES
from weightdna.codec.ratecontrol import Target
from weightdna.errors import WeightDNAError
from weightdna.weights import load_weights

State = dict[str, torch.Tensor]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tensor_figures(report: CompressionReport) -> tuple[float, str, float, str]:
    """(worst SNR, its tensor, largest zeroed share, its tensor) over the lossy tensors, as
    `compress_model` measured them on the coded file."""
    lossy = [t for t in report.tensors if t.snr_db is not None]
    worst = min(lossy, key=lambda t: t.snr_db, default=None)
    zeroed = max((t for t in report.tensors if t.zeroed is not None),
                 key=lambda t: t.zeroed, default=None)
    return (math.inf if worst is None else worst.snr_db, "" if worst is None else worst.name,
            0.0 if zeroed is None else zeroed.zeroed, "" if zeroed is None else zeroed.name)


class Subject:
    """A model file, a judge of restored weights, and the judge's figure on the original.

    A judge returns its figure, or a dict holding it under ``unit`` beside other figures
    (reported with the point)."""

    def __init__(self, name: str, path: Path, judge: Callable[[State], float | dict],
                 unit: str):
        self.name, self.path, self.unit = name, path, unit
        self._judge = judge
        self.reference, self.reference_extras = self.judge(load_weights(path).state_dict())

    def judge(self, state: State) -> tuple[float, dict]:
        figures = self._judge(state)
        if isinstance(figures, dict):
            figures = dict(figures)
            return figures.pop(self.unit), figures
        return figures, {}


def digits_subject(name: str, workdir: Path) -> Subject:
    from weightdna.evaluate import accuracy_of_restored
    from weightdna.train import train_digits_cnn, train_digits_mlp

    run = (train_digits_mlp if name == "mlp" else train_digits_cnn)()
    path = run.model.save(workdir / f"{name}.safetensors")
    return Subject(name, path,
                   lambda s: accuracy_of_restored(run.model, s)["restored_accuracy"], "accuracy")


def batchnorm_subject(name: str, workdir: Path) -> Subject:
    from weightdna.evaluate.panel import (
        export_onnx,
        give_outlier_channels,
        onnx_accuracy,
        torch_accuracy,
        train_batchnorm_cnn,
    )

    run = train_batchnorm_cnn()
    if name == "detector":
        give_outlier_channels(run.model, [5], 1e4)
    else:
        give_outlier_channels(run.model, [3, 17], 300.0)
    if name in ("onnx", "detector"):
        path = export_onnx(run.model, workdir / f"{name}.onnx")
        return Subject(name, path, lambda s: onnx_accuracy(path, s), "accuracy")
    path = workdir / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, str(path))
    return Subject(name, path, lambda s: torch_accuracy(run.model, s), "accuracy")


def minilm_subject() -> Subject:
    from weightdna.bert import BertConfig, BertEncoder, load_tokenizer
    from weightdna.evaluate import compare_embeddings, embed_sentences, load_sentences
    from weightdna.weights import minilm_path

    folder = minilm_path()
    config, tokenizer = BertConfig.from_json(folder / "config.json"), load_tokenizer(folder)
    sentences = load_sentences()
    reference = embed_sentences(BertEncoder(load_weights(folder).state_dict(), config),
                                sentences, tokenizer)

    def judge(state: State) -> float:
        restored = embed_sentences(BertEncoder(state, config), sentences, tokenizer)
        return compare_embeddings(reference, restored)["mean_cosine"]

    return Subject("minilm", folder, judge, "cosine")


UNSEEN = ("magika", "silero", "ocr", "ocrrec", "ocrcls")  # weightdna.evaluate.unseen's


def unseen_subject(name: str) -> Subject:
    """One of `UNSEEN` (`weightdna.evaluate.unseen.judge_for`): agreement of the restored
    model's decisions (labels, speech decisions, text pixels, read lines, angle calls) with
    the original's."""
    from weightdna.evaluate import unseen

    path, judge, inputs = unseen.judge_for(name)
    say(f"  {name}: {inputs}")
    return Subject(name, path, lambda s: judge(path, s), "agreement")


DETECTOR_CHANNEL = 5


def detector_conv(subject: Subject) -> str:
    """The name of the conv whose channel was scaled: the kernel with the largest |w|."""
    weights = load_weights(subject.path)
    kernels = [i.name for i in weights.infos if i.ndim == 4]
    return max(kernels, key=lambda n: float(weights.tensor(n).abs().max()))


def small_channels_snr(original: torch.Tensor, restored: torch.Tensor) -> float:
    """SNR of the detector conv's channels other than the one scaled 10⁴×."""
    keep = [c for c in range(original.shape[0]) if c != DETECTOR_CHANNEL]
    a, b = original[keep].double(), restored[keep].double()
    return 10 * math.log10(float((a * a).sum()) / max(float(((a - b) ** 2).sum()), 1e-300))


def alone_snr(subject: Subject, rate: float, objective: str, workdir: Path) -> float:
    """`small_channels_snr` of the detector conv coded alone at ``rate`` bits per weight."""
    from weightdna.codec import read_dna_file
    from weightdna.weights import ModelWeights

    conv = detector_conv(subject)
    tensor = load_weights(subject.path).tensor(conv)
    weights = ModelWeights.from_tensors({conv: tensor})
    try:
        compress_model(weights, workdir / "alone.dna", Target("bits_per_weight", rate),
                       objective=objective, overwrite=True)
    except WeightDNAError:
        return math.nan
    return small_channels_snr(tensor, read_dna_file(workdir / "alone.dna").tensor(conv))


def run_point(subject: Subject, rate: float, objective: str, workdir: Path,
              sensitivity: dict[str, float] | None = None,
              calibration: Callable[[], object] | None = None,
              row_weights: dict | None = None, correct: str = "", files: bool = True) -> dict:
    """One point; ``files``: the model's stored files in the budget (`collect_files`)."""
    from weightdna.codec.bundle import StoredFiles, collect_files

    weights = load_weights(subject.path)
    dna, out = workdir / "model.dna", workdir / "restored.safetensors"
    plain = objective
    if sensitivity is not None:
        objective += "+synthetic"
    if calibration is not None:
        objective += "+gptq-synthetic"
    adjust = None
    if correct:
        from weightdna.evaluate.onnx_correction import onnx_bias_correction

        objective += "+bias" if correct == "synthetic" else "+bias-bn"
        adjust = onnx_bias_correction(subject.path, note=lambda line: say(f"  {line}"),
                                      inputs="normal" if correct == "synthetic"
                                      else "batchnorm")
    started = time.perf_counter()
    try:
        report = compress_model(weights, dna, Target("bits_per_weight", rate),
                                objective=plain, sensitivity=sensitivity,
                                row_weights=row_weights or None,
                                calibration=calibration() if calibration else None,
                                adjust=adjust, overwrite=True,
                                files=collect_files(weights) if files else StoredFiles())
    except WeightDNAError as exc:
        say(f"  {subject.name} {objective} {rate}: {exc}")
        return {"model": subject.name, "objective": objective, "rate": rate, "error": str(exc)}
    seconds = time.perf_counter() - started
    decompress_model(dna, out, overwrite=True)
    original, restored = weights.state_dict(), load_weights(out).state_dict()
    try:
        figure, extras = subject.judge(restored)
    except Exception as exc:  # noqa: BLE001 - a restored graph that no longer runs scores 0
        say(f"  {subject.name} {objective} {rate}: the restored model does not run ({exc})")
        figure, extras = 0.0, {}
    worst, worst_name, zeroed, zeroed_name = tensor_figures(report)
    row = {"model": subject.name, "objective": objective, "rate": rate,
           "bits_per_weight": report.bits_per_weight, subject.unit: figure,
           "files_bytes": report.files_bytes,
           "reference": subject.reference, "pooled_snr_db": report.snr_db,
           "worst_snr_db": worst, "worst_tensor": worst_name, "max_zeroed": zeroed,
           "max_zeroed_tensor": zeroed_name, "seconds": seconds, **extras}
    if subject.unit == "accuracy":
        row["delta_points"] = 100 * (figure - subject.reference)
        row["kept_share"] = figure / subject.reference
    if subject.name in UNSEEN:  # what `weightdna compress` would have said
        from weightdna.evaluate.outputs import check_outputs

        check = check_outputs(subject.path, restored)
        row["check_worst_cosine"] = None if check is None else check.worst_cosine
        row["check_informative"] = None if check is None else check.informative
    if subject.name == "detector":
        conv = detector_conv(subject)
        row["conv_snr_db"] = small_channels_snr(original[conv], restored[conv])
        row["conv_alone_snr_db"] = alone_snr(subject, rate, plain, workdir)
    say(f"  {subject.name:8s} {objective:8s} {rate:4g} -> {report.bits_per_weight:.3f} bpw  "
        f"{subject.unit} {figure:.4f} (ref {subject.reference:.4f})  worst SNR {worst:.1f} dB "
        f"({worst_name})  zeroed {zeroed:.2f}")
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | objective | target bpw | bpw | figure (Δ) | pooled SNR | worst tensor "
             "SNR | most zeroed |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['objective']} | {r['rate']:g} | — | "
                         f"{r['error']} | | | |")
            continue
        if "delta_points" in r:
            figure = f"{100 * r['accuracy']:.2f}% ({r['delta_points']:+.2f})"
        elif "cer" in r:  # ocrrec: lines read as the original reads them
            figure = (f"{100 * r['agreement']:.2f}% lines same ({100 * r['ends_agreement']:.2f}% "
                      f"but for end spaces), CER {100 * r['cer']:.2f}%; "
                      f"truth {100 * r['truth_accuracy']:.1f}%, CER "
                      f"{100 * r['truth_cer']:.2f}%")
        elif "agreement" in r:
            figure = f"{100 * r['agreement']:.2f}% agree, max Δp {r['max_delta']:.3f}"
            if "turn_agreement" in r:
                figure += (f", turns {100 * r['turn_agreement']:.2f}% same, truth "
                           f"{100 * r['truth_accuracy']:.1f}%")
            if "regions_kept" in r:
                figure += f", {100 * r['regions_kept']:.0f}% regions kept"
            if "check_worst_cosine" in r:
                check = r["check_worst_cosine"]
                figure += "; check " + ("not run" if check is None
                                        else "cannot tell" if not r.get("check_informative",
                                                                          True)
                                        else f"{check:.4f}")
        else:
            figure = f"{r['cosine']:.4f}"
        if "conv_snr_db" in r:
            figure += f"; conv {r['conv_snr_db']:.1f} dB (alone {r['conv_alone_snr_db']:.1f})"
        lines.append(f"| {r['model']} | {r['objective']} | {r['rate']:g} | "
                     f"{r['bits_per_weight']:.3f} | {figure} | {r['pooled_snr_db']:.1f} | "
                     f"{r['worst_snr_db']:.1f} | {r['max_zeroed']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,bncnn,onnx,detector")
    parser.add_argument("--rates", default="1,2,3,4,6,8")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--sensitivity", default="none",
                        help="none, synthetic or none,synthetic: also with data-free "
                             "sensitivities (random token sequences for MiniLM, distilled "
                             "inputs for the digits models)")
    parser.add_argument("--calibration", default="none",
                        help="none, synthetic or none,synthetic: also with GPTQ on inputs "
                             "distilled from the model (digits models) or on synthetic "
                             "inputs (ONNX models)")
    parser.add_argument("--bias-correction", default="none",
                        help="none, synthetic, batchnorm, joined by commas: also with the "
                             "biases of an ONNX graph corrected for the coded weights' error "
                             "on synthetic inputs (`weightdna.evaluate.onnx_correction`; "
                             "batchnorm: inputs matched to its first BatchNorm)")
    parser.add_argument("--no-files", action="store_true",
                        help="leave the model's stored files (an ONNX graph) out of the budget")
    parser.add_argument("--out", type=Path, default=Path("results/panel"))
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    objectives = args.objectives.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.models.split(","):
            started = time.perf_counter()
            if name in ("mlp", "cnn"):
                subject = digits_subject(name, workdir)
            elif name == "minilm":
                subject = minilm_subject()
            elif name in UNSEEN:
                subject = unseen_subject(name)
            else:
                subject = batchnorm_subject(name, workdir)
            say(f"{name}: ready in {time.perf_counter() - started:.0f} s, "
                f"{subject.unit} {subject.reference:.4f}")
            measured = {"none": None}
            rows_by_mode: dict[str, dict] = {}  # with synthetic: a BERT's token prior
            if "synthetic" in args.sensitivity.split(","):
                if name not in ("minilm", "mlp", "cnn") and subject.path.suffix != ".onnx":
                    say(f"  {name}: synthetic sensitivities are for BERT, engine and ONNX "
                        "models; skipped")
                else:
                    from weightdna.evaluate.calibration import sensitivity_for_file
                    from weightdna.evaluate.sensitivity import row_weights_for

                    started = time.perf_counter()
                    found = sensitivity_for_file(subject.path, synthetic=True,
                                                 note=lambda line, n=name: say(f"  {n}: {line}"))
                    if found is not None:
                        measured["synthetic"] = found
                        rows_by_mode["synthetic"] = row_weights_for(
                            "synthetic", subject.path, load_weights(subject.path).names)
                    say(f"  synthetic sensitivities in {time.perf_counter() - started:.1f} s")
            calibrations: dict[str, Callable[[], object] | None] = {"none": None}
            if "synthetic" in args.calibration.split(","):
                if subject.path.suffix == ".onnx":
                    from weightdna.evaluate.calibration import onnx_calibration_for

                    started = time.perf_counter()
                    hessians = onnx_calibration_for(subject.path,
                                                    lambda line, n=name: say(f"  {n}: {line}"))
                    say(f"  synthetic Hessians in {time.perf_counter() - started:.1f} s")
                    calibrations["synthetic"] = lambda h=hessians: h
                elif name not in ("mlp", "cnn"):
                    say(f"  {name}: synthetic calibration is for engine and ONNX models; "
                        "skipped")
                else:
                    from weightdna.evaluate.calibration import calibration_for

                    calibrations["synthetic"] = lambda path=subject.path: calibration_for(
                        path, "synthetic", Target("bits_per_weight", 2.0))
            for objective in objectives:
                for mode, sensitivity in measured.items():
                    if mode not in args.sensitivity.split(","):
                        continue
                    for cmode, calibration in calibrations.items():
                        if cmode not in args.calibration.split(","):
                            continue
                        for bmode in args.bias_correction.split(","):
                            if bmode != "none" and subject.path.suffix != ".onnx":
                                continue
                            for rate in rates:
                                rows.append(run_point(subject, rate, objective, workdir,
                                                      sensitivity, calibration,
                                                      rows_by_mode.get(mode),
                                                      "" if bmode == "none" else bmode,
                                                      files=not args.no_files))
    write_rows(args.out, "panel", rows)
    return 0


def write_rows(out: Path, stem: str, rows: list[dict]) -> None:
    """OUT/STEM.json and OUT/STEM.md (the markdown table, also printed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    text = markdown(rows)
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
