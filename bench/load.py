"""Loading a .dna file straight into torch: `weightdna.load_file` against `decompress_model`
(then `safetensors.torch.load_file`) and against `safetensors.torch.load_file` of the
original (memory-mapped: it reads pages only when used), each in a fresh process, wall
and CPU seconds and peak RSS (VmHWM; "above start": after importing torch).

    .venv/bin/python bench/load.py [--bits 4] [--repeats 2]

The model is all-MiniLM-L6-v2 (22.7M weights), compressed once at --bits bits per weight.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    def hwm():  # this process's peak RSS in KiB (ru_maxrss would carry the parent's over)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    how, path, scratch = sys.argv[1], sys.argv[2], sys.argv[3]
    base = hwm()
    wall, cpu = time.perf_counter(), time.process_time()
    if how == "imports":  # the constant: the codec's modules, nothing decoded
        import weightdna
        from weightdna.codec import container, tensor, trellis
        tensors = {}
    elif how == "load_file":
        import weightdna
        tensors = weightdna.load_file(path)
    elif how == "decompress":
        from safetensors.torch import load_file
        from weightdna.codec.compress import decompress_model
        decompress_model(path, scratch, overwrite=True)
        tensors = load_file(scratch)
    else:
        from safetensors.torch import load_file
        tensors = load_file(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = hwm()
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mib": peak / 1024,
                      "above_start_mib": (peak - base) / 1024, "model_mib": size / 2**20}))
""")


def run(how: str, path: Path, scratch: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, how, str(path), str(scratch)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights, minilm_path

    source = minilm_path() / "model.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        dna, scratch = Path(tmp) / "m.dna", Path(tmp) / "restored.safetensors"
        compress_model(load_weights(source), dna, Target("bits_per_weight", args.bits))
        rows = []
        for repeat in range(args.repeats):  # interleaved: the box's load drifts
            for how, path in (("imports", dna), ("load_file", dna), ("decompress", dna),
                              ("safetensors", source)):
                rows.append({"how": how, "repeat": repeat, **run(how, path, scratch)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| method | wall s | CPU s | peak RSS MiB | above start MiB | model MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['how']} | {row['wall']:.2f} | {row['cpu']:.2f} | {row['peak_mib']:.0f} | "
              f"{row['above_start_mib']:.0f} | {row['model_mib']:.1f} |")
    for repeat in range(args.repeats):
        pair = {r["how"]: r for r in rows if r["repeat"] == repeat}
        print(f"repeat {repeat}: load_file / decompress: wall "
              f"{pair['load_file']['wall'] / pair['decompress']['wall']:.2f}, CPU "
              f"{pair['load_file']['cpu'] / pair['decompress']['cpu']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
