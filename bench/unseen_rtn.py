"""Is it the codec or the model? Round-to-nearest on the real models we never tuned on.

    .venv/bin/python bench/unseen_rtn.py [--models magika,silero,ocr,ocrrec,ocrcls] [--bits 8,4,2]

Every tensor the codec codes at the rate (`weightdna.codec.roles.coding` "rate": weight
matrices, kernels, embeddings) is replaced by `weightdna.baselines.rtn` (symmetric int8/4/2
per output channel, fp16 scales, zstd), every other tensor kept exactly; the model is
judged as in `bench/unseen_cli.py`. Reports the bits per weight of the rounded tensors
(their bytes over their weights; the kept tensors not counted) and the judge's figures.
"""

from __future__ import annotations

import argparse
import sys

import torch
from unseen_cli import figures_text, judge_for

from weightdna.baselines.rtn import decode_rtn, encode_rtn
from weightdna.codec.roles import coding
from weightdna.weights import load_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="magika,silero,ocr")
    parser.add_argument("--bits", default="8,4,2")
    args = parser.parse_args(argv)
    print("| model | RTN | bpw of the rounded tensors | agreement | max Δp (or CER) |\n"
          "|---|---|---:|---:|---:|")
    for name in args.models.split(","):
        path, judge = judge_for(name)
        weights = load_weights(path)
        state = weights.state_dict()
        rated = [i for i in weights.infos if coding(i) == "rate"]
        for bits in (int(b) for b in args.bits.split(",")):
            restored, size = dict(state), 0
            for info in rated:
                tensor = state[info.name]
                data = encode_rtn(tensor, bits)
                size += len(data)
                restored[info.name] = decode_rtn(data, bits, tuple(tensor.shape),
                                                 tensor.dtype)
            figures = judge(path, restored)
            bpw = 8 * size / sum(i.numel for i in rated)
            print(f"{name} int{bits}: {bpw:.3f} bpw, {figures}", file=sys.stderr, flush=True)
            print(f"| {name} | int{bits} | {bpw:.3f} | {figures_text(figures)} |", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
