"""Where the lossless coder's time goes (issue 15): one thread, MiniLM's float tensors.

    .venv/bin/python bench/lossless_profile.py [--dtypes float32,bfloat16,float16] [--profile]

Encodes every float tensor of all-MiniLM-L6-v2 cast to each dtype as `weightdna compress
--lossless` does (`encode_tensor(..., lossless=True, fast=True)`, lanes; with ``--fields``
the fields coding, ``fast=False``), then decodes them all
(`decode_tensor`), after a first encode and decode of a small tensor (numba's compiled
code loaded, not timed). Prints the CPU time (`time.thread_time`) of each half as MB/s of
the model's bytes in that dtype, the load average, and a sha256 over every tensor's params
and sections (compare it before and after a change that must keep the bytes). With
``--profile``, the same under cProfile, its top functions by own time, and the callers of
zstd and the copies.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import time

import torch

from weightdna.codec import decode_tensor, encode_tensor
from weightdna.codec.dtypes import BITS_DTYPES


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    kind = BITS_DTYPES[b.element_size()]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(kind), b.reshape(-1).view(kind))


def top(profile: cProfile.Profile, label: str) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("tottime")
    stats.print_stats(14)
    stats.print_callers("compress_bytes|tobytes|astype")
    print(label)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--fields", action="store_true",
                        help="the fields coding (fast=False), not lanes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from safetensors.torch import load_file

    from weightdna.weights.minilm import minilm_path

    source = {k: v for k, v in load_file(str(minilm_path() / "model.safetensors")).items()
              if v.is_floating_point()}
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        tensors = {k: v.to(dtype) for k, v in source.items()}
        entry, sections = encode_tensor(torch.randn(1 << 14).to(dtype), name="w", lossless=True,
                                        fast=not args.fields)
        decode_tensor(entry, sections)
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        enc_prof = cProfile.Profile() if args.profile else None
        start = time.thread_time()
        if enc_prof:
            enc_prof.enable()
        coded = {k: encode_tensor(t, name=k, lossless=True, fast=not args.fields)
                 for k, t in tensors.items()}
        if enc_prof:
            enc_prof.disable()
        middle = time.thread_time()
        dec_prof = cProfile.Profile() if args.profile else None
        restored = {}
        if dec_prof:
            dec_prof.enable()
        for k, (entry, sections) in coded.items():
            restored[k] = decode_tensor(entry, sections)
        if dec_prof:
            dec_prof.disable()
        end = time.thread_time()
        for k, t in tensors.items():  # bit for bit, not timed
            assert same_bits(restored[k], t), k
        digest = hashlib.sha256()
        for entry, sections in coded.values():
            digest.update(repr(sorted((key, repr(v)) for key, v in entry.items())).encode())
            for section in sorted(sections):
                digest.update(section.encode())
                digest.update(sections[section])
        print(f"{name} sha256 {digest.hexdigest()[:16]} compress "
              f"{nbytes / (middle - start) / 1e6:.1f} MB/s ({middle - start:.2f} s CPU), "
              f"decompress {nbytes / (end - middle) / 1e6:.1f} MB/s ({end - middle:.2f} s CPU), "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        if enc_prof and dec_prof:
            top(enc_prof, f"compress {name}")
            top(dec_prof, f"decompress {name}")


if __name__ == "__main__":
    main()
