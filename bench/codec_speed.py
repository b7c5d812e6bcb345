"""Compress and decompress speed and peak memory on all-MiniLM-L6-v2, beside ZipNN and NNCodec.

    .venv/bin/python bench/codec_speed.py [--bits 4] [--qp -28] [--quantized-only] [--markdown]

Each codec operation runs in a fresh subprocess, which reads its input from disk and writes
its output to disk: the .dna codec (``compress_model`` at ``--bits`` bits per weight from
the model's safetensors file, ``decompress_model`` back to safetensors), ZipNN (lossless,
per tensor, in-process in its own subprocess) and NNCodec (one NNR bitstream of the
floating-point tensors at ``--qp``, under .venv-peers/bin/python; its input is an .npz of
the tensors, its output an .npz). Throughput is weights over the operation's own seconds
(interpreter start and imports excluded); peak memory is the subprocess's maximum resident
set (``os.wait4``'s ru_maxrss), imports and all. The constant is the peak of a process that
only imports weightdna and opens the model lazily; the claim checked is
peak(compress) < 2 × model bytes + that constant.
"""

from __future__ import annotations

# Only the standard library at the top: the NNCodec children run this file under
# .venv-peers/bin/python, where weightdna is not installed.
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
MB = 1e6


# ---- children: one operation each, printing {"seconds": ..., ...} as the last line ----

def _child_baseline(model: str) -> dict:
    from weightdna.weights import load_weights

    weights = load_weights(model)  # lazy: opens the file, reads no tensor
    return {"seconds": 0.0, "weights": weights.total_numel}


def _child_dna_encode(model: str, output: str, bits: str, quantized_only: str) -> dict:
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights

    weights = load_weights(model)
    kwargs = {"representations": ("quantized",)} if quantized_only == "1" else {}
    start = time.perf_counter()
    report = compress_model(weights, output, Target("bits_per_weight", float(bits)),
                            overwrite=True, **kwargs)
    return {"seconds": time.perf_counter() - start, "bytes": report.file_bytes,
            "weights": report.weights, "snr_db": report.snr_db}


def _child_dna_decode(path: str, output: str) -> dict:
    from weightdna.codec.compress import decompress_model

    start = time.perf_counter()
    decompress_model(path, output, overwrite=True)
    return {"seconds": time.perf_counter() - start}


def _child_zipnn_encode(model: str, output: str) -> dict:
    import warnings

    from weightdna.codec.dtypes import tensor_bytes
    from weightdna.weights import load_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import zipnn

    weights = load_weights(model)
    start = time.perf_counter()
    index, total = [], 0
    with open(output + ".body", "wb") as body:
        for info in weights.infos:
            raw = tensor_bytes(weights.tensor(info.name))
            # ZipNN's byte mode takes float dtypes only: integers (position_ids) stay raw.
            kind = info.dtype if info.dtype in ("float32", "float16", "bfloat16") else "raw"
            data = raw if kind == "raw" else bytes(
                zipnn.ZipNN(input_format="byte", bytearray_dtype=kind, threads=1)
                .compress(bytearray(raw)))
            body.write(data)
            index.append([info.name, info.dtype, list(info.shape), kind, len(data)])
            total += len(data)
    Path(output).write_text(json.dumps(index))
    return {"seconds": time.perf_counter() - start, "bytes": total,
            "weights": weights.total_numel}


def _child_zipnn_decode(path: str, output: str) -> dict:
    import warnings

    from weightdna.codec.dtypes import tensor_from_bytes
    from weightdna.weights import save_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import zipnn

    start = time.perf_counter()
    tensors = {}
    with open(path + ".body", "rb") as body:
        for name, dtype, shape, kind, size in json.loads(Path(path).read_text()):
            raw = body.read(size)
            if kind != "raw":
                raw = zipnn.ZipNN(input_format="byte", bytearray_dtype=kind,
                                  threads=1).decompress(raw)
            tensors[name] = tensor_from_bytes(bytes(raw), dtype, tuple(shape))
    save_weights(tensors, output, overwrite=True)
    return {"seconds": time.perf_counter() - start}


def _nncodec_worker():
    sys.path.insert(0, str(REPO / "bench" / "peers"))
    import nncodec_worker

    return nncodec_worker


def _child_nncodec_encode(inputs: str, output: str, qp: str) -> dict:
    import numpy as np

    worker = _nncodec_worker()
    with np.load(inputs, allow_pickle=False) as data:
        tensors = {name: data[name] for name in data.files}
    start = time.perf_counter()
    bitstream = worker.encode(tensors, int(qp), Path(output + ".tmp"))
    Path(output).write_bytes(bytes(bitstream))
    return {"seconds": time.perf_counter() - start, "bytes": len(bitstream),
            "weights": sum(v.size for v in tensors.values())}


def _child_nncodec_decode(path: str, output: str) -> dict:
    import numpy as np

    worker = _nncodec_worker()
    start = time.perf_counter()
    restored = worker.decode(Path(path).read_bytes())
    np.savez(output, **{name: np.asarray(v, dtype=np.float32) for name, v in restored.items()})
    return {"seconds": time.perf_counter() - start}


CHILDREN = {
    "baseline": _child_baseline,
    "dna-encode": _child_dna_encode,
    "dna-decode": _child_dna_decode,
    "zipnn-encode": _child_zipnn_encode,
    "zipnn-decode": _child_zipnn_decode,
    "nncodec-encode": _child_nncodec_encode,
    "nncodec-decode": _child_nncodec_decode,
}


# ---- the parent: runs each child, reads its peak RSS, prints the table ----

def run_child(python: Path, operation: str, *args: str) -> dict:
    """Run one operation in a fresh process; its JSON result plus wall seconds and peak MB."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([str(python), __file__, "--child", operation, *args],
                                 stdout=out, stderr=err, text=True)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all).
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            tail = err.read().strip().splitlines()[-5:]
            raise RuntimeError(f"{operation} failed: " + " | ".join(tail))
        result = json.loads(out.read().strip().splitlines()[-1])
    result.update(wall_s=wall, peak_mb=usage.ru_maxrss * 1024 / MB)  # ru_maxrss: KiB on Linux
    return result


def measure(bits: float, qp: int, quantized_only: bool, keep: Path | None) -> dict:
    """Every operation once, in one run; a dict of rows and the model's figures."""
    import numpy as np

    from weightdna.weights import load_weights, minilm_path

    folder = minilm_path()
    model = folder / "model.safetensors"
    weights = load_weights(model)
    rows: dict[str, dict] = {}
    python = Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix="weightdna-speed-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows["baseline"] = run_child(python, "baseline", str(model))
        dna, restored = work / "minilm.dna", work / "restored.safetensors"
        rows["dna-encode"] = run_child(python, "dna-encode", str(model), str(dna), str(bits),
                                       "1" if quantized_only else "0")
        rows["dna-decode"] = run_child(python, "dna-decode", str(dna), str(restored))
        try:
            import zipnn  # noqa: F401
        except ImportError:
            rows["zipnn"] = {"skipped": "pip install zipnn"}
        else:
            packed = work / "minilm.zipnn"
            rows["zipnn-encode"] = run_child(python, "zipnn-encode", str(model), str(packed))
            rows["zipnn-decode"] = run_child(python, "zipnn-decode", str(packed),
                                             str(work / "zipnn.safetensors"))
        if PEERS_PYTHON.is_file():
            inputs, stream = work / "minilm.npz", work / "minilm.nnc"
            np.savez(inputs, **{i.name: weights.numpy(i.name, np.float32)
                                for i in weights.float_infos()})
            rows["nncodec-encode"] = run_child(PEERS_PYTHON, "nncodec-encode", str(inputs),
                                               str(stream), str(qp))
            rows["nncodec-decode"] = run_child(PEERS_PYTHON, "nncodec-decode", str(stream),
                                               str(work / "nncodec.npz"))
        else:
            rows["nncodec"] = {"skipped": "bash bench/peers/setup_peers.sh"}
    return {"rows": rows, "model_bytes": model.stat().st_size,
            "weights": weights.total_numel, "bits": bits, "qp": qp,
            "quantized_only": quantized_only}


def table(result: dict) -> str:
    """A Markdown table of every operation, the ratios and the two checks."""
    rows, weights = result["rows"], result["weights"]
    lines = ["| codec | operation | setting | seconds | weights/s | peak RSS MB | bits/weight |",
             "|---|---|---|---:|---:|---:|---:|"]
    settings = {"dna": f"target {result['bits']:g} bpw"
                       + (" (quantized only)" if result["quantized_only"] else ""),
                "zipnn": "lossless", "nncodec": f"QP {result['qp']}"}
    for key, row in rows.items():
        if key == "baseline" or "skipped" in row:
            continue
        codec, step = key.split("-")
        operation = {"encode": "compress", "decode": "decompress"}[step]
        n = row.get("weights", rows.get(f"{codec}-encode", {}).get("weights", weights))
        bpw = f"{8 * row['bytes'] / n:.3f}" if "bytes" in row else ""
        lines.append(f"| {codec} | {operation} | {settings[codec]} | {row['seconds']:.2f} | "
                     f"{n / row['seconds']:,.0f} | {row['peak_mb']:.0f} | {bpw} |")
    base = rows["baseline"]["peak_mb"]
    model_mb = result["model_bytes"] / MB
    lines.append("")
    lines.append(f"Constant (import weightdna, open the model lazily): {base:.0f} MB peak RSS; "
                 f"model file {model_mb:.1f} MB, {weights:,} weights.")
    for peer in ("zipnn", "nncodec"):
        if f"{peer}-encode" not in rows:
            continue
        parts = []
        for op in ("encode", "decode"):
            ours, theirs = rows[f"dna-{op}"], rows[f"{peer}-{op}"]
            parts.append(f"{op} time {ours['seconds'] / theirs['seconds']:.2f}, "
                         f"{op} memory {ours['peak_mb'] / theirs['peak_mb']:.2f}")
        lines.append(f"Ours / {peer}: " + "; ".join(parts) + ".")
    bound = 2 * model_mb + base
    peak = rows["dna-encode"]["peak_mb"]
    lines.append(f"Compress peak {peak:.0f} MB {'<' if peak < bound else '≥'} 2 × {model_mb:.1f} "
                 f"+ {base:.0f} = {bound:.0f} MB: {'met' if peak < bound else 'NOT met'}.")
    if "nncodec-decode" in rows:
        ours, theirs = rows["dna-decode"]["seconds"], rows["nncodec-decode"]["seconds"]
        lines.append(f"Decompress {ours:.2f} s against NNCodec's decoder {theirs:.2f} s: "
                     f"{'not slower (met)' if ours <= theirs else 'slower (NOT met)'}.")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(CHILDREN[argv[1]](*argv[2:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=float, default=4.0, help="our target, bits per weight")
    parser.add_argument("--qp", type=int, default=-28, help="NNCodec's QP (-28: ≈ 4 bpw)")
    parser.add_argument("--quantized-only", action="store_true",
                        help="our codec with the quantized candidate only")
    parser.add_argument("--keep", type=Path, help="keep the coded files in this folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", action="store_true", help="print a BENCHMARKS.md section")
    args = parser.parse_args(argv)
    result = measure(args.bits, args.qp, args.quantized_only, args.keep)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        load = os.getloadavg()
        machine = _cpu_name()
        print(f"Date: {datetime.date.today()}. Machine: {machine}, "
              f"{os.cpu_count()} cores, load average {load[0]:.1f} at the end; "
              f"Python {platform.python_version()}.\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
