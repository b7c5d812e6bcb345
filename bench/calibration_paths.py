"""MiniLM at a size, calibrated by each of the two paths `--calibration auto` has for a
Hugging Face folder: our own BERT forward (`calibration.bert_hessians`, what the command
runs for a BERT model) and transformers' model with forward hooks
(`calibration.hf_hessians`, what it runs for any other transformer). Both on the same 64
bundled sentences, with the command line's default sensitivities (synthetic, measured once);
each file decompressed and judged by the mean cosine of the 540 bundled sentences'
embeddings (`weightdna evaluate`'s measure).

    .venv/bin/python bench/calibration_paths.py [--rate 3]

BENCHMARKS.md ("Calibration of any Hugging Face transformer") quotes what it prints.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from weightdna.codec.compress import compress_model
from weightdna.codec.container import read_dna_file
from weightdna.codec.ratecontrol import Target
from weightdna.evaluate.calibration import (
    HuggingFaceModel,
    hessians,
    hf_hessians,
    sensitivity_for_file,
)
from weightdna.evaluate.sentences import sentence_fidelity
from weightdna.weights import load_weights, minilm_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=3.0, help="bits per weight")
    args = parser.parse_args()
    folder = minilm_path()
    weights = load_weights(folder)
    state = weights.state_dict()
    sensitivity = sensitivity_for_file(folder, synthetic=True)
    paths = {"bert": hessians(state, folder=folder),
             "transformers": hf_hessians(HuggingFaceModel(folder, folder))}
    shared = sorted(set(paths["bert"]) & set(paths["transformers"]))
    worst = max(float(np.abs(paths["transformers"][n] - paths["bert"][n]).max()
                      / np.abs(paths["bert"][n]).max()) for n in shared)
    print(f"{len(shared)} Hessians in both paths, largest difference {worst:.2e} of the "
          f"largest entry; transformers' only: "
          f"{sorted(set(paths['transformers']) - set(paths['bert']))}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, calibration in paths.items():
            out = Path(scratch) / f"{name}.dna"
            started = time.perf_counter()
            report = compress_model(weights, out, Target("bits_per_weight", args.rate),
                                    representations=["quantized"], calibration=calibration,
                                    sensitivity=sensitivity)
            seconds = time.perf_counter() - started
            dna = read_dna_file(out)
            restored = {n: dna.tensor(n) for n in dna.names}
            fidelity = sentence_fidelity(state, restored, folder=folder)
            print(f"{name:13s} {report.bits_per_weight:.3f} bpw, SNR {report.snr_db:.2f} dB, "
                  f"mean cosine {fidelity['mean_cosine']:.4f}, min {fidelity['min_cosine']:.4f}"
                  f", Spearman {fidelity['spearman']:.4f} ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
