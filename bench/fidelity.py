"""Downstream fidelity across rates: does the restored network still do its job?

    .venv/bin/python bench/fidelity.py [--models mlp,cnn,minilm] [--out results/fidelity]

For the engine's digits MLP and CNN (trained with the recipes, seed 0): held-out accuracy
of the restored model. For all-MiniLM-L6-v2: the mean cosine between original and restored
embeddings of the bundled 540 sentences, and the Spearman correlation of their pairwise
similarities. Every rate is bits per weight of real coded bytes over all of the model's
elements. Methods:

* ``weightdna``: ``compress_model`` at a whole-model bits-per-weight target (the .dna file,
  header included; small float tensors are quantised too), then decompressed.
  MiniLM is coded with the quantized candidate only: with low-rank and DNA candidates too
  it took 90 s instead of 35 s per rate and measured 10.81 dB instead of 10.80 at 2 bpw;
* ``weightdna+sens``: the same with each tensor's squared error weighted by its measured
  output sensitivity (``weightdna.evaluate.sensitivity``);
* ``weightdna+gptq``, ``weightdna+gptq+sens``: the same two with each weight matrix's
  symbols chosen by GPTQ on calibration data (``weightdna.evaluate.calibration``: the
  digits training images, each layer's inputs computed with the layers before it coded, as
  ``weightdna compress --calibration auto`` does; for MiniLM 64 of the bundled sentences,
  which the judge also embeds), same format;
* ``global step`` (digits only): every floating-point tensor quantised with one step and
  entropy-coded by ``encode_tensor``; bytes = sections + compact JSON entries;
* ``global step+sens`` (digits only): the same with tensor t's step Δ / √(s_t / s̄), s_t
  its measured sensitivity: bits go where the outputs feel them;
* ``rtn``: per-row round-to-nearest int8/int4/int2 (``weightdna.baselines.rtn``);
* ``nncodec``: the MPEG NNR reference codec, when ``.venv-peers`` exists.

Writes OUT/{model}.json and OUT/fidelity.md; prints the markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from weightdna.baselines.nncodec import nncodec_available, nncodec_roundtrip, qp_for_step
from weightdna.baselines.rtn import RTN_BITS, decode_rtn, encode_rtn
from weightdna.codec import decode_tensor, encode_tensor
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import CANDIDATES, Target
from weightdna.data import load_digits
from weightdna.errors import WeightDNAError
from weightdna.evaluate import (
    accuracy_of_restored,
    compare_embeddings,
    embed_sentences,
    load_sentences,
    sensitivity,
)
from weightdna.evaluate.accuracy import takes_images
from weightdna.evaluate.calibration import SequentialHessians, hessians
from weightdna.evaluate.sensitivity import for_every_tensor
from weightdna.train import train_digits_cnn, train_digits_mlp
from weightdna.weights import ModelWeights, load_weights, minilm_path

MODELS = ("mlp", "cnn", "minilm")
RATES = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
COSINE_GOAL = 0.99
ACCURACY_GOAL_POINTS = 0.5
STEP_ROUNDS = 4  # corrections of a global step towards a rate

State = dict[str, torch.Tensor]
# judge(restored state dict) -> downstream figures of that point
Judge = Callable[[State], dict[str, float]]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def snr_db(original: State, restored: State) -> float:
    """Whole-model SNR over the floating-point tensors."""
    signal = noise = 0.0
    for name, t in original.items():
        if t.dtype.is_floating_point:
            w = t.to(torch.float64)
            signal += float((w * w).sum())
            noise += float(((w - restored[name].to(torch.float64)) ** 2).sum())
    return 10 * math.log10(signal / noise) if noise > 0 else math.inf


def exact_bytes(original: State) -> int:
    """Raw bytes of the tensors every peer stores as they are (integers, buffers)."""
    return sum(t.numel() * t.element_size() for t in original.values()
               if not t.dtype.is_floating_point)


def point(method: str, setting: str, nbytes: int, numel: int, original: State,
          restored: State, judge: Judge) -> dict:
    """One measured point: size, weight error and the downstream figures."""
    started = time.perf_counter()
    figures = judge(restored)
    snr = snr_db(original, restored)
    row = {"method": method, "setting": setting, "bytes": nbytes,
           "bits_per_weight": 8.0 * nbytes / numel, "snr_db": snr if math.isfinite(snr) else None,
           **figures, "judge_seconds": time.perf_counter() - started}
    say(f"  {method:15s} {setting:18s} {row['bits_per_weight']:6.3f} bpw  "
        + "  ".join(f"{k} {v:.4f}" for k, v in figures.items() if isinstance(v, float)))
    return row


def run_compress(weights: ModelWeights, rate: float, workdir: Path,
                 sens: Mapping[str, float] | None,
                 representations: tuple[str, ...],
                 calibration: Mapping[str, np.ndarray] | None = None) -> tuple[State, int]:
    """compress_model at ``rate`` bits per weight, decompressed: (restored, file bytes)."""
    dna, out = workdir / "model.dna", workdir / "restored.safetensors"
    report = compress_model(weights, dna, Target("bits_per_weight", rate), overwrite=True,
                            sensitivity=sens, representations=representations,
                            calibration=calibration)
    decompress_model(dna, out, overwrite=True)
    return load_weights(out).state_dict(), report.file_bytes


def code_global_step(original: State, step: float,
                     sens: Mapping[str, float] | None = None) -> tuple[State, int]:
    """Every float tensor through encode_tensor/decode_tensor at one step, or at
    step / √(s_t / s̄) with sensitivities s_t (s̄ their geometric mean): equal slopes of
    output distortion against rate."""
    restored, nbytes = {}, exact_bytes(original)
    mean_log = float(np.mean(np.log(list(sens.values())))) if sens else 0.0
    for name, t in original.items():
        if not t.dtype.is_floating_point:
            restored[name] = t
            continue
        scale = math.exp(0.5 * (math.log(sens[name]) - mean_log)) if sens else 1.0
        entry, sections = encode_tensor(t, name=name, step=step / scale)
        restored[name] = decode_tensor(entry, sections)
        nbytes += sum(len(b) for b in sections.values())
        nbytes += len(json.dumps(entry, separators=(",", ":")))
    return restored, nbytes


def step_for_rate(original: State, rate: float, numel: int,
                  sens: Mapping[str, float] | None = None) -> float:
    """A global step whose measured rate is near ``rate`` (a few high-rate corrections:
    halving the step costs one bit per weight)."""
    floats = [t.to(torch.float64) for t in original.values() if t.dtype.is_floating_point]
    rms = math.sqrt(sum(float((t * t).sum()) for t in floats) / sum(t.numel() for t in floats))
    step = rms * math.sqrt(2 * math.pi * math.e) * 2.0 ** -rate
    for _ in range(STEP_ROUNDS):
        measured = 8.0 * code_global_step(original, step, sens)[1] / numel
        step *= 2.0 ** min(max(measured - rate, -4.0), 4.0)
    return step


def run_rtn(original: State, bits: int) -> tuple[State, int]:
    """Per-row round-to-nearest on every float tensor."""
    restored, nbytes = {}, exact_bytes(original)
    for name, t in original.items():
        if not t.dtype.is_floating_point:
            restored[name] = t
            continue
        data = encode_rtn(t, bits)
        restored[name] = decode_rtn(data, bits, tuple(t.shape), t.dtype)
        nbytes += len(data)
    return restored, nbytes


def run_nncodec(original: State, qps: list[int]) -> dict[int, tuple[State, int]]:
    """NNCodec through its worker (one NNR bitstream per QP): {qp: (restored, bytes)}."""
    floats = {n: t for n, t in original.items() if t.dtype.is_floating_point}
    out = {}
    for qp, (arrays, entry) in nncodec_roundtrip(floats, qps).items():
        restored = dict(original)
        for name, array in arrays.items():
            restored[name] = torch.from_numpy(array).to(original[name].dtype)
        out[qp] = (restored, int(entry["nbytes"]) + exact_bytes(original))
    return out


def sweep(weights: ModelWeights, judge: Judge, sens: Mapping[str, float],
          global_step: bool, representations: tuple[str, ...] = CANDIDATES,
          calibration: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """Every method at every rate on one model."""
    original = weights.state_dict()
    numel = weights.total_numel
    rows = [point("original", "", sum(t.numel() * t.element_size() for t in original.values()),
                  numel, original, original, judge)]
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        methods = [("weightdna", None, None), ("weightdna+sens", sens, None)]
        if calibration:
            methods += [("weightdna+gptq", None, calibration),
                        ("weightdna+gptq+sens", sens, calibration)]
        for method, s, cal in methods:
            for rate in RATES:
                try:
                    restored, nbytes = run_compress(weights, rate, Path(tmp), s,
                                                    representations, cal)
                except WeightDNAError as exc:
                    say(f"  {method} {rate:g} bpw: {exc}")
                    rows.append({"method": method, "setting": f"target {rate:g} bpw",
                                 "unreachable": str(exc)})
                    continue
                rows.append(point(method, f"target {rate:g} bpw", nbytes, numel, original,
                                  restored, judge))
    steps = {rate: step_for_rate(original, rate, numel) for rate in RATES} if global_step else {}
    for method, s in (("global step", None), ("global step+sens", sens)):
        for rate in steps:
            step = steps[rate] if s is None else step_for_rate(original, rate, numel, s)
            restored, nbytes = code_global_step(original, step, s)
            rows.append(point(method, f"step {step:.3g} (≈{rate:g})", nbytes, numel,
                              original, restored, judge))
    for bits in RTN_BITS:
        restored, nbytes = run_rtn(original, bits)
        rows.append(point("rtn", f"int{bits}", nbytes, numel, original, restored, judge))
    if nncodec_available():
        # QPs around the global steps of the rates asked for (NNCodec's step is 2^(qp/4)).
        rms_steps = steps or {r: step_for_rate(original, r, numel) for r in (RATES[0], RATES[-1])}
        lo, hi = qp_for_step(min(rms_steps.values())), qp_for_step(max(rms_steps.values()))
        qps = list(range(hi + 4, lo - 5, -4))
        say(f"  nncodec qp {qps}")
        try:
            coded = run_nncodec(original, qps)
        except WeightDNAError as exc:
            say(f"  nncodec: {exc}")
            coded = {}
        for qp, (restored, nbytes) in coded.items():
            rows.append(point("nncodec", f"qp {qp}", nbytes, numel, original, restored, judge))
    else:
        say("  nncodec: no .venv-peers (bash bench/peers/setup_peers.sh); skipped")
    return rows


def smallest_meeting(rows: list[dict], key: str, goal: float) -> dict[str, dict]:
    """Per method: the smallest measured point with ``key`` >= goal, and the rate at which
    the line between the bracketing measured points crosses the goal."""
    found = {}
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "original"):
        pts = sorted((r for r in rows if r["method"] == method and key in r),
                     key=lambda r: r["bits_per_weight"])
        for i, r in enumerate(pts):
            if r[key] >= goal:
                crossing = r["bits_per_weight"]
                if i:
                    p = pts[i - 1]
                    crossing = p["bits_per_weight"] + (goal - p[key]) / (r[key] - p[key]) * (
                        r["bits_per_weight"] - p["bits_per_weight"])
                found[method] = {"bits_per_weight": r["bits_per_weight"], "bytes": r["bytes"],
                                 "interpolated_bits_per_weight": crossing,
                                 "setting": r["setting"]}
                break
    return found


def digits(name: str, workdir: Path) -> dict:
    """Train the recipe, sweep it, judge by held-out accuracy."""
    run = (train_digits_mlp if name == "mlp" else train_digits_cnn)()
    path = run.model.save(workdir / f"{name}.safetensors")
    say(f"{name}: trained, test accuracy {run.test_accuracy:.4f}")
    sens = sensitivity(run.model)
    rows = sweep(load_weights(path), lambda state: accuracy_of_restored(run.model, state),
                 sens, global_step=True,
                 calibration=SequentialHessians(run.model, load_digits(image=takes_images(
                     run.model))[0]))
    for r in rows:
        if "delta_points" in r:
            r["within_goal"] = r["delta_points"] >= -ACCURACY_GOAL_POINTS
    goal = run.test_accuracy - ACCURACY_GOAL_POINTS / 100
    return {"model": name, "weights": load_weights(path).total_numel,
            "test_accuracy": run.test_accuracy, "sensitivity": sens, "points": rows,
            "smallest_within_goal": smallest_meeting(rows, "restored_accuracy", goal)}


def minilm(gptq: bool = False) -> dict:
    """MiniLM: cosine of restored to original embeddings of the bundled sentences."""
    from weightdna.bert import BertConfig, BertEncoder, load_tokenizer

    folder = minilm_path()
    weights = load_weights(folder)
    config, tokenizer = BertConfig.from_json(folder / "config.json"), load_tokenizer(folder)
    sentences = load_sentences()
    started = time.perf_counter()
    reference = embed_sentences(BertEncoder(weights.state_dict(), config), sentences, tokenizer)
    embed_seconds = time.perf_counter() - started
    say(f"minilm: {len(sentences)} sentences embedded in {embed_seconds:.1f} s")

    def judge(state: State) -> dict[str, float]:
        restored = embed_sentences(BertEncoder(state, config), sentences, tokenizer)
        return compare_embeddings(reference, restored)

    started = time.perf_counter()
    sens = sensitivity(weights.state_dict(), draws=1)
    sens_seconds = time.perf_counter() - started
    say(f"minilm: sensitivity of {len(sens)} tensors in {sens_seconds:.1f} s")
    # Tensors the forward never reads (the pooler) count as the least sensitive one.
    sens = for_every_tensor(sens, weights.names)
    # GPTQ on MiniLM (--minilm-gptq) doubles the run; at 2 bits it measured a mean cosine
    # of 0.695 against 0.701 without (it gives up the trellis), so it is off by default.
    rows = sweep(weights, judge, sens, global_step=False, representations=("quantized",),
                 calibration=hessians(weights.state_dict()) if gptq else None)
    return {"model": "minilm", "weights": weights.total_numel, "sentences": len(sentences),
            "embed_seconds": embed_seconds, "sensitivity_seconds": sens_seconds,
            "sensitivity": sens, "points": rows,
            "smallest_at_cosine_goal": smallest_meeting(rows, "mean_cosine", COSINE_GOAL)}


Column = tuple[str, Callable[[dict], str]]  # (header, cell of a row)
SIZE: list[Column] = [("method", lambda r: r["method"]), ("setting", lambda r: r["setting"]),
                      ("bits/weight", lambda r: f"{r['bits_per_weight']:.3f}")]
DIGITS_COLUMNS: list[Column] = SIZE + [
    ("bytes", lambda r: f"{r['bytes']:,}"),
    ("SNR dB", lambda r: "exact" if r["snr_db"] is None else f"{r['snr_db']:.2f}"),
    ("accuracy", lambda r: f"{100 * r['restored_accuracy']:.2f}%"),
    ("Δ points", lambda r: f"{r['delta_points']:+.2f}"),
    ("same prediction", lambda r: f"{100 * r['agreement']:.1f}%"),
]
MINILM_COLUMNS: list[Column] = SIZE + [
    ("MB", lambda r: f"{r['bytes'] / 1e6:.2f}"),
    ("SNR dB", lambda r: "exact" if r["snr_db"] is None else f"{r['snr_db']:.2f}"),
    *[(head, lambda r, k=key: f"{r[k]:.4f}") for head, key in (
        ("mean cos", "mean_cosine"), ("p5 cos", "p5_cosine"), ("min cos", "min_cosine"),
        ("Spearman", "spearman"))],
]


def table(rows: list[dict], columns: list[Column]) -> list[str]:
    """A markdown table; a row with ``unreachable`` says so after its setting."""
    lines = ["| " + " | ".join(head for head, _ in columns) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|"]
    for r in rows:
        cells = ([r["method"], r["setting"], "unreachable"] + [""] * (len(columns) - 3)
                 if "unreachable" in r else [cell(r) for _, cell in columns])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: list[dict]) -> str:
    """The tables of BENCHMARKS.md's "Downstream fidelity" section."""
    lines = [f"Machine: {platform.processor() or platform.machine()}, torch "
             f"{torch.__version__}, Python {platform.python_version()}. "
             f"Date: {datetime.date.today()}.", ""]
    for res in results:
        if res["model"] == "minilm":
            head = (f"**all-MiniLM-L6-v2** ({res['weights']:,} weights, {res['sentences']} "
                    f"sentences embedded in {res['embed_seconds']:.1f} s)")
            columns, goal, key = MINILM_COLUMNS, f"mean cosine ≥ {COSINE_GOAL}", \
                "smallest_at_cosine_goal"
        else:
            title = "MLP 64-128-64-10" if res["model"] == "mlp" else "CNN conv16-conv32-64-10"
            head = (f"**digits {title}** ({res['weights']:,} weights, test accuracy "
                    f"{100 * res['test_accuracy']:.2f}%)")
            columns, goal, key = DIGITS_COLUMNS, \
                f"accuracy within {ACCURACY_GOAL_POINTS} points of the original", \
                "smallest_within_goal"
        smallest = [{**s, "method": m, "interpolated": f"{s['interpolated_bits_per_weight']:.3f}"}
                    for m, s in res[key].items()]
        lines += [head, "", *table(res["points"], columns), "",
                  f"Smallest size with {goal} (and where the line between the measured points "
                  "around it crosses the goal):", "",
                  *table(smallest, columns[:4] + [("interpolated bits/weight",
                                                   lambda r: r["interpolated"])]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated: mlp, cnn, minilm ('': only rewrite the table "
                             "from the JSON files already in --out)")
    parser.add_argument("--out", type=Path, default=Path("results/fidelity"))
    parser.add_argument("--minilm-gptq", action="store_true",
                        help="also run the +gptq methods on MiniLM (doubles its time)")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    if set(names) - set(MODELS):
        parser.error(f"unknown models {sorted(set(names) - set(MODELS))}; choose from {MODELS}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fidelity-models-") as tmp:
        for name in names:
            started = time.perf_counter()
            res = minilm(args.minilm_gptq) if name == "minilm" else digits(name, Path(tmp))
            res["seconds"] = time.perf_counter() - started
            (args.out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
            say(f"{name}: done in {res['seconds']:.0f} s")
    # The table covers every model measured so far, this run's and earlier runs'.
    results = [json.loads((args.out / f"{name}.json").read_text())
               for name in MODELS if (args.out / f"{name}.json").is_file()]
    text = markdown(results)
    (args.out / "fidelity.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
