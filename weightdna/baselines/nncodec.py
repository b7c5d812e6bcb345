"""NNCodec, the MPEG NNR (ISO/IEC 15938-17) reference codec, run in its own environment.

NNCodec needs numpy<2 and a torch of its own, so it lives in ``.venv-peers`` (made by
``bench/peers/setup_peers.sh``) and is driven through ``bench/peers/nncodec_worker.py``
as a subprocess; tensors go over as .npz files. Without that environment it is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from weightdna.baselines.result import BaselineResult, measure, pool
from weightdna.errors import MissingDependencyError, WeightDNAError

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = REPO_ROOT / "bench" / "peers" / "nncodec_worker.py"
# NNCodec's default quantisation-parameter density: the step doubles every 4 QP.
QP_PER_OCTAVE = 4


def peers_python() -> Path:
    """The interpreter of the peers' environment (``WEIGHTDNA_PEERS_PYTHON`` overrides)."""
    override = os.environ.get("WEIGHTDNA_PEERS_PYTHON")
    return Path(override) if override else REPO_ROOT / ".venv-peers" / "bin" / "python"


def nncodec_available() -> bool:
    """Whether the peers' environment and the worker script are there."""
    return peers_python().is_file() and WORKER.is_file()


def qp_for_step(step: float) -> int:
    """The NNCodec QP (density 2) whose step is nearest to ``step`` in log scale."""
    return round(QP_PER_OCTAVE * math.log2(step))


# The settings `weightdna bench rd` sweeps, NNCodec at its best being the best of them at
# each rate (`RateDistortion.snr_at` drops dominated points). Keyword arguments of
# ``nnc.compress``; "qp" for ``nonweight_qp`` means each run's own QP. The first is the
# package's default (RDOQ off, non-weights at QP −75), the others turn on its
# rate–distortion-optimised quantisation at λ-scales around 1 (NNCodec's recommended
# range) with the non-weights coded at the weights' QP, with and without its per-tensor
# QP optimisation.
SWEEP: dict[str, dict] = {
    "default": {},
    "rdoq 0.75": {"lambda_scale": 0.75, "nonweight_qp": "qp"},
    "rdoq 1": {"lambda_scale": 1.0, "nonweight_qp": "qp"},
    "rdoq 1.25": {"lambda_scale": 1.25, "nonweight_qp": "qp"},
    "rdoq 1, opt_qp": {"lambda_scale": 1.0, "nonweight_qp": "qp", "opt_qp": True},
}


def nncodec_roundtrip(
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    qps: Sequence[int],
    timeout_s: float = 3600.0,
    settings: Mapping[str, object] | None = None,
) -> dict[int, tuple[dict[str, np.ndarray], dict]]:
    """Code all ``tensors`` as one NNR bitstream per QP through the worker, with
    ``settings`` (one of `SWEEP`'s values) passed on to ``nnc.compress``.

    Returns {qp: (restored float32 arrays by name, the worker's report: nbytes, encode_s,
    decode_s)}.
    """
    if not nncodec_available():
        raise MissingDependencyError(
            f"NNCodec's environment is missing ({peers_python()}): run "
            "bash bench/peers/setup_peers.sh"
        )
    arrays = {name: torch.as_tensor(t).to(torch.float32).numpy() for name, t in tensors.items()}
    with tempfile.TemporaryDirectory(prefix="weightdna-nncodec-") as tmp:
        inputs, output = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        # Tensor names may hold dots; npz keys are plain strings, so pass them by index.
        names = list(arrays)
        np.savez(inputs, **{f"t{i}": arrays[name] for i, name in enumerate(names)})
        command = [str(peers_python()), str(WORKER), str(inputs), str(output)]
        for qp in qps:
            command += ["--qp", str(int(qp))]
        if settings:
            command += ["--settings", json.dumps(dict(settings))]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise WeightDNAError(f"NNCodec took longer than {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise WeightDNAError("NNCodec failed: " + " | ".join(tail))
        with np.load(output, allow_pickle=False) as data:
            report = json.loads(bytes(data["report"]).decode())
            return {
                int(qp): (
                    {name: data[f"qp{int(qp)}/t{i}"] for i, name in enumerate(names)},
                    report[str(int(qp))],
                )
                for qp in qps
            }


def run_nncodec(
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    qps: Sequence[int],
    timeout_s: float = 3600.0,
    setting: str = "default",
) -> list[BaselineResult]:
    """Code all ``tensors`` as one NNR bitstream at each QP with `SWEEP`'s ``setting``;
    one pooled result per QP."""
    originals = {name: torch.as_tensor(t).to(torch.float32).numpy() for name, t in tensors.items()}
    label = "" if setting == "default" else f"{setting}, "
    results = []
    for qp, (restored, entry) in nncodec_roundtrip(originals, qps, timeout_s,
                                                   SWEEP[setting]).items():
        per_tensor = [
            measure("nncodec", f"{label}qp {qp}", originals[name], restored[name], 0, 0.0,
                    0.0)
            for name in originals
        ]
        results.append(
            dataclasses.replace(
                pool(per_tensor),
                nbytes=int(entry["nbytes"]),
                encode_s=float(entry["encode_s"]),
                decode_s=float(entry["decode_s"]),
            )
        )
    return results
