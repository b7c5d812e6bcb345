"""Compress and decompress across cores, on a local Ray cluster, and resumed after a kill.

    .venv/bin/python bench/scale.py [--model PATH] [--bits 4] [--workers 1,2] [--ray]
                                    [--resume] [--markdown] [--json F]

Each run is a fresh subprocess (`weightdna compress` / `decompress`, as a user runs them,
``--check none``), timed whole (interpreter start, imports, the pool's or cluster's start
included), its peak memory the largest sum of the resident sets of its processes (the
command and its workers, sampled every 0.1 s from /proc). Every .dna file is
compared with the first, byte for byte, as is every restored safetensors file.
``--resume`` kills a compress (SIGKILL, its whole process group) once half the time of
the first run has passed and finishes it with ``--resume``: the two commands' seconds.
The model defaults to all-MiniLM-L6-v2 (22.7M weights); ``--synthetic FOLDER`` writes a
Llama-shaped bfloat16 checkpoint with MiniLM's weight statistics (`write_synthetic`)
and benchmarks that. The box these numbers come from
has 2 cores shared with other jobs: repeat a run before trusting a ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MB = 1 << 20


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session_rss(session: int) -> int:
    """Bytes resident in every process of ``session`` (a command and its workers)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == session:  # the session id (field 6 of /proc/PID/stat)
                total += int(Path(entry.path, "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


def _run(args: list[str], kill_after: float | None = None) -> dict:
    """One CLI command in its own session: seconds, the peak of its processes' summed
    resident memory (sampled every 0.1 s), killed or not."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "weightdna", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed, peak = False, 0
    while proc.poll() is None:
        peak = max(peak, _session_rss(proc.pid))
        if kill_after is not None and time.perf_counter() - start > kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.1)
    err = proc.communicate()[1]
    seconds = time.perf_counter() - start
    if proc.returncode and not killed:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode()}")
    return {"seconds": seconds, "peak_mb": peak / MB, "killed": killed}


# Statistics of MiniLM's 37 weight matrices (the attention and MLP ones), measured by
# `--measure` (median, min, max) and written in here: the spread of the rows' RMS (std of log RMS,
# median 0.15, 0.03-0.43), the kurtosis of the row-normalised weights (median 3.32,
# 2.97-9.67: Student's t of 23 degrees of freedom has 3 + 6/19 = 3.32; t(5), kurtosis 9,
# for the heaviest) and the share of columns whose RMS is over 3× the median column's
# (median 0, at most 0.13%).
ROW_LOG_RMS_STD = 0.15
TAIL_DEGREES = 23
OUTLIER_COLUMNS = 0.0013
OUTLIER_SCALE = 4.0
FAN_IN_GAIN = 1.41  # RMS × √fan_in, MiniLM's median


def measure_minilm() -> dict:
    """The statistics above, measured on MiniLM's attention and MLP weight matrices."""
    import numpy as np

    from weightdna.weights import load_weights, minilm_path

    weights = load_weights(minilm_path())
    spread, kurtosis, outliers, gain = [], [], [], []
    for info in weights.infos:
        if info.ndim == 2 and ("dense" in info.name or "attention.self." in info.name):
            a = weights.numpy(info.name)
            rms = np.sqrt((a**2).mean(axis=1))
            spread.append(float(np.std(np.log(rms))))
            z = a / rms[:, None]
            kurtosis.append(float((z**4).mean()))
            column = np.sqrt((z**2).mean(axis=0))
            outliers.append(float((column > 3 * np.median(column)).mean()))
            gain.append(float(np.sqrt((a**2).mean()) * np.sqrt(a.shape[1])))
    return {name: (float(np.median(v)), min(v), max(v)) for name, v in (
        ("row_log_rms_std", spread), ("kurtosis", kurtosis),
        ("outlier_columns", outliers), ("fan_in_gain", gain))} | {"matrices": len(gain)}


def _matrix(rng, rows: int, columns: int):  # -> torch.Tensor (bfloat16)
    """One Llama-like weight matrix with MiniLM's statistics (above), made a block of rows
    at a time in float32 and stored as bfloat16."""
    import numpy as np
    import torch

    out = torch.empty((rows, columns), dtype=torch.bfloat16)
    column_scale = np.ones(columns, dtype=np.float32)
    outliers = rng.random(columns) < OUTLIER_COLUMNS
    column_scale[outliers] = OUTLIER_SCALE
    heavy = 1.0 / np.sqrt(TAIL_DEGREES / (TAIL_DEGREES - 2))  # t's variance to 1
    for start in range(0, rows, 1024):
        n = min(1024, rows - start)
        block = rng.standard_t(TAIL_DEGREES, size=(n, columns)).astype(np.float32) * heavy
        row_rms = np.exp(rng.normal(0.0, ROW_LOG_RMS_STD, size=(n, 1))).astype(np.float32)
        block *= row_rms * column_scale * (FAN_IN_GAIN / np.sqrt(columns))
        out[start : start + n] = torch.from_numpy(block).to(torch.bfloat16)
    return out


def write_synthetic(folder: Path, layers: int, hidden: int, inter: int, vocab: int,
                    shard_bytes: int = 2_000_000_000) -> int:
    """A Llama-shaped bfloat16 checkpoint in the hub's layout (shards of at most
    ``shard_bytes`` and model.safetensors.index.json); returns its weights."""
    import numpy as np
    import torch

    from weightdna.weights import save_weights

    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}self_attn.{name}.weight"] = (hidden, hidden)
        shapes[f"{p}mlp.gate_proj.weight"] = (inter, hidden)
        shapes[f"{p}mlp.up_proj.weight"] = (inter, hidden)
        shapes[f"{p}mlp.down_proj.weight"] = (hidden, inter)
        shapes[f"{p}input_layernorm.weight"] = (hidden,)
        shapes[f"{p}post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    folder.mkdir(parents=True, exist_ok=True)
    groups, size = [[]], 0
    for name, shape in shapes.items():
        nbytes = 2 * int(np.prod(shape))
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map = {}
    for k, names in enumerate(groups):
        file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name in names:
            shape = shapes[name]
            tensors[name] = (_matrix(rng, *shape) if len(shape) == 2 else
                             torch.from_numpy(1.0 + 0.05 * rng.standard_normal(shape)
                                              .astype(np.float32)).to(torch.bfloat16))
            weight_map[name] = file
        save_weights(tensors, folder / file, overwrite=True)
        del tensors
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    return sum(int(np.prod(s)) for s in shapes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a safetensors file or folder (default: MiniLM)")
    parser.add_argument("--synthetic", metavar="FOLDER",
                        help="write a Llama-shaped bfloat16 sharded checkpoint here first and "
                             "benchmark it (--layers, --hidden, --inter, --vocab: 16, 2048, "
                             "5632, 32000 is the issue's 1.1B model)")
    parser.add_argument("--measure", action="store_true",
                        help="print MiniLM's weight statistics the generator uses, and stop")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--inter", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--bits", type=float, default=4.0)
    parser.add_argument("--workers", default="1,2", help="comma-separated counts")
    parser.add_argument("--ray", action="store_true", help="also a local Ray cluster")
    parser.add_argument("--resume", action="store_true", help="also kill and resume")
    parser.add_argument("--out", default="/tmp/weightdna-scale", help="scratch folder")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    from weightdna.weights import load_weights, minilm_path

    if args.measure:
        print(json.dumps(measure_minilm(), indent=1))
        return
    if args.synthetic:
        model = Path(args.synthetic)
        made = write_synthetic(model, args.layers, args.hidden, args.inter, args.vocab)
        print(f"wrote {model}: {made:,} weights", file=sys.stderr)
    else:
        model = Path(args.model) if args.model else minilm_path()
    weights = load_weights(model).total_numel
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bits = ["--bits-per-weight", f"{args.bits:g}", "--check", "none", "--force"]
    rows, reference, restored = [], None, None
    for n in [int(w) for w in args.workers.split(",")]:
        dna = out / f"w{n}.dna"
        row = _run(["compress", str(model), "-o", str(dna), "--workers", str(n), *bits])
        same = reference is None or _digest(dna) == reference
        reference = reference or _digest(dna)
        rows.append({"run": f"compress --workers {n}", **row, "same_bytes": same})
        back = out / f"w{n}.safetensors"
        row = _run(["decompress", str(dna), "-o", str(back), "--workers", str(n), "--force"])
        same = restored is None or _digest(back) == restored
        restored = restored or _digest(back)
        rows.append({"run": f"decompress --workers {n}", **row, "same_bytes": same})
    if args.ray:
        dna = out / "ray.dna"
        row = _run(["compress", str(model), "-o", str(dna), "--ray", "--workers", "2", *bits])
        rows.append({"run": "compress --ray (local, 2 CPUs)", **row,
                     "same_bytes": _digest(dna) == reference})
    if args.resume:
        dna = out / "resumed.dna"
        first = rows[0]["seconds"]
        killed = _run(["compress", str(model), "-o", str(dna), "--workers", "1", *bits],
                      kill_after=first / 2)
        rows.append({"run": f"compress killed after {first / 2:.0f} s", **killed,
                     "same_bytes": None})
        row = _run(["compress", str(model), "-o", str(dna), "--workers", "1", "--resume",
                    *bits])
        rows.append({"run": "compress --resume", **row,
                     "same_bytes": _digest(dna) == reference})
    for row in rows:
        row["weights_per_s"] = weights / row["seconds"]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.markdown:
        print("| run | seconds | weights/s | peak RSS MB (all processes) | same bytes |")
        print("|---|---:|---:|---:|---|")
        for r in rows:
            same = "" if r["same_bytes"] is None else ("yes" if r["same_bytes"] else "**no**")
            print(f"| {r['run']} | {r['seconds']:.1f} | {r['weights_per_s']:,.0f} | "
                  f"{r['peak_mb']:.0f} | {same} |")
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
