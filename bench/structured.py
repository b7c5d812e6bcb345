"""Bits per weight at equal SNR on the structured validation suite: today's coding
(quantisation, the trellis where it pays) against the representation the codec chooses.

    .venv/bin/python bench/structured.py [NAME ...] [--snr 30 50]

Each tensor of `weightdna.experiments.structured.SUITE` (and one MiniLM matrix) is
compressed alone by `compress_model` to a per-tensor SNR target twice: with
``representations=("quantized",)`` (what the codec did before the structured
representations) and with all of them (CANDIDATES). Bits are the tensor's sections (the
header entry not counted); SNR is measured on the decoded file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from weightdna.codec import read_dna_file
from weightdna.codec.compress import compress_model
from weightdna.codec.options import CANDIDATES
from weightdna.codec.ratecontrol import Target
from weightdna.experiments.structured import SUITE
from weightdna.weights import ModelWeights, load_weights, minilm_path

MINILM = "encoder.layer.0.attention.self.query.weight"


def coded(tensor: torch.Tensor, snr: float, representations: tuple[str, ...],
          folder: Path) -> tuple[str, float, float, float]:
    """(representation, bits per weight, measured SNR dB, seconds) of one compress."""
    weights = ModelWeights.from_tensors({"layer.weight": tensor})
    output = folder / "t.dna"
    started = time.perf_counter()
    compress_model(weights, output, Target("snr", snr, per_tensor=True),
                   representations=representations, overwrite=True)
    seconds = time.perf_counter() - started
    dna = read_dna_file(output)
    entry = dna.entries[0]
    restored = dna.tensor("layer.weight").double()
    error = float(((restored - tensor.double()) ** 2).sum())
    signal = float((tensor.double() ** 2).sum())
    bits = 8 * sum(length for _, length, _ in entry["sections"].values()) / tensor.numel()
    return entry["representation"], bits, 10 * np.log10(signal / error), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="suite members (default: all, and minilm)")
    parser.add_argument("--snr", type=float, nargs="+", default=[30.0, 50.0])
    args = parser.parse_args()
    tensors = {m.name: (lambda m=m: torch.from_numpy(m.make())) for m in SUITE}
    tensors["minilm"] = lambda: load_weights(minilm_path()).tensor(MINILM)
    names = args.names or list(tensors)
    print("| tensor | shape | SNR target dB | today bits/weight (SNR) | chosen | bits/weight "
          "(SNR) | fewer bits | seconds today / chosen |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            tensor = tensors[name]()
            for snr in args.snr:
                _, today, today_snr, today_s = coded(tensor, snr, ("quantized",), Path(tmp))
                rep, bits, chosen_snr, chosen_s = coded(tensor, snr, CANDIDATES, Path(tmp))
                print(f"| {name} | {'×'.join(map(str, tensor.shape))} | {snr:g} | "
                      f"{today:.3f} ({today_snr:.1f}) | {rep} | {bits:.3f} ({chosen_snr:.1f}) "
                      f"| {today / bits:.1f}× | {today_s:.1f} / {chosen_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
