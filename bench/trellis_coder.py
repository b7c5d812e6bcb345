"""One adaptive coder per trellis tensor (format version 17, issues 15/11): the same
`compress_model` call with the coder off (today's context streams) and on, at each rate.

    PYTHONPATH=. .venv/bin/python bench/trellis_coder.py [--models minilm,query,silero]
        [--rates 2,3,4] [--out results/trellis-coder.json] [--keep DIR] [--coder both|on|off]
        [--bits-per-bin B]

``query``: MiniLM's layer-0 query alone (coded as a one-tensor model). Each file is
decoded: its size, its bits per weight, the pooled SNR of every floating tensor
(10·log10 Σw²/Σ(w − ŵ)²), its version, and how many trellis tensors took the one coder
(with the neighbours' contexts or not). ``--keep``: the files are kept there (for
`bench/decode_speed.py`). ``--bits-per-bin``: the coder's least saving per bin
(`weightdna.codec.tensor.CODER_BITS_PER_BIN`; 0 keeps it wherever it is smaller).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from adaptive_probe import _coded_params, _model_path  # noqa: E402

from weightdna.codec import tensor  # noqa: E402
from weightdna.codec.compress import compress_model  # noqa: E402
from weightdna.codec.container import read_dna_file  # noqa: E402
from weightdna.codec.ratecontrol import Target  # noqa: E402
from weightdna.weights import ModelWeights, load_weights  # noqa: E402

QUERY = "encoder.layer.0.attention.self.query.weight"


def weights_of(name: str) -> ModelWeights:
    if name == "query":
        weights = load_weights(_model_path("minilm"))
        return ModelWeights.from_tensors({QUERY: weights.tensor(QUERY)})
    return load_weights(_model_path(name))


def run(name: str, rates: list[float], folder: Path,
        modes: tuple[bool, ...] = (False, True)) -> list[dict]:
    weights = weights_of(name)
    state = weights.state_dict()
    signal = sum(float((t.double() ** 2).sum()) for t in state.values()
                 if t.is_floating_point())
    rows = []
    for rate in rates:
        for on in modes:
            tensor.TRELLIS_CODER = on
            out = folder / f"{name}-{rate:g}-{'on' if on else 'off'}.dna"
            start = time.process_time()
            compress_model(weights, out, Target("bits_per_weight", rate), overwrite=True)
            encode_s = time.process_time() - start
            dna = read_dna_file(out)
            start = time.process_time()
            restored = {n: dna.tensor(n) for n in dna.names}
            decode_s = time.process_time() - start
            noise = sum(float(((restored[n].double() - t.double()) ** 2).sum())
                        for n, t in state.items() if t.is_floating_point())
            models = [p["model"] for e in dna.entries
                      if (p := _coded_params(e)) is not None and p["model"]["kind"] == "trellis"]
            coder = [m for m in models if "coder" in m]
            row = {"model": name, "rate": rate, "coder": on, "file": dna.file_bytes,
                   "version": dna.version, "bpw": 8 * dna.file_bytes / weights.total_params,
                   "snr": 10 * math.log10(signal / noise), "trellis_tensors": len(models),
                   "one_coder": len(coder),
                   "with_neighbours": sum(m["neighbours"] != [0, 0] for m in coder),
                   "encode_cpu_s": encode_s, "decode_cpu_s": decode_s}
            rows.append(row)
            print(json.dumps(row), flush=True)
    tensor.TRELLIS_CODER = True
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,query,silero")
    parser.add_argument("--rates", default="2,3,4")
    parser.add_argument("--out", default="")
    parser.add_argument("--keep", default="")
    parser.add_argument("--coder", choices=("both", "on", "off"), default="both")
    parser.add_argument("--bits-per-bin", type=float, default=tensor.CODER_BITS_PER_BIN,
                        help="the coder's least saving per bin (0: kept wherever smaller)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    tensor.CODER_BITS_PER_BIN = args.bits_per_bin
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.coder]
    rows = [row for name in args.models.split(",") for row in run(name, rates, folder, modes)]
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    if len(modes) < 2:
        return
    print("| model | bpw target | coder | file bytes | bpw | SNR dB | ΔSNR dB | version | "
          "one coder / trellis tensors (with neighbours) |\n|---|---:|---|---:|---:|---:|---:|"
          "---:|---|")
    for off, on in zip(rows[::2], rows[1::2], strict=True):
        for r in (off, on):
            delta = f"{r['snr'] - off['snr']:+.3f}" if r is on else ""
            print(f"| {r['model']} | {r['rate']:g} | {'on' if r['coder'] else 'off'} | "
                  f"{r['file']} | {r['bpw']:.4f} | {r['snr']:.3f} | {delta} | {r['version']} | "
                  f"{r['one_coder']}/{r['trellis_tensors']} ({r['with_neighbours']}) |")


if __name__ == "__main__":
    main()
