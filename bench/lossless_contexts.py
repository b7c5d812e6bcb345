"""How small could context models make lossless MiniLM? (issue 15; writes no file)

    PYTHONPATH=$PWD .venv/bin/python bench/lossless_contexts.py [--dtypes bfloat16,float16,float32]

For every float tensor of all-MiniLM-L6-v2 cast to each dtype, the heads as lanes split
them (`weightdna.codec.lanes`: the exponent and top 2 mantissa bits, fp16 3), coded by an
ideal adaptive coder (the code length an arithmetic coder would reach: −log2 of each
head's probability before it is seen, no table sent), its probability in a context
c = (count(c, head) + α·q(head)) / (count(c) + α), q the tensor's order-0 head frequencies
as lanes sends them (12-bit, their table's bytes counted), α = 16, then counted. The
contexts (row-major; a 2-D tensor's rows as torch stores them):

- ``static``: lanes' own cost, order 0 (the 12-bit table, its bytes counted);
- ``adaptive``: no context (order 0 learnt along the tensor);
- ``previous exponent``: the element before's exponent; ``previous head`` its head;
- ``above exponent``: the same column's exponent a row up (2-D; else previous);
- ``previous + above``: both exponents;
- ``row median``: the row's median exponent, sent (8 bits a row, counted);
- ``row median + previous``: both.

The rest of each element (its low bits) counted as raw, as lanes stores it (fp32: its
low planes as `encode_lanes` codes them). Prints bits per weight of the whole model for
each, and the goal of 3% under ZipNN 0.5.4's size (measured here on the same tensors).
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numba
import numpy as np
import torch

from weightdna.codec.floatfields import TOTAL, _normalise
from weightdna.codec.lanes import LAYOUTS, encode_lanes

ALPHA = 16.0
CONTEXTS = ["static", "adaptive", "previous exponent", "previous head", "above exponent",
            "previous + above", "row median", "row median + previous"]


@numba.njit(cache=True)
def _adaptive_bits(heads, contexts, ncontexts, q):
    """Σ −log2 p(head | context), p = (count(c, h) + ALPHA q(h)) / (count(c) + ALPHA)."""
    counts = np.zeros((ncontexts, q.size), dtype=np.float64)
    totals = np.zeros(ncontexts, dtype=np.float64)
    bits = 0.0
    for i in range(heads.size):
        c, h = contexts[i], heads[i]
        bits -= np.log2((counts[c, h] + ALPHA * q[h]) / (totals[c] + ALPHA))
        counts[c, h] += 1.0
        totals[c] += 1.0
    return bits


def tensor_bits(t: torch.Tensor, dtype: str) -> dict[str, float]:
    """Bits of this tensor under each of CONTEXTS (heads, their table and raw low bits)."""
    width, eb, k = LAYOUTS[dtype]
    v = t.view(torch.int32 if width == 32 else torch.int16).numpy().astype(np.int64)
    v &= (1 << width) - 1
    rows = v.reshape(v.shape[0], -1) if v.ndim >= 2 else v.reshape(1, -1)
    flat = rows.reshape(-1)
    n = flat.size
    rot = ((flat << 1) | (flat >> (width - 1))) & ((1 << width) - 1)
    low = width - eb - k
    heads = (rot >> low).astype(np.int64)
    exponent = (heads >> k).astype(np.int64)
    nexp = 1 << eb
    params, sections = encode_lanes(t.view(torch.int32 if width == 32 else torch.int16)
                                    .numpy().view(np.uint8).reshape(-1), dtype,
                                    mantissa_bits=k)
    static = 8.0 * sum(len(s) for s in sections.values())
    # the raw part: what lanes stores besides the heads' words and tables
    raw = 8.0 * len(sections["low"])
    table = 8.0 * len(sections["tables"])
    counts = np.bincount(heads, minlength=1 << (eb + k))
    q = _normalise(counts[None])[0] / TOTAL
    previous = np.concatenate([[0], exponent[:-1]])
    above = exponent.reshape(rows.shape)
    above = np.concatenate([np.zeros((1, rows.shape[1]), np.int64), above[:-1]]).reshape(-1) \
        if rows.shape[0] > 1 else previous
    median = np.median(exponent.reshape(rows.shape), axis=1).astype(np.int64)
    row_median = np.repeat(median, rows.shape[1])
    median_cost = 8.0 * rows.shape[0]
    contexts = {
        "adaptive": (np.zeros(n, np.int64), 1, 0.0),
        "previous exponent": (previous, nexp, 0.0),
        "previous head": (np.concatenate([[0], heads[:-1]]), 0, 0.0),
        "above exponent": (above, nexp, 0.0),
        "previous + above": (previous * nexp + above, nexp * nexp, 0.0),
        "row median": (row_median, nexp, median_cost),
        "row median + previous": (row_median * nexp + previous, nexp * nexp, median_cost),
    }
    out = {"static": static}
    present, ranks = np.unique(heads, return_inverse=True)  # compact: counts per rank
    for name, (ctx, _, extra) in contexts.items():
        used, ids = np.unique(ctx, return_inverse=True)
        out[name] = _adaptive_bits(ranks.reshape(-1), ids.reshape(-1), used.size,
                                   q[present]) + table + raw + extra
    return out


def zipnn_bytes(tensors: list[torch.Tensor], dtype: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import zipnn as z
    from weightdna.codec.dtypes import tensor_bytes

    return sum(len(z.ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
                   .compress(bytearray(tensor_bytes(t)))) for t in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float16,float32")
    args = parser.parse_args()
    from safetensors.torch import load_file

    from weightdna.weights.minilm import minilm_path

    source = [t for t in load_file(str(minilm_path() / "model.safetensors")).values()
              if t.is_floating_point() and t.numel() >= 64]
    print("| dtype | coding | bits/weight | vs ZipNN |")
    print("|---|---|---:|---:|")
    for name in args.dtypes.split(","):
        tensors = [t.to(getattr(torch, name)).contiguous() for t in source]
        n = sum(t.numel() for t in tensors)
        totals = dict.fromkeys(CONTEXTS, 0.0)
        for t in tensors:
            for key, bits in tensor_bits(t, name).items():
                totals[key] += bits
        zipnn = 8.0 * zipnn_bytes(tensors, name) / n
        for key in CONTEXTS:
            bpw = totals[key] / n
            print(f"| {name} | {key} | {bpw:.4f} | {100 * (bpw / zipnn - 1):+.2f}% |")
        print(f"| {name} | ZipNN 0.5.4 | {zipnn:.4f} | +0.00% |")
        print(f"| {name} | goal: 3% under ZipNN | {0.97 * zipnn:.4f} | -3.00% |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
