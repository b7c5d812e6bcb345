"""Lossless coding beside ZipNN and zstd −19 (issue 15): size and single-thread speed.

    .venv/bin/python bench/lossless.py [--models minilm,mlp,cnn] [--dtypes float32,bfloat16,float16]
                                       [--repeats 2] [--no-zstd] [--cpu-time] [--markdown]
                                       [--json F]

For each model and dtype (its float tensors cast to it; MiniLM's one int64 tensor, 512
position ids, left out: ZipNN takes no int64), every tensor goes through
three codecs in the same process, one after the other:

- **ours**: the path `weightdna compress --lossless` takes per tensor
  (`encode_tensor(..., lossless=True, fast=True)`: lanes, format version 10, for tensors
  of 2^14+ elements, and `decode_tensor`); bytes = the whole .dna file
  of those tensors (`write_dna_file`: prefix, header with every name, shape and param,
  sections); and again without the header ("ours, sections only", the same timings):
  the tensors' coded bytes alone, nearer to what ZipNN's outputs hold;
- with ``--fields``, **ours, fields**: the same with ``fast=False``, the fields coding
  (format version 7) that `--lossless` took before version 10;
- **ZipNN** 0.5.4, `threads=1`, bytes as it returns them per tensor (its own header
  included, no names);
- **zstd −19** of the tensor's bytes, one frame (`weightdna.baselines.lossless.run_zstd`'s
  coder), single-threaded.

Every restored tensor is checked bit for bit. Throughput is the model's bytes (in that
dtype) over the summed seconds of the codec's own calls; casting is not timed. Each codec's
time is the best of ``--repeats`` passes (zstd −19: one pass), so a pass slowed by the
other jobs of a shared machine counts less. numba's compiled code is loaded (a first
encode and decode of a small tensor) before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from weightdna.codec import decode_tensor, encode_tensor, write_dna_file
from weightdna.codec.dtypes import BITS_DTYPES, tensor_bytes
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes

# The last `ours` run's bytes of sections alone (no header: names, shapes, params), the
# part comparable to ZipNN's per-tensor outputs.
SECTIONS_ONLY: list[int] = []
# The clock every codec call is timed by: wall time, or with --cpu-time the process's CPU
# time (every thread of it, so a codec's helper threads are counted; less hurt by the
# other jobs of a shared machine than wall time).
CLOCK = [time.perf_counter]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load(model: str) -> dict[str, torch.Tensor]:
    if model == "minilm":
        from safetensors.torch import load_file

        from weightdna.weights.minilm import minilm_path

        return load_file(str(minilm_path() / "model.safetensors"))
    from weightdna.train import train_digits_cnn, train_digits_mlp

    run = (train_digits_mlp if model == "mlp" else train_digits_cnn)()
    return {k: torch.from_numpy(np.array(v, dtype=np.float32))
            for k, v in run.model.state_dict().items()}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    kind = BITS_DTYPES[a.element_size()]
    return torch.equal(a.reshape(-1).view(kind), b.reshape(-1).view(kind))


def ours(tensors: dict[str, torch.Tensor], fast: bool = True) -> tuple[int, float, float]:
    enc = dec = 0.0
    entries, blobs = [], []
    for name, t in tensors.items():
        start = CLOCK[0]()
        entry, sections = encode_tensor(t, name=name, lossless=True, fast=fast)
        middle = CLOCK[0]()
        back = decode_tensor(entry, sections)
        enc, dec = enc + middle - start, dec + CLOCK[0]() - middle
        assert same_bits(back, t), name
        entries.append(entry)
        blobs.append(sections)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.dna"
        write_dna_file(path, entries, blobs)
        SECTIONS_ONLY.append(sum(len(b) for sections in blobs for b in sections.values()))
        return path.stat().st_size, enc, dec


def zipnn(tensors: dict[str, torch.Tensor]) -> tuple[int, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import zipnn as z
    size = enc = dec = 0.0
    for name, t in tensors.items():
        kind = {torch.float32: "float32", torch.bfloat16: "bfloat16",
                torch.float16: "float16"}[t.dtype]
        buffer = bytearray(tensor_bytes(t))  # it reorders its input in place: a copy
        start = CLOCK[0]()
        data = z.ZipNN(input_format="byte", bytearray_dtype=kind, threads=1).compress(buffer)
        middle = CLOCK[0]()
        raw = z.ZipNN(input_format="byte", bytearray_dtype=kind, threads=1).decompress(data)
        enc, dec = enc + middle - start, dec + CLOCK[0]() - middle
        assert bytes(raw) == tensor_bytes(t), name
        size += len(data)
    return int(size), enc, dec


def zstd19(tensors: dict[str, torch.Tensor]) -> tuple[int, float, float]:
    size = enc = dec = 0.0
    for name, t in tensors.items():
        raw = tensor_bytes(t)
        start = CLOCK[0]()
        data = compress_bytes(raw, 19)
        middle = CLOCK[0]()
        back = decompress_bytes(data, len(raw), name)
        enc, dec = enc + middle - start, dec + CLOCK[0]() - middle
        assert back == raw, name
        size += len(data)
    return int(size), enc, dec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm,mlp,cnn")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-zstd", action="store_true", help="skip zstd -19 (slow)")
    parser.add_argument("--fields", action="store_true",
                        help="also the fields coding (format version 7), slow")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time, not wall time")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    print(f"clock: {'process CPU time' if args.cpu_time else 'wall time'}; load average at "
          f"the start: {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    torch.set_num_threads(1)
    warm = torch.randn(4096)
    for dtype in DTYPES.values():  # numba's compiled code loaded, not timed
        ours({"warm": warm.to(dtype)})
        ours({"warm": torch.randn(1 << 14).to(dtype)})
    rows = []
    for model in args.models.split(","):
        source = load(model)
        for dname in args.dtypes.split(","):
            tensors = {k: v.to(DTYPES[dname]) for k, v in source.items()
                       if v.is_floating_point()}
            weights = sum(t.numel() for t in tensors.values())
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
            codecs = [("ours", ours, args.repeats), ("ZipNN", zipnn, args.repeats)]
            if args.fields:
                codecs.insert(1, ("ours, fields", lambda ts: ours(ts, fast=False),
                                  args.repeats))
            if not args.no_zstd:
                codecs.append(("zstd -19", zstd19, 1))
            for codec, run, repeats in codecs:
                results = [run(tensors) for _ in range(repeats)]
                size = results[0][0]
                enc, dec = min(r[1] for r in results), min(r[2] for r in results)
                row = {"model": model, "dtype": dname, "codec": codec, "weights": weights,
                       "bytes": size, "bits_per_weight": 8 * size / weights,
                       "compress_MBps": nbytes / enc / 1e6,
                       "decompress_MBps": nbytes / dec / 1e6}
                rows.append(row)
                if codec.startswith("ours"):
                    rows.append({**row, "codec": f"{codec}, sections only",
                                 "bytes": SECTIONS_ONLY[-1],
                                 "bits_per_weight": 8 * SECTIONS_ONLY[-1] / weights})
                print(f"{model} {dname} {codec}: {row['bits_per_weight']:.3f} bits/weight, "
                      f"compress {row['compress_MBps']:.1f} MB/s, decompress "
                      f"{row['decompress_MBps']:.1f} MB/s", file=sys.stderr, flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.markdown:
        print("| model | dtype | codec | bits/weight | vs ZipNN size | compress MB/s | "
              "decompress MB/s | compress / ZipNN | decompress / ZipNN |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            peer = next(p for p in rows if p["model"] == r["model"]
                        and p["dtype"] == r["dtype"] and p["codec"] == "ZipNN")
            print(f"| {r['model']} | {r['dtype']} | {r['codec']} | {r['bits_per_weight']:.3f} | "
                  f"{100 * (r['bytes'] / peer['bytes'] - 1):+.2f}% | "
                  f"{r['compress_MBps']:.1f} | {r['decompress_MBps']:.1f} | "
                  f"{r['compress_MBps'] / peer['compress_MBps']:.2f} | "
                  f"{r['decompress_MBps'] / peer['decompress_MBps']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
