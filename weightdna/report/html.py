"""An analysis as ONE self-contained HTML page: tables, and PNG figures embedded as base64.

Nothing is loaded from elsewhere (no scripts, fonts or stylesheets by URL), so the file
can be mailed or archived as is. Figures follow weightdna.plots: matplotlib's Figure with
the Agg renderer, never pyplot's global state.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import numpy as np

from weightdna.analysis.claims import FAILS, HOLDS, INCONCLUSIVE
from weightdna.analysis.run import ModelAnalysis, TensorAnalysis
from weightdna.analysis.settings import ABOUT_SEED
from weightdna.analysis.structure import RULE, STRUCTURED, summary_sentences
from weightdna.plots import DPI, new_figure

MAX_FEATURED = 6
_VERDICT_COLOURS = {HOLDS: "#c8e6c9", FAILS: "#ffcdd2", INCONCLUSIVE: "#fff3c4"}
_INPUT_STYLE = {
    "weights": {"color": "tab:blue", "label": "weights"},
    "shuffled": {"color": "tab:orange", "label": "shuffled"},
    "gaussian": {"color": "tab:gray", "label": "Gaussian"},
}

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; }
td.name, td.text { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.rule { color: #555; font-size: 0.85em; }
.undefined { color: #8a5a00; font-size: 0.85em; }
"""


def render_analysis_html(
    analysis: ModelAnalysis, sections: Sequence[tuple[str, str]] = ()
) -> str:
    """The whole report as an HTML string.

    sections: (title, HTML body) pairs placed after the summary, for pipelines (the demo)
    that add compression and accuracy results to the analysis.
    """
    featured = featured_tensors(analysis.tensors)
    extra = [part for title, body in sections for part in (f"<h2>{_e(title)}</h2>", body)]
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>weightdna analysis: {_e(analysis.path)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Weight analysis of {_e(analysis.path)}</h1>",
        "<h2>What was found</h2>",
        structure_summary(analysis),
    ]
    structure = ["<h2>Structure map: which lens sets each tensor apart from the nulls</h2>",
                 _structure_table(analysis)]
    if not analysis.settings.seed_claims:
        return "\n".join([*head, _summary(analysis), *extra, *structure,
                          "</body></html>"]) + "\n"
    parts = [
        *head,
        plain_summary(analysis),
        _summary(analysis),
        *extra,
        *structure,
        "<h2>The seed's claims</h2>",
        f"<p>{_e(ABOUT_SEED)}</p>",
        _claims_table(analysis),
        "<h2>DNA at the seed's ratio, and the complexity bound</h2>",
        _dna_table(analysis),
        "<h2>Where structure lives: every analysed tensor</h2>",
        _overview_table(analysis),
        "<h2>Figures</h2>",
        f"<p>Tensors shown: {_e(', '.join(t.name for t in featured))}.</p>",
        "<h3>Singular-value spectra, weights against the nulls</h3>",
        embed_png(_spectra_figure(featured)),
        "<h3>Weight histograms against a Gaussian of the same mean and variance</h3>",
        embed_png(_histogram_figure(featured)),
        "<h3>Correlation dimension: local slopes d log C / d log r</h3>",
        embed_png(_correlation_figure(featured)),
        "<h3>Lipschitz ratios |Δw|/|Δc| between neighbouring coordinates</h3>",
        embed_png(_lipschitz_figure(featured)),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def featured_tensors(tensors: Sequence[TensorAnalysis]) -> list[TensorAnalysis]:
    """Up to MAX_FEATURED tensors: those with a DNA, then the most structured by PCA."""
    chosen = [t for t in tensors if t.dna is not None][:MAX_FEATURED]
    by_structure = sorted(tensors, key=lambda t: -_pca_structure(t))
    for t in by_structure:
        if len(chosen) >= MAX_FEATURED:
            break
        if t not in chosen:
            chosen.append(t)
    return chosen


def _pca_structure(t: TensorAnalysis) -> float:
    """How far below the Gaussian's k95/D the weights' lies (0 when not below)."""
    w, g = t.value("pca_k95_fraction"), t.value("pca_k95_fraction", "gaussian")
    return 0.0 if math.isnan(w) or math.isnan(g) or g <= 0 else max(0.0, 1.0 - w / g)


def _e(text: object) -> str:
    return html.escape(str(text))


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def structure_summary(analysis: ModelAnalysis) -> str:
    """What the structure lenses found, in plain words (``structure.summary_sentences``)."""
    lead, *rest = summary_sentences(analysis.structure)
    items = "".join(f"<li>{_e(line)}</li>" for line in rest)
    return f"<p><b>Structure.</b> {_e(lead)}</p>" + (f"\n<ul>{items}</ul>" if items else "")


def _structure_table(analysis: ModelAnalysis) -> str:
    """Every tensor, ranked, with its best lens; then every lens that finds structure."""
    rows = [
        f"<p class='rule'>{_e(RULE)}</p>",
        "<table><tr><th>#</th><th>tensor</th><th>verdict</th><th>best lens</th>"
        "<th>weights</th><th>strongest null</th><th>ratio</th><th>bits saved (≈)</th>"
        "<th>what it means</th><th>other lenses finding structure</th></tr>",
    ]
    for rank, s in enumerate(analysis.structure, 1):
        f = s.best
        if f is None:
            rows.append(f"<tr><td>{rank}</td><td class='name'>{_e(s.tensor)}</td>"
                        f"<td class='text'>{_e(s.verdict)}</td>" + "<td>–</td>" * 7 + "</tr>")
            continue
        found = s.verdict == STRUCTURED
        others = [g.lens.name for g in s.findings if g is not f and g.verdict == STRUCTURED]
        shade = _shade(1.0 - f.ratio) if found else ""
        rows.append(
            f"<tr><td>{rank}</td><td class='name'>{_e(s.tensor)}</td>"
            f"<td class='text'{shade}><b>{_e(s.verdict)}</b></td>"
            f"<td class='text'>{_e(f.lens.name)}</td>"
            f"<td>{_fmt(f.value.value)}</td><td>{_fmt(f.null_value.value)} ({_e(f.null)})</td>"
            f"<td>{_fmt(f.ratio)}</td><td>{f'{f.bits_saved:,.0f}' if found else '–'}</td>"
            f"<td class='text'>{_e(f.detail)}</td><td class='text'>{_e('; '.join(others))}</td>"
            "</tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def plain_summary(analysis: ModelAnalysis) -> str:
    """The findings in plain words, claim by claim, for a reader who skips the tables."""
    claims = analysis.claims
    if not claims:
        return "<p>No claim could be judged: no tensor was analysed.</p>"
    counts = {v: sum(c.verdict == v for c in claims) for v in (HOLDS, FAILS, INCONCLUSIVE)}
    random_like = [c for c in claims if _like_random(c)]
    lead = (
        f"<p>{len(analysis.tensors)} tensors of {_e(analysis.path)} were measured "
        f"against the seed's {len(claims)} claims about trained weights: {counts[HOLDS]} "
        f"hold, {counts[FAILS]} fail, {counts[INCONCLUSIVE]} are inconclusive."
    )
    if len(random_like) * 2 > len(claims):
        lead += (" On most measures these weights are indistinguishable from the same "
                 "weights shuffled or from Gaussian noise of the same variance: the "
                 "structure the seed describes is not there.")
    items = []
    for c in claims:
        nulls = ", ".join(f"{which} {_fmt(v)}" for which, v in c.nulls.items())
        if c.verdict == HOLDS:
            meaning = "The weights differ from random ones here, as the seed says."
        elif c.verdict == FAILS and c in random_like:
            meaning = "Random weights give the same value: this measure sees no structure."
        elif c.verdict == FAILS:
            meaning = "The weights lie outside the seed's range."
        else:
            meaning = ("Not decided: tensors disagree, the value sits at an end of the "
                       "range, or random weights reach it too (the rule is in the table).")
        items.append(
            f"<li><b>{_e(c.claim)}</b>: <b>{c.verdict}</b>. The seed says "
            f"{_e(c.seed_number)}; the weights give {_fmt(c.value)} (median over tensors; "
            f"{_e(nulls)}). {meaning}</li>"
        )
    return lead + "</p>\n<ul>\n" + "\n".join(items) + "\n</ul>"


def _like_random(c) -> bool:  # c: ClaimVerdict
    """The claim's value within 10% of every null's: the measure does not tell them apart."""
    nulls = [v for v in c.nulls.values() if v is not None and math.isfinite(v)]
    if not nulls or c.value is None or not math.isfinite(c.value):
        return False
    return all(abs(c.value - v) <= 0.1 * max(abs(v), 1e-12) for v in nulls)


def _summary(analysis: ModelAnalysis) -> str:
    s = analysis.settings
    analysed = sum(math.prod(t.shape) for t in analysis.tensors)
    return (
        f"<p>{len(analysis.tensors)} tensors analysed ({analysed:,} of {analysis.total_weights:,} "
        f"weights), {len(analysis.skipped)} skipped (vectors, buffers, tiny tensors); "
        f"{analysis.seconds:.1f} s. Point clouds: at most {s.max_rows} rows sampled with seed "
        f"{s.seed}; coordinate statistics on a contiguous block of at most {s.max_rows} rows. "
        "Every statistic is shown beside the same statistic on the weights shuffled and on "
        "Gaussian weights of the same mean, variance and shape; the structure lenses also "
        "beside the weights shuffled within each row, which keeps every row's norm.</p>"
    )


def _claims_table(analysis: ModelAnalysis) -> str:
    rows = [
        "<table><tr><th>claim</th><th>seed's number</th><th>verdict</th><th>value (median)"
        "</th><th>shuffled</th><th>Gaussian</th><th>evidence</th></tr>"
    ]
    for c in analysis.claims:
        colour = _VERDICT_COLOURS[c.verdict]
        rows.append(
            f"<tr><td class='text'>{_e(c.claim)}</td><td class='text'>{_e(c.seed_number)}</td>"
            f"<td style='background:{colour}'><b>{c.verdict}</b></td><td>{_fmt(c.value)}</td>"
            f"<td>{_fmt(c.nulls.get('shuffled'))}</td><td>{_fmt(c.nulls.get('gaussian'))}</td>"
            f"<td class='text'>{_e(c.evidence)}<div class='rule'>rule: {_e(c.rule)}</div></td>"
            "</tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _dna_table(analysis: ModelAnalysis) -> str:
    probed = [t for t in analysis.tensors if t.dna is not None]
    if not probed:
        return "<p>No DNA was fitted (--dna-tensors 0).</p>"
    head = (
        "<p>A SIREN with about numel/22 parameters fitted to a block of rows (80% of its "
        "coordinates; 20% held out). PSNR: MAX = max|w| of the block. Bits: the DNA's float32 "
        "parameters plus the residual coded by the codec so that every weight is within 1% "
        "of max|w|; 'direct' codes the weights themselves to the same accuracy.</p>"
        "<table><tr><th>tensor</th><th>input</th><th>weights</th><th>params</th><th>ratio"
        "</th><th>PSNR dB</th><th>SNR dB</th><th>held-out SNR dB</th><th>E_gen/E_train</th>"
        "<th>K bound bits/w</th><th>direct bits/w</th></tr>"
    )
    rows = [head]
    for t in probed:
        for which, p in t.dna.items():
            rows.append(
                f"<tr><td class='name'>{_e(t.name)}</td><td class='text'>{which}</td>"
                f"<td>{p.weights:,}</td><td>{p.parameters:,}</td><td>{p.ratio:.1f}</td>"
                f"<td>{_fmt(p.psnr_db.value)}</td><td>{_fmt(p.snr_db.value)}</td>"
                f"<td>{_fmt(p.holdout_snr_db.value)}</td><td>{_fmt(p.gap_ratio)}</td>"
                f"<td>{p.bound_bits / p.weights:.3f}</td><td>{p.direct_bits / p.weights:.3f}</td>"
                "</tr>"
            )
    rows.append("</table>")
    return "\n".join(rows)


def _shade(score: float) -> str:
    """A green background whose depth grows with score in [0, 1]; none below 0.02."""
    if math.isnan(score) or score < 0.02:
        return ""
    level = int(255 - 120 * min(score, 1.0))
    return f" style='background:rgb({level},255,{level})'"


def _undefined(reason: str) -> str:
    return f"<span class='undefined' title='{_e(reason)}'>undefined ({_e(reason)})</span>"


def _cell(t: TensorAnalysis, stat: str, null: str, lower_is_structure: bool = True) -> str:
    """'weights | null' with a shade when the weights are apart from the null in that direction."""
    m, n = t.stats.get(stat, {}).get("weights"), t.stats.get(stat, {}).get(null)
    if m is None or n is None:
        reason = t.undefined(stat)
        return f"<td>{_undefined(reason) if reason else '–'}</td>"
    shown = [t.undefined(stat, which) for which in ("weights", null)]
    if any(shown):
        parts = [_undefined(r) if r else _fmt(x.value) for r, x in zip(shown, (m, n), strict=True)]
        return f"<td>{parts[0]} | {parts[1]}</td>"
    score = math.nan
    if m.separated_from(n) and n.value != 0:
        gap = (n.value - m.value) if lower_is_structure else (m.value - n.value)
        score = gap / abs(n.value)
    return f"<td{_shade(score)}>{_fmt(m.value)} | {_fmt(n.value)}</td>"


def _overview_table(analysis: ModelAnalysis) -> str:
    rows = [
        "<p>Each cell: weights | null. Green where the weights are apart from the null (no "
        "overlap of intervals) in the direction of structure, deeper for a larger relative "
        "gap. R² is shaded by its excess over the shuffled's. Column MLE dim: the columns "
        "as points, beside the weights shuffled within each row.</p>",
        "<table><tr><th>tensor</th><th>matrix</th><th>rows used</th>"
        "<th>k95/D | Gauss</th><th>local dim | Gauss</th><th>corr dim | Gauss</th>"
        "<th>MLE dim | Gauss</th><th>column MLE dim | within rows</th>"
        "<th>Lipschitz median | shuffled</th>"
        "<th>tangent-plane R² | shuffled</th><th>H/H<sub>Gauss</sub></th></tr>",
    ]
    for t in analysis.tensors:
        r2 = t.value("local_linearity_r2")
        r2_null = t.value("local_linearity_r2", "shuffled")
        h = t.stats.get("entropy_ratio", {}).get("weights")
        h_shade = _shade(1.0 - h.value) if h is not None and h.bounds[1] < 1.0 else ""
        reliable = t.details.get("correlation_reliable", {}).get("weights", False)
        rows.append(
            f"<tr><td class='name'>{_e(t.name)}</td><td>{t.rows}×{t.columns}</td>"
            f"<td>{t.sample_rows}</td>"
            + _cell(t, "pca_k95_fraction", "gaussian")
            + _cell(t, "local_dimension", "gaussian")
            + _cell(t, "correlation_dimension", "gaussian").replace(
                "</td>", "" if reliable else " (unreliable)</td>")
            + _cell(t, "mle_dimension", "gaussian")
            + _cell(t, "column_mle_dimension", "within_rows")
            + _cell(t, "lipschitz_median", "shuffled")
            + f"<td{_shade(r2 - r2_null)}>{_fmt(r2)} | {_fmt(r2_null)}</td>"
            + f"<td{h_shade}>{_fmt(h.value if h else None)}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def embed_png(png: bytes) -> str:
    """An <img> element carrying the PNG itself (base64), so the page needs no other file."""
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _png(fig) -> bytes:  # fig: matplotlib.figure.Figure
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _panels(count: int, width: float = 4.2, height: float = 3.2):
    cols = min(3, max(count, 1))
    rows = math.ceil(max(count, 1) / cols)
    fig = new_figure(width * cols, height * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes


def _short(name: str, limit: int = 42) -> str:
    return name if len(name) <= limit else "…" + name[-limit + 1 :]


def _spectra_figure(tensors: Sequence[TensorAnalysis]) -> bytes:
    fig, axes = _panels(len(tensors))
    for ax, t in zip(axes, tensors, strict=False):
        for which, s in t.curves.get("spectra", {}).items():
            x = np.arange(1, s.size + 1) / s.size
            ax.semilogy(x, s / s[0], **_INPUT_STYLE[which])
        ax.set_title(_short(t.name), fontsize=8)
        ax.set_xlabel("i / D")
        ax.set_ylabel("σᵢ / σ₁")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def _histogram_figure(tensors: Sequence[TensorAnalysis]) -> bytes:
    fig, axes = _panels(len(tensors))
    for ax, t in zip(axes, tensors, strict=False):
        values = t.curves["values"]["weights"]
        mean, std = t.curves["moments"]
        ax.hist(values, bins=120, density=True, color="tab:blue", alpha=0.6, label="weights")
        x = np.linspace(values.min(), values.max(), 400)
        if std > 0:
            pdf = np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
            ax.plot(x, pdf, color="tab:gray", label="Gaussian, same mean and variance")
        ax.set_yscale("log")
        ax.set_title(_short(t.name), fontsize=8)
        ax.set_xlabel("w")
        ax.set_ylabel("density (log scale)")
        ax.legend(fontsize=7)
    return _png(fig)


def _correlation_figure(tensors: Sequence[TensorAnalysis]) -> bytes:
    fig, axes = _panels(len(tensors))
    for ax, t in zip(axes, tensors, strict=False):
        for which, (log_r, slopes, plateau) in t.curves.get("correlation", {}).items():
            style = _INPUT_STYLE[which]
            ax.plot(log_r, slopes, marker=".", **style)
            ax.plot(log_r[plateau], slopes[plateau], color=style["color"], linewidth=4, alpha=0.4)
        ax.set_title(_short(t.name), fontsize=8)
        ax.set_xlabel("log r")
        ax.set_ylabel("local slope (thick: plateau)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def _lipschitz_figure(tensors: Sequence[TensorAnalysis]) -> bytes:
    fig, axes = _panels(len(tensors))
    for ax, t in zip(axes, tensors, strict=False):
        ratios = t.curves.get("lipschitz", {})
        positive = [np.log10(r[r > 0]) for r in ratios.values() if np.any(r > 0)]
        if not positive:
            continue
        bins = np.linspace(min(p.min() for p in positive), max(p.max() for p in positive), 80)
        for which, r in ratios.items():
            ax.hist(np.log10(r[r > 0]), bins=bins, histtype="step", density=True,
                    **_INPUT_STYLE[which])
        ax.axvspan(np.log10(5), np.log10(10), color="tab:green", alpha=0.15, label="claim 5–10")
        ax.set_title(_short(t.name), fontsize=8)
        ax.set_xlabel("log₁₀ |Δw|/|Δc|")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    return _png(fig)
