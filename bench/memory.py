"""Peak memory and speed of compress and decompress on all-MiniLM-L6-v2, against the bound
peak < 2 × model bytes + constant, beside ZipNN and NNCodec.

    .venv/bin/python bench/memory.py [--bits 4] [--qp -28] [--markdown] [--json F]

Every row runs in a fresh process, whose peak resident set is read from ``os.wait4``
(``ru_maxrss``: that child's own peak, imports and all):

- the constant: a bare interpreter that imports torch, numpy and weightdna (the bound's
  constant), and, for reference, one that also imports what compress itself loads
  (the codec, and torch._dynamo, which torch's Adam imports when a DNA is fitted);
- ``weightdna compress MODEL --bits-per-weight B`` and ``weightdna decompress`` as a user
  runs them (seconds: the whole command, interpreter start included);
- the same operations in-process (``compress_model``, ``decompress_model``), and ZipNN and
  NNCodec (when ``.venv-peers`` exists), as `bench/codec_speed.py` runs them (seconds: the
  operation alone).

weights/s is the model's weights over those seconds.
"""

from __future__ import annotations

# Only the standard library at the top (like codec_speed.py, which runs the children).
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codec_speed  # noqa: E402  (the children and run_child are shared, not copied)

REPO = codec_speed.REPO
MB = codec_speed.MB
CONSTANT = "import torch, numpy, weightdna"
# ... and what coding any tensor loads: the trellis's numba-compiled search and decoder.
CODE_CONSTANT = ("import torch, numpy, torch._dynamo, weightdna.codec.compress, "
                 "weightdna.cli.compress\n"
                 "from weightdna.codec.tensor import decode_tensor, encode_tensor\n"
                 "decode_tensor(*encode_tensor(torch.randn(64, 64), step=0.1, "
                 "quantizer='trellis'))")


def run_measured(command: list[str]) -> dict:
    """Run ``command`` in a fresh process: wall seconds and peak RSS (MB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{command[:3]} failed: {err.read().strip()[-500:]}")
    return {"seconds": wall, "peak_mb": usage.ru_maxrss * 1024 / MB}


def measure(bits: float, qp: int) -> dict:
    from weightdna.weights import load_weights, minilm_path

    model = minilm_path() / "model.safetensors"
    weights = load_weights(model).total_numel
    python = Path(sys.executable)
    cli = [str(python), "-m", "weightdna"]
    rows: dict[str, dict] = {}
    rows["constant"] = run_measured([str(python), "-c", CONSTANT])
    rows["code constant"] = run_measured([str(python), "-c", CODE_CONSTANT])
    with tempfile.TemporaryDirectory(prefix="weightdna-memory-") as tmp:
        work = Path(tmp)
        dna, restored = work / "cli.dna", work / "cli.safetensors"
        rows["weightdna compress"] = run_measured(
            [*cli, "compress", str(model), "-o", str(dna), "--bits-per-weight", str(bits)])
        rows["weightdna compress"]["bytes"] = dna.stat().st_size
        rows["weightdna decompress"] = run_measured(
            [*cli, "decompress", str(dna), "-o", str(restored)])
        peers = codec_speed.measure(bits, qp, quantized_only=False, keep=work / "peers")
        for key, row in peers["rows"].items():
            if key != "baseline":
                rows[key] = row
    return {"rows": rows, "model_bytes": model.stat().st_size, "weights": weights,
            "bits": bits, "qp": qp}


NAMES = {
    "constant": ("constant", CONSTANT),
    "code constant": ("constant", "+ torch._dynamo and the codec, its numba code loaded"),
    "weightdna compress": ("ours, CLI", "weightdna compress --bits-per-weight {bits:g}"),
    "weightdna decompress": ("ours, CLI", "weightdna decompress"),
    "dna-encode": ("ours", "compress_model (operation only)"),
    "dna-decode": ("ours", "decompress_model (operation only)"),
    "zipnn-encode": ("ZipNN", "compress (lossless)"),
    "zipnn-decode": ("ZipNN", "decompress"),
    "nncodec-encode": ("NNCodec", "encode at QP {qp}"),
    "nncodec-decode": ("NNCodec", "decode"),
    "zipnn": ("ZipNN", ""),
    "nncodec": ("NNCodec", ""),
}


def table(result: dict, markdown: bool) -> str:
    rows, weights = result["rows"], result["weights"]
    model_mb = result["model_bytes"] / MB
    constant = rows["constant"]["peak_mb"]
    bound = 2 * model_mb + constant
    header = ["codec", "operation", "seconds", "weights/s", "peak RSS MB", "peak / bound",
              "bits/weight"]
    body = []
    for key, row in rows.items():
        codec, what = NAMES[key]
        if "skipped" in row:
            body.append([codec, f"skipped: {row['skipped']}", "", "", "", "", ""])
            continue
        is_constant = key.endswith("constant")
        seconds = row["seconds"]
        rate = "" if is_constant or not seconds else f"{weights / seconds:,.0f}"
        n = row.get("weights", weights)
        bpw = f"{8 * row['bytes'] / n:.3f}" if "bytes" in row else ""
        ratio = "" if is_constant else f"{row['peak_mb'] / bound:.2f}"
        body.append([codec, what.format(bits=result["bits"], qp=result["qp"]),
                     "" if is_constant else f"{seconds:.2f}", rate, f"{row['peak_mb']:.0f}",
                     ratio, bpw])
    notes = [f"Model: {model_mb:.1f} MB file, {weights:,} weights. Bound: 2 × {model_mb:.1f} "
             f"+ {constant:.0f} (constant) = {bound:.0f} MB; peak / bound < 1 meets it."]
    # The codec's own constant: what any compress loads whatever the model's size (torch's
    # dynamo, imported by Adam for a DNA fit, and the trellis's numba code).
    code = rows["code constant"]["peak_mb"]
    for key in ("weightdna compress", "weightdna decompress", "dna-encode", "dna-decode"):
        peak = rows[key]["peak_mb"]
        notes.append(f"{key}: {peak:.0f} MB, {'met' if peak < bound else 'NOT met'} "
                     f"({peak - constant:.0f} MB above the constant, "
                     f"{(peak - constant) / model_mb:.2f} × the model); against the codec's "
                     f"constant ({code:.0f} MB) "
                     f"{'met' if peak < 2 * model_mb + code else 'NOT met'} "
                     f"({(peak - code) / model_mb:.2f} × the model above it).")
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
    else:
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [header, *body]]
    return "\n".join([*lines, "", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=float, default=4.0, help="our target, bits per weight")
    parser.add_argument("--qp", type=int, default=-28, help="NNCodec's QP (-28: ≈ 4 bpw)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    result = measure(args.bits, args.qp)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        load = os.getloadavg()
        print(f"Machine: {codec_speed._cpu_name()}, {os.cpu_count()} cores, load average "
              f"{load[0]:.1f} at the end; Python {sys.version.split()[0]}.\n")
    print(table(result, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
