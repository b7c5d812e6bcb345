"""Does the DNA pay over transform coefficients? (issue 16: "the DNA given the right
coordinates, where a coordinate network over transform coefficients pays".)

    .venv/bin/python bench/dna_coefficients.py [SNR] [NAME ...]     # SNR dB, default 30

For members of the structured validation suite (`weightdna.experiments.structured`) and
the transform that compacts them, the coefficients C of that transform of each row
(`weightdna.codec.transform.forward`, orthonormal: C's error is the weights') are coded
at the largest step whose SNR meets the target, alone (what the ``transform``
representation stores) and as the codec's default DNA (`prediction.dna_prediction`: a
SIREN of width 32 and depth 2 over the coefficients' (row, column) coordinates, float16)
plus the residual. Printed: bits per weight of each (sections only), the DNA's own share,
the coefficients' adjacent correlation (the codec fits a DNA only from 0.5), seconds.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

from weightdna.codec.prediction import Prediction, dna_prediction
from weightdna.codec.quantize import as_rows
from weightdna.codec.ratecontrol import _adjacent_correlation
from weightdna.codec.tensor import encode_tensor
from weightdna.codec.transform import forward
from weightdna.errors import WeightDNAError
from weightdna.experiments.structured import SUITE

MEMBERS = {m.name: m for m in SUITE}
CASES = [("dft64_hann", ["dft"]), ("dft256_hann", ["dft"]), ("dct256", ["dct"]),
         ("smooth", ["dct", "dft"]), ("lowrank", ["dct"]), ("kronecker", ["dct"]),
         ("gaussian", ["dct"]), ("laplace", ["dct"])]


def bits_at(coefficients: np.ndarray, snr: float,
            prediction: Prediction | None = None) -> float | None:
    """Bits per weight at the largest step (bisected) whose SNR meets ``snr``."""
    signal = float((coefficients**2).sum())
    tensor = torch.from_numpy(coefficients)
    top = math.log2(float(np.abs(coefficients).max()))
    lo, hi, best = top - 30, top + 2, None
    for _ in range(22):
        mid = (lo + hi) / 2
        entry, sections = encode_tensor(tensor, step=2**mid, prediction=prediction)
        mse = entry["stats"]["mse"]
        if not mse or 10 * math.log10(signal / (mse * coefficients.size)) >= snr:
            lo, best = mid, 8 * sum(map(len, sections.values())) / coefficients.size
        else:
            hi = mid
    return best


def main() -> None:
    snr = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    only = sys.argv[2:]
    print(f"SNR {snr:g} dB")
    print("| tensor | transform | adjacent correlation | coefficients alone b/w | DNA + "
          "residual b/w | of which the DNA | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, kinds in CASES:
        if only and name not in only:
            continue
        weights = MEMBERS[name].make().astype(np.float64)
        for kind in kinds:
            coefficients = forward(as_rows(weights), kind)
            started = time.perf_counter()
            alone = bits_at(coefficients, snr)
            try:
                prediction = dna_prediction(coefficients)
                dna = f"{bits_at(coefficients, snr, prediction):.3f}"
                side = f"{8 * prediction.side_bytes / coefficients.size:.3f}"
            except WeightDNAError as exc:
                dna, side = f"no fit ({exc})", "—"
            print(f"| {name} | {kind} | {_adjacent_correlation(coefficients):.2f} | "
                  f"{alone:.3f} | {dna} | {side} | {time.perf_counter() - started:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
