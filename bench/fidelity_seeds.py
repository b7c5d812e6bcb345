"""How robust are the digits accuracies of bench/fidelity.py? The same methods over seeds.

    .venv/bin/python bench/fidelity_seeds.py [--models mlp,cnn] [--rates 2] [--seeds 10]

For each seed: train the recipe (seed s: its initialisation, shuffling and train/test
split), measure its sensitivities and its sequential calibration (as `weightdna compress
--sensitivity auto --calibration auto` does), compress at each rate with the four methods
of bench/fidelity.py (weightdna, +sens, +gptq, +gptq+sens), restore, and take the change
in held-out accuracy (points; one test image is 0.28). Prints each method's mean, its
standard error over the seeds, and the per-seed figures.
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
from weightdna.train import train_digits_cnn, train_digits_mlp
from weightdna.weights import load_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import run_compress  # noqa: E402  (one compress-and-restore for both scripts)

METHODS = ("weightdna", "weightdna+sens", "weightdna+gptq", "weightdna+gptq+sens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--rates", default="2")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    for name in args.models.split(","):
        deltas: dict[tuple[float, str], list[float]] = {(r, m): [] for r in rates for m in METHODS}
        for seed in range(args.seeds):
            run = (train_digits_mlp if name == "mlp" else train_digits_cnn)(seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                weights = load_weights(run.model.save(folder / "model.safetensors"))
                sens = sensitivity(run.model, seed=seed)
                images = load_digits(seed=seed, image=takes_images(run.model))[0]
                for rate in rates:
                    for method in METHODS:
                        calibration = (SequentialHessians(run.model, images)
                                       if "gptq" in method else None)
                        try:
                            restored, _ = run_compress(
                                weights, rate, folder,
                                sens if method.endswith("sens") else None, CANDIDATES,
                                calibration)
                        except WeightDNAError:
                            deltas[(rate, method)].append(float("nan"))
                            continue
                        result = accuracy_of_restored(run.model, restored, seed=seed)
                        deltas[(rate, method)].append(result["delta_points"])
            print(f"{name}: seed {seed} done", flush=True)
        print(f"\n| {name} | bits/weight | mean Δ points | ± s.e. | per seed |")
        print("|---|---:|---:|---:|---|")
        for (rate, method), values in deltas.items():
            kept = np.asarray(values)[~np.isnan(values)]
            error = kept.std(ddof=1) / np.sqrt(kept.size) if kept.size > 1 else float("nan")
            print(f"| {method} | {rate:g} | {np.nanmean(values):+.2f} | {error:.2f} | "
                  f"{', '.join(f'{v:+.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
