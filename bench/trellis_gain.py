"""The trellis against scalar rounding on one tensor, at equal coded size.

    .venv/bin/python bench/trellis_gain.py [TENSOR ...] [--rows N]

For each tensor of all-MiniLM-L6-v2 (default: the layer-0 query and the first 5,000 rows
of the word embeddings): scalar rounding (`encode_tensor(step=...)`) at 40 steps, each
with its best deadzone (0, 0.1, 0.2), gives a rate–SNR curve; the trellis
(`quantizer="trellis"`) at a few steps gives points whose SNR is compared with that curve
at the same rate. Bytes are the tensor's real sections (the header entry not counted).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from weightdna.codec import decode_tensor, encode_tensor
from weightdna.weights import load_weights, minilm_path

DEFAULT = ("encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight")


def figures(w: torch.Tensor, **request: object) -> tuple[float, float]:
    """(bits per weight of the sections, SNR dB) of one coding of ``w``."""
    entry, sections = encode_tensor(w, name="t", **request)
    restored = decode_tensor(entry, sections).double()
    error = float(((restored - w.double()) ** 2).sum())
    bits = 8 * sum(len(b) for b in sections.values()) / w.numel()
    return bits, 10 * np.log10(float((w.double() ** 2).sum()) / error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tensors", nargs="*", default=DEFAULT)
    parser.add_argument("--rows", type=int, default=5000, help="first rows of each tensor")
    args = parser.parse_args()
    weights = load_weights(minilm_path())
    print("| tensor | trellis step / σ | bits/weight | trellis SNR dB "
          "| scalar SNR at that rate | gain dB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.tensors:
        w = weights.tensor(name)[: args.rows].contiguous()
        sigma = float(w.double().std())
        curve = []
        for step in np.geomspace(0.01, 4, 40) * sigma:
            curve.append(max((figures(w, step=float(step), deadzone=dz) for dz in (0, .1, .2)),
                             key=lambda p: p[1] - 6.02 * p[0]))
        curve.sort()
        rates, snrs = np.array(curve).T
        envelope = np.maximum.accumulate(snrs)
        for factor in (1.2, 0.5, 0.2, 0.08, 0.03, 0.012):
            bits, snr = figures(w, step=factor * sigma, quantizer="trellis")
            scalar = float(np.interp(bits, rates, envelope))
            print(f"| {name} ({w.shape[0]}×{w.shape[1]}) | {factor} | {bits:.3f} | {snr:.2f} | "
                  f"{scalar:.2f} | {snr - scalar:+.2f} |")


if __name__ == "__main__":
    main()
