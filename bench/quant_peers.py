"""The quantisers users pick today against weightdna on whole all-MiniLM-L6-v2 (or the
digits models), same run.

    PYTHONPATH=. .venv/bin/python bench/quant_peers.py [--peers gguf-Q8_0,bnb-nf4,...]
        [--model minilm|mlp|cnn] [--objective layer|relative|mse] [--no-weightdna]
        [--json out.json]

Every installed peer setting of `weightdna.baselines.quantizers` (GGUF Q8_0/Q5_1/Q5_0/Q4_1/
Q4_0, bitsandbytes NF4/FP4 with and without nested absmax, HQQ 8/4/3/2 bits) codes every
tensor of MiniLM; non-matrices are kept in their source dtype and counted. For each:
bits/weight (every tensor's true bytes over every element), pooled weight SNR over the
floating-point tensors (as `compress_model` reports it) and the mean cosine of 540
sentence embeddings restored against the original (bench/panel.py's MiniLM judge), or
with ``--model mlp|cnn`` the engine's digits model (the recipe, seed 0) and its held-out
accuracy (bench/panel.py's digits judge).
Beside each, weightdna's `compress_model` at a bits/weight target equal to the peer's
(peers within 0.05 bits/weight share one weightdna run, at the lowest of their rates, so
weightdna never gets more bytes than the peer it is set beside); its .dna file is
written, decompressed and judged the same way. ``--objective``: compress_model's
allocation objective ("layer", its default, spends bits where each tensor's relative
error is worst; "mse" maximises the pooled SNR). Peers not installed are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from panel import State, digits_subject, minilm_subject, say  # bench/panel.py's judges

from weightdna.baselines.quantizers import peers
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.options import OBJECTIVES
from weightdna.codec.ratecontrol import Target
from weightdna.weights import load_weights

SHARE = 0.05  # peers this close in bits/weight share one weightdna run


def pooled_snr_db(original: State, restored: State) -> float:
    signal = noise = 0.0
    for name, tensor in original.items():
        if tensor.is_floating_point():
            reference = tensor.double()
            signal += float((reference ** 2).sum())
            noise += float(((reference - restored[name].double()) ** 2).sum())
    return 10 * math.log10(signal / noise) if noise > 0 else math.inf


def run_peer(quantize, original: State) -> tuple[State, float, float]:
    """(restored state, bits/weight over every element, seconds)."""
    started = time.perf_counter()
    restored, stored, count = {}, 0, 0
    for name, tensor in original.items():
        count += tensor.numel()
        if not tensor.is_floating_point():  # integer buffers: stored as they are
            restored[name], stored = tensor, stored + tensor.numel() * tensor.element_size()
            continue
        values, size = quantize(tensor)
        restored[name], stored = values.to(tensor.dtype), stored + size
    return restored, 8.0 * stored / count, time.perf_counter() - started


def run_weightdna(folder: Path, rate: float, objective: str,
                  workdir: Path) -> tuple[State, float, float]:
    dna, out = workdir / "model.dna", workdir / "restored.safetensors"
    started = time.perf_counter()
    report = compress_model(load_weights(folder), dna, Target("bits_per_weight", rate),
                            objective=objective, overwrite=True)
    seconds = time.perf_counter() - started
    decompress_model(dna, out, overwrite=True)
    return load_weights(out).state_dict(), report.bits_per_weight, seconds


def markdown(rows: list[dict], unit: str = "cosine") -> str:
    figure = "mean cosine" if unit == "cosine" else "accuracy"
    lines = [f"| peer (settings) | bits/weight | SNR dB | {figure} | weightdna bits/weight | "
             f"weightdna SNR dB | ΔSNR dB | weightdna {figure} | Δ{figure} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ours = r.get("weightdna")
        tail = ("| – | – | – | – | – |" if ours is None else
                f"| {ours['bits_per_weight']:.3f} | {ours['snr_db']:.2f} | "
                f"{ours['snr_db'] - r['snr_db']:+.2f} | {ours['figure']:.5f} | "
                f"{ours['figure'] - r['figure']:+.5f} |")
        lines.append(f"| {r['peer']} | {r['bits_per_weight']:.3f} | {r['snr_db']:.2f} | "
                     f"{r['figure']:.5f} " + tail)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", help="comma-separated peer settings (default: all installed)")
    parser.add_argument("--objective", default="layer", choices=OBJECTIVES,
                        help="compress_model's allocation objective (default: its default, layer)")
    parser.add_argument("--model", default="minilm", choices=("minilm", "mlp", "cnn"),
                        help="MiniLM (mean cosine) or a digits model (accuracy)")
    parser.add_argument("--no-weightdna", action="store_true", help="peers only")
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    args = parser.parse_args(argv)
    found = peers()
    if args.peers:
        wanted = args.peers.split(",")
        unknown = [name for name in wanted if name not in found]
        if unknown:
            say(f"not installed or unknown: {', '.join(unknown)}; have {', '.join(found)}")
            return 2
        found = {name: found[name] for name in wanted}
    if not found:
        say("no peer installed: pip install gguf bitsandbytes hqq")
        return 2
    models = tempfile.TemporaryDirectory()
    subject = (minilm_subject() if args.model == "minilm"
               else digits_subject(args.model, Path(models.name)))
    original = load_weights(subject.path).state_dict()
    rows = []
    for name, quantize in found.items():
        restored, bpw, seconds = run_peer(quantize, original)
        row = {"peer": name, "bits_per_weight": bpw, "snr_db": pooled_snr_db(original, restored),
               "figure": subject.judge(restored), "seconds": seconds}
        say(f"  {name:18s} {bpw:.3f} bpw  SNR {row['snr_db']:.2f} dB  {subject.unit} "
            f"{row['figure']:.5f}  ({seconds:.1f} s)")
        rows.append(row)
    if not args.no_weightdna:
        ours: list[tuple[float, dict]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for row in sorted(rows, key=lambda r: r["bits_per_weight"]):
                shared = next((o for rate, o in ours
                               if abs(rate - row["bits_per_weight"]) <= SHARE), None)
                if shared is None:
                    rate = row["bits_per_weight"]
                    restored, bpw, seconds = run_weightdna(subject.path, rate, args.objective,
                                                              Path(tmp))
                    shared = {"bits_per_weight": bpw, "seconds": seconds,
                              "snr_db": pooled_snr_db(original, restored),
                              "figure": subject.judge(restored)}
                    say(f"  weightdna @ {rate:.3f}: {bpw:.3f} bpw  SNR {shared['snr_db']:.2f} dB"
                        f"  {subject.unit} {shared['figure']:.5f}  ({seconds:.0f} s)")
                    ours.append((rate, shared))
                row["weightdna"] = shared
    print(markdown(rows, subject.unit))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
