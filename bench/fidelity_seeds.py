"""How robust are the digits accuracies of bench/fidelity.py? The same methods over seeds.

    .venv/bin/python bench/fidelity_seeds.py [--models mlp,cnn] [--rates 2] [--seeds 10]
        [--methods weightdna,weightdna+sens,weightdna+gptq,weightdna+gptq+sens]

For each seed: train the recipe (seed s: its initialisation, shuffling and train/test
split), measure its sensitivities and its sequential calibration (as `weightdna compress
--sensitivity auto --calibration auto` does), compress at each rate with the four methods
of bench/fidelity.py (weightdna, +sens, +gptq, +gptq+sens), restore, and take the change
in held-out accuracy (points; one test image is 0.28). Prints each method's mean, its
standard error over the seeds, how many seeds kept under 90% of their accuracy, and the
per-seed figures. Methods with "synthetic" use inputs distilled from the model itself
(`weightdna.evaluate.distill`, no data) instead of the digits: synthetic+gptq+sens is
what `weightdna compress --bits-per-weight B` does by default on an engine model
(`--sensitivity synthetic --calibration synthetic`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from weightdna.codec.ratecontrol import CANDIDATES
from weightdna.data import load_digits
from weightdna.errors import WeightDNAError
from weightdna.evaluate import accuracy_of_restored, sensitivity
from weightdna.evaluate.accuracy import takes_images
from weightdna.evaluate.calibration import SequentialHessians
from weightdna.evaluate.distill import distilled_inputs
from weightdna.evaluate.sensitivity import for_every_tensor
from weightdna.train import train_digits_cnn, train_digits_mlp
from weightdna.weights import load_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import run_compress  # noqa: E402  (one compress-and-restore for both scripts)

METHODS = ("weightdna", "weightdna+sens", "weightdna+gptq", "weightdna+gptq+sens")
SYNTHETIC = ("synthetic+sens", "synthetic+gptq", "synthetic+gptq+sens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--rates", default="2")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"from {','.join(METHODS + SYNTHETIC)}")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS + SYNTHETIC)
    if unknown:
        parser.error(f"unknown methods {', '.join(sorted(unknown))}")
    for name in args.models.split(","):
        deltas: dict[tuple[float, str], list[float]] = {(r, m): [] for r in rates for m in methods}
        shares = {key: [] for key in deltas}  # restored accuracy / original accuracy
        for seed in range(args.seeds):
            run = (train_digits_mlp if name == "mlp" else train_digits_cnn)(seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                weights = load_weights(run.model.save(folder / "model.safetensors"))
                images = load_digits(seed=seed, image=takes_images(run.model))[0]
                distilled = (distilled_inputs(run.model)
                             if any(m.startswith("synthetic") for m in methods) else None)
                sens = {kind: for_every_tensor(sensitivity(run.model, data, seed=seed),
                                               list(run.model.state_dict()))
                        for kind, data in (("weightdna", None), ("synthetic", distilled))
                        if any(m.startswith(kind) and m.endswith("sens") for m in methods)}
                for rate in rates:
                    for method in methods:
                        kind = method.split("+")[0]
                        data = images if kind == "weightdna" else distilled
                        calibration = (SequentialHessians(run.model, data)
                                       if "gptq" in method else None)
                        try:
                            restored, _ = run_compress(
                                weights, rate, folder,
                                sens[kind] if method.endswith("sens") else None, CANDIDATES,
                                calibration)
                        except WeightDNAError:
                            deltas[(rate, method)].append(float("nan"))
                            continue
                        result = accuracy_of_restored(run.model, restored, seed=seed)
                        deltas[(rate, method)].append(result["delta_points"])
                        shares[(rate, method)].append(result["restored_accuracy"]
                                                      / result["original_accuracy"])
            print(f"{name}: seed {seed} done", flush=True)
        print(f"\n| {name} | bits/weight | mean Δ points | ± s.e. | worst | under 90% | "
              "per seed |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for (rate, method), values in deltas.items():
            kept = np.asarray(values)[~np.isnan(values)]
            error = kept.std(ddof=1) / np.sqrt(kept.size) if kept.size > 1 else float("nan")
            under = sum(share < 0.9 for share in shares[(rate, method)])
            print(f"| {method} | {rate:g} | {np.nanmean(values):+.2f} | {error:.2f} | "
                  f"{np.nanmin(values):+.2f} | {under} | "
                  f"{', '.join(f'{v:+.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
