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
    load = os.getloadavg()[0]
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
    return {"seconds": seconds, "peak_mb": peak / MB, "killed": killed,
            "load": f"{load:.1f}–{os.getloadavg()[0]:.1f}"}


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


# Llama-2-70B's weight matrices (hidden 8192, MLP 28672, vocabulary 32000, grouped-query
# attention with 8 key/value heads of 128: k/v 1024 rows; 80 layers): shape and how many.
LLAMA2_70B = (
    ("q_proj, o_proj", (8192, 8192), 2 * 80),
    ("k_proj, v_proj", (1024, 8192), 2 * 80),
    ("gate_proj, up_proj", (28672, 8192), 2 * 80),
    ("down_proj", (8192, 28672), 80),
    ("embed_tokens, lm_head", (32000, 8192), 2),
)


def _timed(fn, *args):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def project_70b(folder: Path, bits: float) -> dict:
    """Per-task seconds on Llama-2-70B's shapes, measured here in one process on one
    thread: for each shape one task's rows (a row-blocked tensor's first task, or a whole
    tensor below the threshold) of a synthetic bfloat16 matrix with MiniLM's statistics
    (`_matrix`), through each stage a compress runs (first pass, analysis, the trellis's
    preparation, coding, and what the driver then does: from format version 16 it lays
    the tasks' coded streams end to end, the entropy coding being the tasks'), at ``bits`` bits per
    weight; and the driver's λ solve per tensor (its allocation's bisection)."""
    import numpy as np
    import torch

    from weightdna.codec import compress, rowblocks
    from weightdna.codec.ratecontrol import CANDIDATES, Target, apply_objective, bisect_step
    from weightdna.weights import TensorInfo, load_weights, save_weights

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    rng = np.random.default_rng(1)
    target = Target("bits_per_weight", bits)
    folder.mkdir(parents=True, exist_ok=True)
    shapes, analysed = [], []
    for label, shape, count in LLAMA2_70B:
        full = TensorInfo("w", shape, "bfloat16", "weight", 0, "w")
        blocked = rowblocks.splits(full)
        ranges = rowblocks.row_ranges(full) if blocked else [(0, shape[0])]
        rows = ranges[0][1] - ranges[0][0]
        path = save_weights({"w": _matrix(rng, rows, shape[1])},
                            folder / f"{shape[0]}x{shape[1]}.safetensors", overwrite=True)
        weights = load_weights(path)
        info = weights.info("w")
        row = {"tensors": label, "shape": shape, "count": count, "row_blocked": blocked,
               "tasks_per_tensor": len(ranges), "task_weights": info.numel}
        if blocked:
            _, row["first_pass_s"] = _timed(rowblocks._measure_rows, weights, "w", 0, rows)
            kinds = rowblocks.analysed_transforms(info, CANDIDATES)
            part, row["analysis_s"] = _timed(rowblocks._analyse_rows, weights, "w", 0, rows,
                                             rowblocks.sample_stride(info), kinds)
            tc = rowblocks.candidates(info, [part], kinds)
        else:
            _, row["first_pass_s"] = _timed(compress._first_pass, weights, info, target.kind)
            tc, row["analysis_s"] = _timed(compress._analyse, weights, info, CANDIDATES, None)
        apply_objective(tc, "layer")
        analysed.append(tc)
        allocation = bisect_step([tc], lambda a, n=info.numel: a.bits <= bits * n, False,
                                 target, coarse_is_ok=True)
        choice = compress._without_sample(allocation.choices["w"])
        row["quantizer"] = choice.quantizer
        if blocked and choice.candidate is not None:
            steps = rowblocks.steps_of(info, choice)
            search = None
            if choice.quantizer == "trellis":
                prepared, row["prepare_s"] = _timed(
                    rowblocks._prepare_rows, weights, "w", 0, rows, steps,
                    choice.candidate.transform, rowblocks.prepare_stride(info))
                search = rowblocks.search_of(info, [prepared])
            coded, row["encode_s"] = _timed(
                rowblocks._encode_rows, weights, "w", 0, rows, steps, choice.deadzone,
                choice.candidate.transform, rowblocks.search_args(search, 0, rows))
            ((entry, sections), _), row["entropy_s"] = _timed(
                rowblocks.coded, info, steps, search, choice.candidate.transform, [coded])
        else:
            ((entry, sections), _), row["encode_s"] = _timed(compress._encode, weights, "w",
                                                             choice, None, True)
        row["bits_per_weight"] = 8.0 * sum(map(len, sections.values())) / info.numel
        print(row, file=sys.stderr)
        shapes.append(row)
    budget = bits * sum(tc.info.numel for tc in analysed)
    _, solve = _timed(bisect_step, analysed, lambda a: a.bits <= budget, False, target, True)
    return {"shapes": shapes, "solve_s_per_tensor": solve / len(analysed)}


def projection_table(measured: dict, machines: list[int], cores: list[int],
                     rounds: int = 1) -> list[str]:
    """Markdown: the 70B model's hours on K machines × C cores, from the per-task seconds
    (`project_70b`). The tasks spread evenly over K·C cores; the driver's λ solve and its
    entropy coding of the row-blocked tensors run on one core, after them (a bound: in a
    run they overlap the workers' tasks); ``rounds`` rounds of λ solve and final encodes
    (the measure-and-correct rounds of `weightdna.codec.compress`)."""
    tasks = driver = 0.0
    tensors = 0
    for r in measured["shapes"]:
        n = r["count"] * r["tasks_per_tensor"]
        tasks += n * (r["first_pass_s"] + r["analysis_s"]
                      + rounds * (r.get("prepare_s", 0.0) + r["encode_s"]))
        driver += n * rounds * r.get("entropy_s", 0.0)
        tensors += r["count"]
    driver += tensors * rounds * measured["solve_s_per_tensor"]
    lines = ["| machines × cores | " + " | ".join(f"{c} cores" for c in cores) + " |",
             "|---|" + "---:|" * len(cores)]
    for k in machines:
        cells = [f"{(tasks / (k * c) + driver) / 3600:.1f} h" for c in cores]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Task-seconds in all: {tasks:,.0f} (one core: {tasks / 3600:.1f} h); the "
                 f"driver's serial part: {driver:,.0f} s.")
    return lines


# The slice of the synthetic model NNCodec and weightdna both code (`nncodec_slice`).
SLICE_TENSORS = ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                 "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                 "model.layers.0.mlp.gate_proj.weight")


def nncodec_slice(model: Path, folder: Path, qps: list[int]) -> list[dict]:
    """NNCodec (its default settings, one bitstream per QP) and weightdna (`compress_model`
    at NNCodec's bits per weight at each QP, the whole compress with its rate control) on
    layer 0's attention matrices and gate projection of the synthetic model, both in this
    process's machine on one thread: seconds, weights/s, bits/weight and SNR of each."""
    import torch

    from weightdna.baselines.nncodec import run_nncodec
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights, save_weights

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    weights = load_weights(model)
    tensors = {name: weights.tensor(name) for name in SLICE_TENSORS}
    folder.mkdir(parents=True, exist_ok=True)
    path = save_weights(tensors, folder / "slice.safetensors", overwrite=True)
    numel = sum(t.numel() for t in tensors.values())
    rows = []
    for result in run_nncodec(tensors, qps):
        rows.append({"codec": f"NNCodec ({result.setting})", "seconds": result.encode_s,
                     "weights_per_s": numel / result.encode_s,
                     "bits_per_weight": result.bits_per_weight, "snr_db": result.snr_db})
        start = time.perf_counter()
        report = compress_model(load_weights(path), folder / "slice.dna",
                                Target("bits_per_weight", result.bits_per_weight),
                                overwrite=True)
        seconds = time.perf_counter() - start
        rows.append({"codec": "weightdna (compress_model, one thread)", "seconds": seconds,
                     "weights_per_s": numel / seconds,
                     "bits_per_weight": 8.0 * report.file_bytes / numel,
                     "snr_db": report.snr_db})
        print(rows[-2:], file=sys.stderr)
    return rows


def check_folder(source: Path, restored: Path) -> str:
    """That ``restored`` holds the source folder's shard files (the same names) and its
    index, and that every shard loads with safetensors with the source's names, shapes and
    dtypes; a one-line account."""
    from safetensors import safe_open

    names = sorted(p.name for p in source.glob("*.safetensors"))
    found = sorted(p.name for p in restored.glob("*.safetensors"))
    if names != found:
        raise SystemExit(f"{restored}: shards {found}, the source has {names}")
    index = json.loads((restored / "model.safetensors.index.json").read_text())
    if index["weight_map"] != json.loads(
            (source / "model.safetensors.index.json").read_text())["weight_map"]:
        raise SystemExit(f"{restored}: its index differs from the source's")
    tensors = 0
    for name in names:
        with safe_open(str(source / name), "pt") as a, safe_open(str(restored / name), "pt") as b:
            if sorted(a.keys()) != sorted(b.keys()):
                raise SystemExit(f"{name}: other tensors than the source's")
            for key in b.keys():
                x, y = a.get_slice(key), b.get_slice(key)
                if x.get_shape() != y.get_shape() or x.get_dtype() != y.get_dtype():
                    raise SystemExit(f"{name}: {key} differs in shape or dtype")
                tensors += 1
    return f"{len(names)} shards, {tensors} tensors, index: same names, shapes, dtypes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a safetensors file or folder (default: MiniLM)")
    parser.add_argument("--synthetic", metavar="FOLDER",
                        help="write a Llama-shaped bfloat16 sharded checkpoint here first and "
                             "benchmark it (--layers, --hidden, --inter, --vocab: 16, 2048, "
                             "5632, 32000 by default: 0.95B weights in one shard; --inter 6912 "
                             "gives the issue's 1.08B in two shards of at most 2 GB)")
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
    parser.add_argument("--folder", action="store_true",
                        help="decompress into a folder (`-o DIR/`) and check that its shards "
                             "and index match the source's and load with safetensors")
    parser.add_argument("--no-decompress", action="store_true", help="compress only")
    parser.add_argument("--project70b", action="store_true",
                        help="measure per-task seconds on Llama-2-70B's shapes and print the "
                             "projection to K machines × C cores (a projection, not a run)")
    parser.add_argument("--nncodec", metavar="QPS",
                        help="comma-separated NNCodec QPs: code a slice of the --model (the "
                             "synthetic folder) with NNCodec and with weightdna at the same "
                             "sizes, and stop")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    from weightdna.weights import load_weights, minilm_path

    if args.measure:
        print(json.dumps(measure_minilm(), indent=1))
        return
    if args.nncodec:
        rows = nncodec_slice(Path(args.model), Path(args.out) / "nncodec",
                             [int(q) for q in args.nncodec.split(",")])
        print("| codec | seconds | weights/s | bits/weight | SNR dB |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['codec']} | {r['seconds']:.1f} | {r['weights_per_s']:,.0f} | "
                  f"{r['bits_per_weight']:.3f} | {r['snr_db']:.2f} |")
        return
    if args.project70b:
        measured = project_70b(Path(args.out) / "70b", args.bits)
        if args.json:
            Path(args.json).write_text(json.dumps(measured, indent=1))
        print("| tensors | shape | per layer/model | tasks each | weights per task | "
              "quantizer | first pass s | analysis s | trellis prep s | coding s | "
              "driver entropy s |")
        print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
        for r in measured["shapes"]:
            print(f"| {r['tensors']} | {r['shape'][0]}×{r['shape'][1]} | {r['count']} | "
                  f"{r['tasks_per_tensor']} | {r['task_weights']:,} | {r['quantizer']} | "
                  f"{r['first_pass_s']:.2f} | {r['analysis_s']:.2f} | "
                  f"{r.get('prepare_s', 0):.2f} | {r['encode_s']:.2f} | "
                  f"{r.get('entropy_s', 0):.2f} |")
        print(f"\nλ solve on the driver: {measured['solve_s_per_tensor']:.2f} s per tensor.\n")
        for rounds in (1, 3):
            print(f"\nProjection, {rounds} round(s) of final encodes:\n")
            print("\n".join(projection_table(measured, [1, 2, 4, 8], [2, 16, 64], rounds)))
        return
    if args.synthetic:
        model = Path(args.synthetic)
        if (model / "model.safetensors.index.json").is_file():
            print(f"using {model} as it is (delete it to write it again)", file=sys.stderr)
        else:
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
        print(rows[-1], file=sys.stderr)
        if args.no_decompress:
            continue
        if args.folder:
            back = out / f"w{n}"
            row = _run(["decompress", str(dna), "-o", f"{back}{os.sep}", "--force"])
            row["loads"] = check_folder(model, back)
            rows.append({"run": "decompress -o DIR/", **row, "same_bytes": None})
            print(rows[-1], file=sys.stderr)
            continue
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
        print("| run | seconds | weights/s | peak RSS MB (all processes) | same bytes | "
              "load average (1 min, before–after) |")
        print("|---|---:|---:|---:|---|---|")
        for r in rows:
            same = "" if r["same_bytes"] is None else ("yes" if r["same_bytes"] else "**no**")
            print(f"| {r['run']} | {r['seconds']:.1f} | {r['weights_per_s']:,.0f} | "
                  f"{r['peak_mb']:.0f} | {same} | {r['load']} |")
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
