"""Feasibility of a faster lossless coder (issue 15; not the codec, writes no file): bf16's
high byte (sign and 7 exponent bits) by a static rANS coder with 4 interleaved lanes in
numba, its low byte copied raw, against ZipNN on the same buffer, in CPU time.

    .venv/bin/python bench/lossless_lanes.py [--repeats 3]

All of MiniLM's float tensors cast to bf16 and joined into one buffer (22.7M weights).
The question it answers: how near ZipNN's per-core speed a plain table-driven coder in
numba comes, before any context model (format version 9 would need such a coder).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numba
import numpy as np
import torch

PREC = 12
TOTAL = 1 << PREC
LOWER = 1 << 16


@numba.njit(cache=True)
def encode(symbols, freq, cum, lanes, words):
    """Push ``symbols`` last first, element i on lane i % lanes; returns the word count
    (words come out last first; each lane's final state last, lane 0's at the very end)."""
    x = np.full(lanes, LOWER, np.int64)
    k = 0
    for i in range(symbols.size - 1, -1, -1):
        j = i % lanes
        s = symbols[i]
        f = freq[s]
        if x[j] >= (f << (32 - PREC)):
            words[k] = x[j] & 0xFFFF
            k += 1
            x[j] >>= 16
        x[j] = ((x[j] // f) << PREC) + x[j] % f + cum[s]
    for j in range(lanes - 1, -1, -1):
        words[k] = x[j] & 0xFFFF
        words[k + 1] = x[j] >> 16
        k += 2
    return k


@numba.njit(cache=True)
def decode4(words, n, lut, fc, low, out):
    """Four lanes (``words`` in reading order); out[i] = symbol << 8 | low[i]."""
    m = TOTAL - 1
    x0 = (np.int64(words[0]) << 16) | words[1]
    x1 = (np.int64(words[2]) << 16) | words[3]
    x2 = (np.int64(words[4]) << 16) | words[5]
    x3 = (np.int64(words[6]) << 16) | words[7]
    w = 8
    for i in range(0, n - 3, 4):
        s0, s1, s2, s3 = lut[x0 & m], lut[x1 & m], lut[x2 & m], lut[x3 & m]
        f0, f1, f2, f3 = fc[s0], fc[s1], fc[s2], fc[s3]
        x0 = (f0 >> 16) * (x0 >> PREC) + (x0 & m) - (f0 & 0xFFFF)
        x1 = (f1 >> 16) * (x1 >> PREC) + (x1 & m) - (f1 & 0xFFFF)
        x2 = (f2 >> 16) * (x2 >> PREC) + (x2 & m) - (f2 & 0xFFFF)
        x3 = (f3 >> 16) * (x3 >> PREC) + (x3 & m) - (f3 & 0xFFFF)
        if x0 < LOWER:
            x0 = (x0 << 16) | words[w]
            w += 1
        if x1 < LOWER:
            x1 = (x1 << 16) | words[w]
            w += 1
        if x2 < LOWER:
            x2 = (x2 << 16) | words[w]
            w += 1
        if x3 < LOWER:
            x3 = (x3 << 16) | words[w]
            w += 1
        out[i] = (np.uint16(s0) << 8) | low[i]
        out[i + 1] = (np.uint16(s1) << 8) | low[i + 1]
        out[i + 2] = (np.uint16(s2) << 8) | low[i + 2]
        out[i + 3] = (np.uint16(s3) << 8) | low[i + 3]
    return w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from safetensors.torch import load_file

    from weightdna.weights.minilm import minilm_path

    print(f"load average at the start: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    source = load_file(str(minilm_path() / "model.safetensors"))
    v = np.concatenate([t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).ravel()
                        for t in source.values() if t.is_floating_point()])
    n = v.size // 4 * 4
    v = v[:n]
    high, low = (v >> 8).astype(np.uint8), (v & 0xFF).astype(np.uint8)
    counts = np.bincount(high, minlength=256)
    freq = np.where(counts > 0, np.maximum(1, np.rint(counts * TOTAL / n)), 0).astype(np.int64)
    freq[np.argmax(freq)] += TOTAL - freq.sum()
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.int64)
    lut = np.repeat(np.arange(256), freq).astype(np.uint8)
    fc = (freq << 16) | cum
    words = np.empty(2 * n + 16, np.uint16)
    out = np.empty(n, np.uint16)
    encode(high[:64], freq, cum, 4, words)  # compiled before timing
    decode4(words[:16][::-1].copy(), 4, lut, fc, low[:4], out[:4])
    clock = time.process_time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import zipnn as z
    for _ in range(args.repeats):
        start = clock()
        k = encode(high, freq, cum, 4, words)
        stream = words[:k][::-1].copy()
        middle = clock()
        decode4(stream, n, lut, fc, low, out)
        end = clock()
        assert np.array_equal(out, v)
        print(f"lanes: {(16 * k + 8 * n) / n:.3f} bits/weight, compress "
              f"{2 * n / (middle - start) / 1e6:.0f} MB/s, decompress "
              f"{2 * n / (end - middle) / 1e6:.0f} MB/s")
        buffer = bytearray(v.tobytes())
        start = clock()
        data = z.ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1).compress(
            buffer)
        middle = clock()
        back = z.ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1).decompress(
            data)
        end = clock()
        assert bytes(back) == v.tobytes()
        print(f"ZipNN: {8 * len(data) / n:.3f} bits/weight, compress "
              f"{2 * n / (middle - start) / 1e6:.0f} MB/s, decompress "
              f"{2 * n / (end - middle) / 1e6:.0f} MB/s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
