"""How many codings a bits-per-weight target takes, and what round 1 measured per tensor.

    .venv/bin/python bench/coding_rounds.py [--models minilm,minilm-rows,mlp,cnn,bncnn,
        magika,silero,synthetic] [--rates 2,3,4,8] [--out results/coding-rounds.json]

Each point is `compress_model` (default settings, in this process, torch and BLAS on one
thread; ``minilm-rows``: MiniLM with `bench/minilm_rows.py`'s absolute+columns settings) at a
whole-model bits-per-weight target; reported: the codings (`compress_model`'s measure
rounds, counted by wrapping `solve_on_curves`), CPU seconds of the call, bits per weight
and SNR landed, and each tensor's coded bits over its estimate after the first coding
(`compress._coded_ratios`) with the choice's estimated bits per weight, quantizer and
candidate: the data a prior for those ratios would be fitted on (BENCHMARKS.md, "Why the
first coding misses").
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from weightdna.codec import compress
from weightdna.codec.ratecontrol import Target
from weightdna.weights import load_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))


def model_path(name: str, workdir: Path) -> Path:
    if name in ("minilm", "minilm-rows"):
        from weightdna.weights import minilm_path

        return minilm_path()
    if name in ("mlp", "cnn"):
        from panel import digits_subject

        return digits_subject(name, workdir).path
    if name == "bncnn":
        from panel import batchnorm_subject

        return batchnorm_subject(name, workdir).path
    if name in ("magika", "silero", "ocr"):
        from weightdna.evaluate import unseen

        return {"magika": unseen.magika_path, "silero": unseen.silero_path,
                "ocr": unseen.ocr_detector_path}[name]()
    if name == "synthetic":  # a 2-layer Llama-shaped slice with MiniLM's statistics
        from scale import write_synthetic

        folder = workdir / "synthetic"
        write_synthetic(folder, layers=2, hidden=512, inter=1376, vocab=4096)
        return folder
    raise SystemExit(f"unknown model {name}")


def minilm_rows_options() -> dict:
    """`bench/minilm_rows.py`'s ``absolute+columns`` settings: synthetic sensitivities,
    token-prior row weights, the column factors and the bias correction."""
    from weightdna.evaluate.columns import bert_column_factors
    from weightdna.evaluate.correction import bert_bias_correction
    from weightdna.evaluate.sensitivity import for_every_tensor, sensitivity, token_row_weights
    from weightdna.weights import minilm_path

    folder = minilm_path()
    weights = load_weights(folder)
    sens = for_every_tensor(sensitivity(weights.state_dict(), folder=folder, draws=1,
                                        synthetic=True), weights.names)
    return {"sensitivity": sens, "row_weights": token_row_weights(folder, weights.names),
            "column_factors": bert_column_factors(folder),
            "adjust": bert_bias_correction(folder)}


def _cpu_now() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_point(path: Path, rate: float, output: Path, **options) -> dict:
    codings, first = [0], []
    solve, coded_ratios = compress.solve_on_curves, compress._coded_ratios

    def counted(*args, **kwargs):
        codings[0] += 1
        return solve(*args, **kwargs)

    def recorded(candidates, allocation, coded):
        ratios = coded_ratios(candidates, allocation, coded)
        if not first:
            for tc in candidates:
                c = allocation.choices[tc.info.name]
                if tc.info.name in ratios:
                    first.append({
                        "name": tc.info.name, "numel": tc.info.numel,
                        "bpw": c.bits / tc.info.numel, "estimate": c.bits,
                        "quantizer": c.quantizer, "deadzone": c.deadzone,
                        "candidate": None if c.candidate is None else c.candidate.name,
                        "ratio": ratios[tc.info.name]})
        return ratios

    compress.solve_on_curves, compress._coded_ratios = counted, recorded
    try:
        weights = load_weights(path)
        cpu = _cpu_now()
        report = compress.compress_model(weights, output, Target("bits_per_weight", rate),
                                         overwrite=True, **options)
        cpu = _cpu_now() - cpu
    finally:
        compress.solve_on_curves, compress._coded_ratios = solve, coded_ratios
    coded = sum(r["estimate"] * r["ratio"] for r in first)
    estimate = sum(r["estimate"] for r in first)
    return {"rate": rate, "codings": codings[0], "cpu": cpu,
            "bits_per_weight": report.bits_per_weight, "snr_db": report.snr_db,
            "file_bytes": report.file_bytes,
            "round1_ratio": coded / estimate if estimate else None, "tensors": first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mlp,cnn")
    parser.add_argument("--rates", default="2,3,4,8")
    parser.add_argument("--out", type=Path, default=Path("results/coding-rounds.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.models.split(","):
            path = model_path(name, workdir)
            options = minilm_rows_options() if name == "minilm-rows" else {}
            for rate in (float(r) for r in args.rates.split(",")):
                point = run_point(path, rate, workdir / "out.dna", **options)
                point["model"] = name
                results.append(point)
                print(f"{name:9s} {rate:4g} bpw: {point['codings']} codings, "
                      f"{point['cpu']:7.1f} CPU s, {point['bits_per_weight']:.4f} bpw, "
                      f"SNR {point['snr_db']:.3f} dB, round 1 coded/estimate "
                      f"{point['round1_ratio']:.4f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
