"""A rate–distortion sweep written down: a markdown table, JSON, and a PNG plot of bits per
weight against SNR, with the per-row Shannon limit (`weightdna.baselines.limit`) and, for
reference, the Gaussian rate–distortion function SNR = 6.02·R dB."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from weightdna.atomic import save_figure_atomic, write_text_atomic
from weightdna.baselines.methods import DNA_CODEC, DNA_STEP, METHODS, QUANTIZER_FAMILIES
from weightdna.baselines.sweep import RATE_TOLERANCE, RateDistortion

# Rate–distortion function of a memoryless Gaussian source: D(R) = σ²·2^(−2R).
GAUSSIAN_DB_PER_BIT = 20 * math.log10(2)  # 6.02
_LOSSY_PEERS = (*QUANTIZER_FAMILIES, "rtn", "svd", "pruning")
_LABELS = {
    DNA_CODEC: "weightdna (.dna file, rate control)",
    DNA_STEP: "weightdna, one global step (quantized only)",
    "nncodec": "NNCodec (MPEG NNR), best of its swept settings",
    "gguf": "GGUF Q8_0/Q5_1/Q5_0/Q4_1/Q4_0 (gguf-py)",
    "bnb": "bitsandbytes NF4/FP4, block 64",
    "hqq": "HQQ 8/4/3/2-bit, group 64",
    "quanto": "optimum-quanto int8/4/2",
    "rtn": "round-to-nearest int2/4/8 + zstd",
    "svd": "low-rank SVD (fp16) + zstd",
    "pruning": "magnitude pruning + zstd",
    "zstd": "zstd (lossless)",
    "zipnn": "ZipNN (lossless)",
}


def _db(x: float | None) -> str:
    if x is None:
        return "—"
    return "exact" if math.isinf(x) else f"{x:.2f}"


def markdown(rd: RateDistortion, title: str) -> str:
    """The equal-rate comparison, every measured point, and what was skipped."""
    present = [m for m in METHODS if rd.points(m)]
    lines = [
        f"# Rate–distortion: {title}",
        "",
        f"{len(rd.tensors)} tensors, {rd.numel:,} weights. Bits per weight from the real coded "
        "bytes; SNR = 10·log₁₀(Σw²/Σ(w−ŵ)²) pooled over all tensors; PSNR with each tensor "
        "divided by its max|w|. Equal-rate SNR is interpolated linearly between a method's "
        f"measured points (— where its points do not reach that rate; a point up to "
        f"{RATE_TOLERANCE} bits below a rate stands for it, as a run meeting a size target "
        "lands just under it). The per-row limit estimates the best SNR any coder could "
        "reach with each row's scale known for free: the Shannon lower bound of each row "
        "(its standardised values' differential entropy, Vasicek's estimator), reverse "
        "water-filling over the rows (`weightdna.baselines.limit`). The Gaussian column is "
        "the rate–distortion function of an iid Gaussian source, not a bound for these "
        "weights.",
        "",
        "## SNR (dB) at equal size",
        "",
    ]
    lossy = [m for m in (DNA_CODEC, DNA_STEP, "nncodec", *_LOSSY_PEERS) if m in present]
    ours = [m for m in (DNA_CODEC, DNA_STEP) if m in present] if "nncodec" in present else []
    header = ["bits/weight", *(_LABELS[m] for m in lossy)]
    header += [f"{m} − NNCodec" for m in ours]
    header += ["per-row limit", "weightdna − limit"] if rd.limit else []
    header.append("Gaussian 6.02·R")
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for rate in rd.rates:
        cells = [f"{rate:g}", *(_db(rd.snr_at(m, rate)) for m in lossy)]
        nnc = rd.snr_at("nncodec", rate)
        for m in ours:
            dna = rd.snr_at(m, rate)
            cells.append("—" if dna is None or nnc is None else f"{dna - nnc:+.2f}")
        if rd.limit:
            limit, dna = rd.limit.get(rate), rd.snr_at(DNA_CODEC, rate)
            cells.append(_db(limit))
            cells.append("—" if limit is None or dna is None else f"{dna - limit:+.2f}")
        cells.append(f"{GAUSSIAN_DB_PER_BIT * rate:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every measured point",
        "",
        "| method | setting | bits/weight | SNR dB | PSNR dB (max-abs) | max abs error | "
        "encode s | decode s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in present:
        for r in rd.points(m):
            lines.append(
                f"| {m} | {r.setting} | {r.bits_per_weight:.3f} | {_db(r.snr_db)} | "
                f"{_db(r.psnr_db)} | {r.max_abs_error:.3g} | {r.encode_s:.2f} | {r.decode_s:.2f} |"
            )
    if rd.skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {name}: {why}" for name, why in rd.skipped.items()]
    return "\n".join(lines) + "\n"


def plot(rd: RateDistortion, path: str | Path, title: str,
         mark: tuple[float, float, str] | None = None) -> Path:
    """Bits per weight against SNR for every lossy method, with the per-row limit and the
    Gaussian rate–distortion function.

    mark: (bits per weight, SNR dB, label) of one more point drawn over the curves, e.g. the
    file a run has just written.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    top = max(max(rd.rates), mark[0] if mark is not None else 0.0) + 1
    r = np.linspace(0, top, 50)
    ax.plot(
        r,
        GAUSSIAN_DB_PER_BIT * r,
        color="0.6",
        linestyle="--",
        label="Gaussian R(D): SNR = 6.02·R dB",
    )
    limit = sorted((r, snr) for r, snr in rd.limit.items() if r <= top and math.isfinite(snr))
    if limit:
        ax.plot([r for r, _ in limit], [snr for _, snr in limit], color="black",
                linestyle=":", linewidth=1.5,
                label="per-row Shannon limit (estimate, scales free)")
    lossless = []
    for m in METHODS:
        pts = [p for p in rd.points(m) if p.bits_per_weight <= top + 2]
        if m in ("zstd", "zipnn"):
            lossless += [f"{_LABELS[m]}: {p.bits_per_weight:.2f} bits/weight" for p in rd.points(m)]
            continue
        if pts:
            ax.plot(
                [p.bits_per_weight for p in pts],
                [p.snr_db for p in pts],
                marker="o",
                markersize=3.5,
                linewidth=2.2 if m in (DNA_CODEC, DNA_STEP) else 1.3,
                label=_LABELS[m],
            )
    if mark is not None and math.isfinite(mark[1]):
        ax.plot([mark[0]], [mark[1]], marker="*", markersize=15, color="black",
                linestyle="none", zorder=5, label=mark[2])
    if lossless:
        ax.text(
            0.98,
            0.03,
            "\n".join(lossless),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.3",
        )
    ax.set_xlim(0, top)
    ax.set_xlabel("bits per weight (real coded bytes)")
    ax.set_ylabel("SNR (dB)")
    ax.set_title(f"Rate–distortion: {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return save_figure_atomic(fig, path, 120)


def write_report(rd: RateDistortion, directory: str | Path, stem: str, title: str) -> list[Path]:
    """Write ``stem``.md, ``stem``.json and ``stem``.png into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md, js, png = (directory / f"{stem}{ext}" for ext in (".md", ".json", ".png"))
    write_text_atomic(md, markdown(rd, title))
    write_text_atomic(js, json.dumps({"title": title, **rd.as_dict()}, indent=1) + "\n")
    plot(rd, png, title)
    return [md, js, png]
