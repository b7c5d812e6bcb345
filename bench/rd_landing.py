"""Where `weightdna bench rd`'s weightdna points land against their size targets, and their
SNR at equal size against a peer's frontier (NNCodec at its best by default).

    .venv/bin/python bench/rd_landing.py results/rd/A.json [B.json ...]
        [--peer results/rd/minilm-nncodec-best.json] [--peer-method nncodec]

For each run (one column group each): every weightdna target's landed bits per weight,
landed / target, and SNR, then the run's SNR at the target interpolated between its
points (`RateDistortion.snr_at`, as the report does), the peer's SNR there (its points
read from ``--peer``, interpolated the same way) and the difference; the per-row limit
from the run's JSON. Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from weightdna.baselines.result import BaselineResult
from weightdna.baselines.sweep import DNA_CODEC, RateDistortion

FIELDS = ("name", "setting", "tensors", "numel", "nbytes", "signal", "noise",
          "normalised_noise", "max_abs_error", "encode_s", "decode_s", "lossless")


def load(path: Path) -> tuple[RateDistortion, dict]:
    data = json.loads(path.read_text())
    results = [BaselineResult(**{k: p[k] for k in FIELDS}) for p in data["points"]]
    rd = RateDistortion(tuple(data["rates"]), tuple(data["tensors"]), data["numel"], results)
    return rd, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--peer", type=Path, default=Path("results/rd/minilm-nncodec-best.json"))
    parser.add_argument("--peer-method", default="nncodec")
    args = parser.parse_args(argv)
    peer, _ = load(args.peer)
    runs = [load(p) for p in args.runs]
    head = ["target"]
    for path in args.runs:
        head += [f"{path.stem} bpw", "landed/target", "SNR dB", "SNR at target",
                 f"− {args.peer_method}"]
    head += [f"{args.peer_method} at target", "per-row limit"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    rates = sorted({r for rd, _ in runs for r in rd.rates})
    for rate in rates:
        row = [f"{rate:g}"]
        nn = peer.snr_at(args.peer_method, rate)
        limit = None
        for rd, data in runs:
            point = next((p for p in rd.points(DNA_CODEC)
                          if re.match(rf"target {rate:g} bpw\b", p.setting)), None)
            at = rd.snr_at(DNA_CODEC, rate)
            if point is None:
                row += ["—"] * 3
            else:
                row += [f"{point.bits_per_weight:.4f}", f"{point.bits_per_weight / rate:.4f}",
                        f"{point.snr_db:.3f}"]
            row += ["—" if at is None else f"{at:.2f}",
                    "—" if at is None or nn is None else f"{at - nn:+.2f}"]
            limit = data.get("limit_snr_db", {}).get(str(rate), limit)
        row += ["—" if nn is None else f"{nn:.2f}", "—" if limit is None else f"{limit:.2f}"]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
