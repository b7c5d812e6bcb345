"""The rate–distortion sweep: the .dna codec and every available peer, across rates, on
the same tensors; each method's points pooled over all tensors."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from weightdna.baselines.limit import row_shannon_limit
from weightdna.baselines.lossless import run_zipnn, run_zstd, zipnn_available
from weightdna.baselines.lowrank import rank_for_rate, run_svd
from weightdna.baselines.methods import DNA_CODEC, DNA_STEP, METHODS, QUANTIZER_FAMILIES
from weightdna.baselines.nncodec import SWEEP, nncodec_available, qp_for_step, run_nncodec
from weightdna.baselines.pruning import keep_fraction_for_rate, run_pruning
from weightdna.baselines.result import BaselineResult, measure, pool
from weightdna.baselines.rtn import RTN_BITS, run_rtn
from weightdna.codec import decode_tensor, encode_tensor, read_dna_file
from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target
from weightdna.errors import InvalidInputError, WeightDNAError
from weightdna.weights import ModelWeights

# A run that meets a bits-per-weight target lands just under it: a point this close below
# a rate stands for that rate (conservative: its SNR is that of fewer bits).
RATE_TOLERANCE = 0.05
# A Gaussian source coded by uniform steps at high rate: R ≈ log₂(σ·√(2πe) / step).
_GAUSSIAN_STEP_FACTOR = math.sqrt(2 * math.pi * math.e)

Progress = Callable[[str], None]


@dataclass
class RateDistortion:
    """Every method's pooled points, what was skipped and why, and the rates asked for."""

    rates: tuple[float, ...]
    tensors: tuple[str, ...]
    numel: int
    results: list[BaselineResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # The per-row Shannon limit's SNR (dB) by rate (`weightdna.baselines.limit`): at each
    # rate asked for, and on a grid for the plot.
    limit: dict[float, float] = field(default_factory=dict)

    def points(self, name: str) -> list[BaselineResult]:
        """The results of one method, by increasing rate."""
        return sorted((r for r in self.results if r.name == name), key=lambda r: r.bits_per_weight)

    def snr_at(self, name: str, rate: float) -> float | None:
        """SNR of ``name`` at ``rate`` bits per weight, linear between its measured points;
        None outside them (a point up to RATE_TOLERANCE below ``rate`` counts as at it)."""
        pts = [r for r in self.points(name) if not r.lossless and math.isfinite(r.snr_db)]
        # A method at its best: a setting that another beats with no more bits is dropped
        # (a family's settings, such as NF4 and FP4, need not improve with their rate).
        pts = [r for r in pts if not any(
            o is not r and o.bits_per_weight <= r.bits_per_weight and o.snr_db > r.snr_db
            for o in pts)]
        if not pts or not pts[0].bits_per_weight <= rate <= pts[-1].bits_per_weight:
            if pts and 0 <= rate - pts[-1].bits_per_weight <= RATE_TOLERANCE:
                return pts[-1].snr_db
            return None
        x = [r.bits_per_weight for r in pts]
        y = [r.snr_db for r in pts]
        return float(np.interp(rate, x, y))

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON: inputs, every point, the equal-rate table, skips."""
        names = [m for m in METHODS if self.points(m)]
        return {
            "rates": list(self.rates),
            "tensors": list(self.tensors),
            "numel": self.numel,
            "psnr_normalisation": "maxabs",
            "points": [r.as_dict() for r in self.results],
            "snr_at_rate": {m: {str(r): self.snr_at(m, r) for r in self.rates} for m in names},
            "limit_snr_db": {str(r): snr for r, snr in sorted(self.limit.items())},
            "skipped": dict(self.skipped),
        }


def _rms(tensors: Mapping[str, torch.Tensor]) -> float:
    total = sum(float(torch.sum(t.to(torch.float64) ** 2)) for t in tensors.values())
    count = sum(t.numel() for t in tensors.values())
    return math.sqrt(total / max(count, 1)) or 1.0


def sweep_steps(tensors: Mapping[str, torch.Tensor], rates: Sequence[float]) -> list[float]:
    """Global steps whose Gaussian-predicted rates run 1 bit either side of ``rates``, 1 bit
    apart, so each measured curve spans the rates asked for."""
    sigma = _rms(tensors)
    lo, hi = math.floor(min(rates)) - 1, math.ceil(max(rates)) + 2
    return [sigma * _GAUSSIAN_STEP_FACTOR * 2.0**-r for r in range(lo, hi + 1)]


def run_dna_file(
    tensors: Mapping[str, torch.Tensor], rate: float, workdir: Path, progress: Progress
) -> BaselineResult:
    """The .dna codec as a user runs it: `compress_model` to a bits-per-weight target (its
    rate control picks each tensor's representation), the whole file's bytes counted, every
    tensor decoded back from the file. The objective is the pooled MSE, the one this
    comparison's whole-model SNR measures (the default, "layer", trades some of it for the
    network's function: bench/panel.py)."""

    def report(stage: str, done: int, total: int) -> None:
        progress(f"{DNA_CODEC} {rate:g} bits: {stage} {done}/{total}")

    path = workdir / f"rate-{rate:g}.dna"
    written = compress_model(
        ModelWeights.from_tensors(tensors),
        path,
        Target("bits_per_weight", rate),
        objective="mse",
        overwrite=True,
        progress=report,
    )
    start = time.perf_counter()
    dna = read_dna_file(path)
    restored = {name: dna.tensor(name) for name in dna.names}
    decode_s = time.perf_counter() - start
    per_tensor = [
        measure(
            DNA_CODEC,
            "",
            t.to(torch.float64).numpy(),
            restored[name].to(torch.float64).numpy(),
            0,
            0.0,
            0.0,
        )
        for name, t in tensors.items()
    ]
    representations = sorted({t.representation for t in written.tensors})
    return dataclasses.replace(
        pool(per_tensor),
        setting=f"target {rate:g} bpw ({', '.join(representations)})",
        nbytes=written.file_bytes,
        encode_s=written.seconds,
        decode_s=decode_s,
    )


def run_dna_step(tensors: Mapping[str, torch.Tensor], step: float) -> BaselineResult:
    """The .dna codec's quantised representation at one global step, without rate control:
    every tensor quantised with it and entropy-coded.

    The bytes counted are each tensor's sections plus its header entry (compact JSON).
    """
    results = []
    for name, t in tensors.items():
        start = time.perf_counter()
        entry, sections = encode_tensor(t, name=name, step=step)
        encoded = time.perf_counter()
        restored = decode_tensor(entry, sections)
        decoded = time.perf_counter()
        nbytes = sum(len(v) for v in sections.values()) + len(
            json.dumps(entry, separators=(",", ":"))
        )
        results.append(
            measure(
                DNA_STEP,
                f"step {step:.3g}",
                t.to(torch.float64).numpy(),
                restored.to(torch.float64).numpy(),
                nbytes,
                encoded - start,
                decoded - encoded,
            )
        )
    return pool(results)


def run_quantizer(family: str, setting: str, quantize: Callable, t: torch.Tensor
                  ) -> BaselineResult:
    """One tensor through a peer quantiser of `weightdna.baselines.quantizers` (its true
    bytes). The peers quantise and restore in one call: its time is the encode time, and
    the decode time is not measured apart (0)."""
    start = time.perf_counter()
    restored, nbytes = quantize(t)
    seconds = time.perf_counter() - start
    return measure(family, setting, t.to(torch.float64).numpy(),
                   restored.to(torch.float64).numpy(), nbytes, seconds, 0.0)


def _per_tensor(
    tensors: Mapping[str, torch.Tensor], run: Callable[[torch.Tensor], BaselineResult]
) -> BaselineResult:
    return pool(run(t) for t in tensors.values())


def rate_distortion(
    tensors: Mapping[str, torch.Tensor],
    rates: Sequence[float] = (1, 2, 3, 4, 6, 8),
    methods: Sequence[str] = METHODS,
    progress: Progress | None = None,
) -> RateDistortion:
    """Run each of ``methods`` on ``tensors`` at settings spanning ``rates`` (bits/weight).

    Missing optional peers (ZipNN, NNCodec's environment) and size targets the .dna codec
    cannot meet are recorded in ``skipped``.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise InvalidInputError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if not tensors:
        raise InvalidInputError("no tensors to code: check the --tensors pattern")
    if not rates or any(not (0 < r <= 16) for r in rates):
        raise InvalidInputError(f"rates must lie in (0, 16] bits per weight, not {list(rates)}")
    rates = tuple(sorted(float(r) for r in rates))
    say = progress or (lambda message: None)
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    rd = RateDistortion(rates, tuple(tensors), sum(t.numel() for t in tensors.values()))
    steps = sweep_steps(tensors, rates)
    say("the per-row Shannon limit")
    grid = np.arange(0.25, rates[-1] + 1.25, 0.25)
    rd.limit = row_shannon_limit((t.to(torch.float64).numpy() for t in tensors.values()
                                  if t.is_floating_point()), sorted({*rates, *grid.tolist()}))

    if DNA_CODEC in methods:
        # One more size above the top rate: a size target lands up to 1% under it
        # (SIZE_TARGET_FILL), and equal-size figures need a point on either side.
        above = (rates[-1] + 1.0,) if rates[-1] + 1.0 <= 16 else ()
        with tempfile.TemporaryDirectory(prefix="weightdna-rd-") as tmp:
            for rate in rates + above:
                try:
                    rd.results.append(run_dna_file(tensors, rate, Path(tmp), say))
                except WeightDNAError as exc:  # e.g. a size too small for this model
                    rd.skipped[f"{DNA_CODEC} at {rate:g} bits/weight"] = str(exc)
    if DNA_STEP in methods:
        for step in steps:
            say(f"{DNA_STEP} step {step:.3g}")
            rd.results.append(run_dna_step(tensors, step))
    if "nncodec" in methods:
        if nncodec_available():
            qps = sorted({qp_for_step(step) for step in steps})
            for setting in SWEEP:
                say(f"nncodec {setting}, qp {qps[0]}..{qps[-1]}")
                rd.results += run_nncodec(tensors, qps, setting=setting)
        else:
            rd.skipped["nncodec"] = "no .venv-peers: run bash bench/peers/setup_peers.sh"
    for family, package in QUANTIZER_FAMILIES.items():
        if family not in methods:
            continue
        from weightdna.baselines.quantizers import family_peers

        settings = family_peers(family)
        if not settings:
            rd.skipped[family] = f"not installed: pip install {package.replace('.', '-')}"
        for setting, quantize in settings.items():
            say(setting)
            rd.results.append(_per_tensor(
                tensors, lambda t, f=family, s=setting, q=quantize: run_quantizer(f, s, q, t)))
    if "rtn" in methods:
        for bits in RTN_BITS:
            say(f"rtn int{bits}")
            rd.results.append(_per_tensor(tensors, lambda t, b=bits: run_rtn(t, b)))
    # Their settings are chosen by a size estimate before zstd, which lands below it:
    # one point past the highest rate lets the curve reach it.
    for rate in (*rates, rates[-1] + 2):
        if "svd" in methods:
            say(f"svd ≈{rate:g} bits")
            rd.results.append(
                _per_tensor(
                    tensors,
                    lambda t, r=rate: run_svd(t, rank_for_rate(tuple(t.shape), r), f"≈{r:g} bpw"),
                )
            )
        if "pruning" in methods:
            say(f"pruning ≈{rate:g} bits")
            keep = keep_fraction_for_rate(rate)
            rd.results.append(
                _per_tensor(tensors, lambda t, k=keep: run_pruning(t, k, f"keep {k:.3f}"))
            )
    if "zstd" in methods:
        say("zstd")
        rd.results.append(_per_tensor(tensors, run_zstd))
    if "zipnn" in methods:
        if zipnn_available():
            say("zipnn")
            rd.results.append(_per_tensor(tensors, run_zipnn))
        else:
            rd.skipped["zipnn"] = "not installed: pip install zipnn"
    return rd
