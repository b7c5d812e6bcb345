"""Code tensors with NNCodec (the MPEG NNR reference codec) and restore them.

Runs under .venv-peers/bin/python (NNCodec needs numpy<2 and torch of its own), called by
``weightdna.baselines.nncodec``:

    nncodec_worker.py IN.npz OUT.npz --qp -32 [--qp -36 ...] [--settings JSON]

IN.npz holds float32 tensors by name (read with allow_pickle=False). For each QP the
tensors are coded as one NNR bitstream and decoded; OUT.npz receives the restored tensors
as ``qp{QP}/{name}`` and, under ``report``, JSON with per QP the bitstream's bytes and the
encode and decode seconds. ``--settings``: JSON of more keyword arguments of
``nnc.compress`` (the sweep's: ``lambda_scale``, ``nonweight_qp``, ``opt_qp``,
``qp_density``); ``"nonweight_qp": "qp"`` sets the non-weights' QP to each run's QP.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {"lambda_scale", "nonweight_qp", "opt_qp", "qp_density"}


def encode(tensors: dict[str, np.ndarray], qp: int, bitstream_path: Path,
           settings: dict | None = None) -> bytes:
    """One NNR bitstream for ``tensors`` at ``qp`` (dependent quantisation, DeepCABAC)."""
    from nncodec import nnc

    extra = dict(settings or {})
    if extra.get("nonweight_qp") == "qp":
        extra["nonweight_qp"] = qp
    # NNCodec prints progress on stdout; keep our stdout for nothing but errors.
    with contextlib.redirect_stdout(io.StringIO()):
        return nnc.compress(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
            bitstream_path=str(bitstream_path),
            qp=qp,
            use_dq=True,
            param_opt=True,
            return_bitstream=True,
            verbose=False,
            **extra,
        )


def decode(bitstream: bytes) -> dict[str, np.ndarray]:
    """The tensors of an NNR bitstream, by name."""
    from nncodec import nnc

    with contextlib.redirect_stdout(io.StringIO()):
        return nnc.decompress(bytearray(bitstream), verbose=False)


def code(tensors: dict[str, np.ndarray], qp: int, workdir: Path,
         settings: dict | None = None) -> tuple[dict, int, float, float]:
    """One NNR bitstream for ``tensors`` at ``qp``: restored tensors, bytes, seconds."""
    start = time.perf_counter()
    bitstream = encode(tensors, qp, workdir / "bitstream.nnc", settings)
    encoded = time.perf_counter()
    restored = decode(bitstream)
    decoded = time.perf_counter()
    out = {
        k: np.asarray(restored[k], dtype=np.float32).reshape(v.shape) for k, v in tensors.items()
    }
    return out, len(bitstream), encoded - start, decoded - encoded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--qp", type=int, action="append", required=True)
    parser.add_argument("--settings", type=json.loads, default={})
    args = parser.parse_args(argv)
    unknown = set(args.settings) - SETTINGS
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; use {sorted(SETTINGS)}")

    with np.load(args.inputs, allow_pickle=False) as data:
        tensors = {name: data[name] for name in data.files}
    arrays: dict[str, np.ndarray] = {}
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for qp in args.qp:
            restored, nbytes, enc, dec = code(tensors, qp, Path(tmp), args.settings)
            report[str(qp)] = {"qp": qp, "nbytes": nbytes, "encode_s": enc, "decode_s": dec}
            for name, value in restored.items():
                arrays[f"qp{qp}/{name}"] = value
    arrays["report"] = np.frombuffer(json.dumps(report).encode(), dtype=np.uint8)
    np.savez(args.output, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
