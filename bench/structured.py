"""Bits per weight at equal SNR on the structured validation suite: today's coding
(quantisation, the trellis where it pays) against the representation the codec chooses.

    .venv/bin/python bench/structured.py [NAME ...] [--snr 30 50]
    .venv/bin/python bench/structured.py --pairs [PAIR ...]

Each tensor of `weightdna.experiments.structured.SUITE` (and one MiniLM matrix) is
compressed alone by `compress_model` to a per-tensor SNR target twice: with
``representations=("quantized",)`` (what the codec did before the structured
representations) and with all of them (CANDIDATES). Bits are the tensor's sections (the
header entry not counted); SNR is measured on the decoded file.

Each pair of `weightdna.experiments.structured.PAIRS` (a tied or repeated tensor and the
one it repeats) is compressed as a model of its two tensors the same two ways; the row is
the second tensor's (the one a reference codes), then the whole pair at 3 bits per weight
(a whole-model target: the bits a reference saves go to the other tensor).
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
from weightdna.experiments.structured import PAIRS, SUITE
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


def coded_pair(tensors: dict[str, torch.Tensor], target: Target,
               representations: tuple[str, ...], folder: Path
               ) -> tuple[str, float, float, float, float]:
    """(the second tensor's representation, its bits per weight and SNR dB, the whole
    file's bits per weight and the pair's SNR dB) of one compress of a pair."""
    output = folder / "p.dna"
    compress_model(ModelWeights.from_tensors(tensors), output, target,
                   representations=representations, overwrite=True)
    dna = read_dna_file(output)
    entry = dna.entries[1]
    second = tensors[entry["name"]].double()
    restored = {n: dna.tensor(n).double() for n in dna.names}
    error = float(((restored[entry["name"]] - second) ** 2).sum())
    bits = 8 * sum(length for _, length, _ in entry["sections"].values()) / second.numel()
    signal = sum(float((t.double() ** 2).sum()) for t in tensors.values())
    total = sum(float(((restored[n] - t.double()) ** 2).sum()) for n, t in tensors.items())
    numel = sum(t.numel() for t in tensors.values())
    return (entry["representation"], bits, 10 * np.log10(float((second**2).sum()) / error),
            8 * output.stat().st_size / numel, 10 * np.log10(signal / total))


def pairs(names: list[str], snrs: list[float], folder: Path) -> None:
    """The pairs' table (module docstring)."""
    print("| pair | shape | target | today: second's bits/weight (SNR) | chosen | bits/weight "
          "(SNR) | file bits/weight, pair SNR dB: today / chosen |")
    print("|---|---|---|---|---|---|---|")
    for pair in PAIRS:
        if names and pair.name not in names:
            continue
        tensors = {k: torch.from_numpy(v) for k, v in pair.make().items()}
        shape = "×".join(map(str, next(iter(tensors.values())).shape))
        targets = [Target("snr", snr, per_tensor=True) for snr in snrs]
        for target in [*targets, Target("bits_per_weight", 3.0)]:
            _, today, today_snr, today_file, today_pair = coded_pair(
                tensors, target, ("quantized",), folder)
            rep, bits, snr, file_bits, pair_snr = coded_pair(tensors, target, CANDIDATES,
                                                             folder)
            print(f"| {pair.name} | {shape} | {target.describe()} | {today:.3f} "
                  f"({today_snr:.1f}) | {rep} | {bits:.3f} ({snr:.1f}) | {today_file:.3f}, "
                  f"{today_pair:.1f} / {file_bits:.3f}, {pair_snr:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="suite members (default: all, and minilm)")
    parser.add_argument("--snr", type=float, nargs="+", default=[30.0, 50.0])
    parser.add_argument("--pairs", action="store_true",
                        help="the pairs of tied or repeated tensors (PAIRS) instead")
    args = parser.parse_args()
    tensors = {m.name: (lambda m=m: torch.from_numpy(m.make())) for m in SUITE}
    tensors["minilm"] = lambda: load_weights(minilm_path()).tensor(MINILM)
    pair_names = [n for n in args.names if n in {p.name for p in PAIRS}]
    if pair_names or args.pairs:
        with tempfile.TemporaryDirectory() as tmp:
            pairs(pair_names, args.snr, Path(tmp))
        return
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
