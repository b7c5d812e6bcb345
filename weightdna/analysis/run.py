"""Analyse a model: every estimator on every matrix-like tensor, beside both null baselines.

For each analysed tensor (floating point, laid out as a matrix of at least MIN_ROWS rows
and MIN_COLUMNS columns: matrices, embeddings, conv kernels as out × in·kh·kw) the same
statistics are computed on three inputs: the weights, the weights shuffled, and Gaussian
weights of the same mean, variance and shape (``baselines``). Large tensors are cut down
with a fixed seed, and the sizes used are reported:

* point-cloud estimators (PCA energy, local, correlation, MLE and TwoNN dimension) see a
  seeded random sample of at most ``max_rows`` rows as points in R^columns;
* coordinate estimators (Lipschitz constant, local linearity, the DNA) need neighbouring
  rows, so they see a contiguous block of at most ``max_rows`` rows at a seeded offset
  (the DNA a block of at most ``dna_max_values`` weights);
* entropy sees the values of that block;
* the structure lenses (``lenses``) see a block of at most ``lens_values`` weights, the row
  sample, and ``match_rows`` rows per tensor for rows repeated across tensors.

``claims.judge_claims`` turns the result into one verdict per seed claim, and
``structure.structure_map`` ranks the tensors by what the lenses find.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from weightdna.analysis.baselines import gaussian_like, shuffled_like
from weightdna.analysis.claims import judge_claims
from weightdna.analysis.complexity import probe_dna
from weightdna.analysis.correlation_dimension import CorrelationDimension
from weightdna.analysis.entropy import Entropy
from weightdna.analysis.lenses import lens_block, match_rows, match_tensors, measure_lenses
from weightdna.analysis.likelihood import MLEDimension
from weightdna.analysis.linearity import LocalLinearity
from weightdna.analysis.lipschitz import LipschitzConstant
from weightdna.analysis.local_dimension import LocalDimension
from weightdna.analysis.measure import Measure
from weightdna.analysis.pca import PCAEnergy
from weightdna.analysis.results import INPUTS, ModelAnalysis, TensorAnalysis
from weightdna.analysis.sampling import as_generator, bootstrap_interval, sample_indices
from weightdna.analysis.settings import AnalysisSettings
from weightdna.analysis.structure import structure_map
from weightdna.analysis.twonn import TwoNN
from weightdna.coords import matrix_shape
from weightdna.errors import InvalidInputError, WeightDNAError
from weightdna.weights import ModelWeights, TensorInfo

MIN_ROWS = 8
MIN_COLUMNS = 3
# Extra draws of each null for the PCA spectrum, whose spread is the null's interval.
NULL_DRAWS = 3
N_BOOTSTRAP = 20

Progress = Callable[[int, int, str], None]




def select_analysed(
    weights: ModelWeights, patterns: Sequence[str] | None = None
) -> tuple[list[TensorInfo], dict[str, str]]:
    """The tensors to analyse (matching any glob in patterns) and the others with the reason."""
    chosen: list[TensorInfo] = []
    skipped: dict[str, str] = {}
    for info in weights:
        if patterns and not any(fnmatch.fnmatchcase(info.name, p) for p in patterns):
            continue
        m, n = matrix_shape(info.shape)
        if not info.fittable:
            skipped[info.name] = "not a floating-point weight (buffer or integer)"
        elif info.ndim < 2:
            skipped[info.name] = "a vector (bias or norm): no rows to treat as points"
        elif m < MIN_ROWS or n < MIN_COLUMNS:
            skipped[info.name] = f"{m}×{n} as a matrix: fewer than {MIN_ROWS}×{MIN_COLUMNS}"
        else:
            chosen.append(info)
    if patterns and not chosen and not skipped:
        raise InvalidInputError(
            f"no tensor matches {', '.join(map(repr, patterns))}; `weightdna weights MODEL` "
            "lists the names (glob patterns such as '*.query.weight' work)"
        )
    return chosen, skipped


def dna_targets(infos: Sequence[TensorInfo], count: int) -> set[str]:
    """Names of `count` analysed tensors evenly spaced through the model (all if fewer)."""
    if count <= 0 or not infos:
        return set()
    picks = np.unique(np.linspace(0, len(infos) - 1, min(count, len(infos))).round().astype(int))
    return {infos[i].name for i in picks}


def analyze_weights(
    weights: ModelWeights,
    tensors: Sequence[str] | None = None,
    settings: AnalysisSettings | None = None,
    progress: Progress | None = None,
) -> ModelAnalysis:
    """Analyse every matrix-like tensor of `weights` (`tensors`: globs) and judge the claims.

    progress(done, total, label) is called before each tensor and once at the end.
    """
    settings = settings or AnalysisSettings()
    if settings.max_rows < MIN_ROWS:
        raise InvalidInputError(f"max_rows must be at least {MIN_ROWS}, got {settings.max_rows}")
    started = time.perf_counter()
    infos, skipped = select_analysed(weights, tensors)
    if not infos:
        raise InvalidInputError(
            "no tensor can be analysed: every one is a vector, a buffer or too small "
            f"(at least {MIN_ROWS}×{MIN_COLUMNS} as a matrix)"
        )
    with_dna = dna_targets(infos, settings.dna_tensors)
    results = []
    # One BLAS thread: the products here are small, and on a busy 2-core machine a second
    # spinning thread made eigvalsh of a 384 × 384 matrix 9× slower (measured).
    with threadpool_limits(limits=1):
        for index, info in enumerate(infos):
            if progress is not None:
                progress(index, len(infos), info.name)
            try:
                results.append(analyze_tensor(weights, info, settings, info.name in with_dna))
            except _ConstantTensor as exc:
                skipped[info.name] = str(exc)
    if progress is not None:
        progress(len(infos), len(infos), "rows repeated across tensors")
    with threadpool_limits(limits=1):
        match_tensors(results, settings.seed)
    for t in results:
        t.curves.pop("match_rows", None)
    if progress is not None:
        progress(len(infos), len(infos), "done")
    if not results:
        raise InvalidInputError("no tensor can be analysed: " + "; ".join(
            f"{name}: {why}" for name, why in skipped.items()))
    analysis = ModelAnalysis(
        path=str(weights.path),
        format=weights.format,
        settings=settings,
        tensors=results,
        skipped=skipped,
        total_weights=weights.total_params,
    )
    analysis.claims = judge_claims(analysis)
    analysis.structure = structure_map(analysis)
    analysis.seconds = time.perf_counter() - started
    return analysis


class _ConstantTensor(Exception):
    """A tensor whose weights are all equal: no statistic is defined on it."""


def analyze_tensor(
    weights: ModelWeights, info: TensorInfo, settings: AnalysisSettings, fit_dna: bool = False
) -> TensorAnalysis:
    """All statistics of one tensor on the weights and both nulls (and the DNA if fit_dna)."""
    started = time.perf_counter()
    W = weights.numpy(info.name)
    m, n = matrix_shape(info.shape)
    W = W.reshape(m, n)
    if W.size and W.min() == W.max():
        # Every estimator divides by a spread that is 0 here: skipped, with the reason.
        raise _ConstantTensor(f"constant (every weight is {W.flat[0]:g}): no structure to "
                              "measure")
    # Each tensor's seed mixes in its name, so samples differ between tensors but not runs.
    rng = as_generator(settings.seed + _name_hash(info.name))
    points = W[sample_indices(m, settings.max_rows, rng)]
    block_rows = min(m, settings.max_rows)
    offset = int(rng.integers(0, m - block_rows + 1))
    block = W[offset : offset + block_rows]
    t = TensorAnalysis(
        name=info.name, shape=info.shape, role=info.role, layer=info.layer, rows=m, columns=n,
        sample_rows=points.shape[0], block_rows=block_rows, block_offset=offset,
    )
    if settings.seed_claims:
        point_inputs = _with_nulls(points, rng)
        block_inputs = _with_nulls(block, rng)
        _pca(t, point_inputs, rng)
        _point_dimensions(t, point_inputs, settings, rng)
        _lipschitz(t, block_inputs, rng)
        _entropy(t, block_inputs, rng)
        _linearity(t, block_inputs, rng)
        t.curves["values"] = {k: _sample_values(x, rng) for k, x in block_inputs.items()}
    t.curves["moments"] = (float(block.mean()), float(block.std()))
    lens_rows, lens_start = lens_block(W, offset, settings.lens_values)
    t.details["lens_rows"] = [lens_start, lens_rows.shape[0]]
    measure_lenses(t, lens_rows, points, rng, settings.lens_values, settings.knn_points)
    t.curves["match_rows"] = match_rows(W, settings.match_rows, settings.seed)
    if fit_dna and settings.seed_claims:
        _dna(t, block, offset, m, settings)
    t.seconds = time.perf_counter() - started
    return t


def _name_hash(name: str) -> int:
    """A stable (not Python's salted hash) small integer from a name."""
    return sum((i + 1) * b for i, b in enumerate(name.encode())) % 1_000_003


def _with_nulls(X: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"weights": X, "shuffled": shuffled_like(X, rng), "gaussian": gaussian_like(X, rng)}


def _sample_values(X: np.ndarray, rng: np.random.Generator, size: int = 20000) -> np.ndarray:
    flat = X.ravel()
    return flat[sample_indices(flat.size, size, rng)]


def _record(t: TensorAnalysis, stat: str, which: str, measure: Measure) -> None:
    t.stats.setdefault(stat, {})[which] = measure


def _pca(t: TensorAnalysis, inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """k95/D on each input; each null drawn NULL_DRAWS more times, its spread its interval."""
    spectra = {}
    for which, X in inputs.items():
        est = PCAEnergy().fit(X)
        spectra[which] = est.singular_values_
        values = [est.k_fraction_[0.95]]
        if which != "weights":
            make = shuffled_like if which == "shuffled" else gaussian_like
            values += [PCAEnergy().fit(make(inputs["weights"], rng)).k_fraction_[0.95]
                       for _ in range(NULL_DRAWS)]
        _record(t, "pca_k95_fraction", which, Measure(values[0], min(values), max(values)))
        if which == "weights":
            t.details["pca_k"] = {str(k): v for k, v in est.k_.items()}
            t.details["pca_D"] = est.n_components_
    t.curves["spectra"] = spectra


def _point_dimensions(
    t: TensorAnalysis,
    inputs: dict[str, np.ndarray],
    settings: AnalysisSettings,
    rng: np.random.Generator,
) -> None:
    """Local, correlation, MLE and TwoNN dimension of the rows as points, with intervals."""
    seed = int(rng.integers(2**31))
    estimators = {
        "local_dimension": LocalDimension(
            n_neighbors=settings.n_neighbors, max_points=settings.local_points,
            n_bootstrap=100, random_state=seed,
        ),
        "correlation_dimension": CorrelationDimension(
            max_points=settings.correlation_points, n_bootstrap=N_BOOTSTRAP, random_state=seed
        ),
        "mle_dimension": MLEDimension(max_points=settings.knn_points, random_state=seed),
        "twonn_dimension": TwoNN(max_points=settings.knn_points, random_state=seed),
    }
    for stat, template in estimators.items():
        for which, X in inputs.items():
            try:
                est = template.fit(X)
            except WeightDNAError as exc:
                t.missing[stat] = str(exc)
                t.stats.pop(stat, None)
                break
            interval = est.interval_ or (None, None)
            _record(t, stat, which, Measure(est.dimension_, *interval))
            if stat == "local_dimension" and which == "weights":
                t.details["local_dimension_cap"] = est.max_dimension_
                t.details["local_neighbors"] = est.n_neighbors_
            if stat == "correlation_dimension":
                t.curves.setdefault("correlation", {})[which] = (
                    est.slope_log_r_.copy(), est.local_slopes_.copy(), est.plateau_
                )
                t.details.setdefault("correlation_reliable", {})[which] = est.reliable_
                if which == "weights":
                    t.details["correlation_r_range"] = list(est.r_range_)
                    t.details["eckmann_ruelle_limit"] = est.eckmann_ruelle_limit_
                    t.details["correlation_points"] = est.sample_size_
    if "correlation_dimension" in t.stats:
        _record_fraction(t, "correlation_dimension", "correlation_dimension_fraction", t.columns)


def _record_fraction(t: TensorAnalysis, stat: str, new: str, D: int) -> None:
    for which, m in t.stats[stat].items():
        lo, hi = m.bounds
        _record(t, new, which, Measure(m.value / D, lo / D, hi / D))


def _quantile_interval(
    values: np.ndarray, q: float, rng: np.random.Generator
) -> tuple[float, float]:
    return bootstrap_interval(
        values, lambda s: np.quantile(s, q, axis=1), n_bootstrap=N_BOOTSTRAP, random_state=rng
    )


def _lipschitz(t: TensorAnalysis, inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Quantiles of |Δw|/|Δc| between neighbouring coordinates, with bootstrap intervals."""
    ratios = {}
    for which, X in inputs.items():
        est = LipschitzConstant(quantiles=(0.5, 0.99), max_stored=20000, random_state=rng)
        est.fit(X)
        ratios[which] = est.ratios_
        for q, stat in ((0.5, "lipschitz_median"), (0.99, "lipschitz_q99")):
            lo, hi = _quantile_interval(est.ratios_, q, rng)
            _record(t, stat, which, Measure(est.quantiles_[q], lo, hi))
        _record(t, "lipschitz_max", which, Measure(est.max_))
    t.curves["lipschitz"] = ratios


def _entropy(t: TensorAnalysis, inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Entropy at the weights' step (std/16) on every input, and trained / Gaussian ratio."""
    step = Entropy().fit(inputs["weights"]).step_
    t.details["entropy_step"] = step
    for which, X in inputs.items():
        est = Entropy(step=step).fit(X)
        sample = _sample_values(X, rng, 50000)
        lo, hi = bootstrap_interval(
            sample, lambda s: _entropy_rows(s, step), n_bootstrap=N_BOOTSTRAP, random_state=rng
        )
        # The bootstrap of a plug-in entropy is biased low by the same amount as the
        # estimate; centre the interval on the full-data value.
        mid = (lo + hi) / 2
        value = est.quantized_entropy_bits_
        _record(t, "entropy_bits", which, Measure(value, value + lo - mid, value + hi - mid))
        _record(t, "histogram_entropy_bits", which, Measure(est.entropy_bits_))
    h = t.stats["entropy_bits"]
    g_lo, g_hi = h["gaussian"].bounds
    for which in INPUTS:
        lo, hi = h[which].bounds
        _record(t, "entropy_ratio", which,
                Measure(h[which].value / h["gaussian"].value, lo / g_hi, hi / g_lo))


def _entropy_rows(samples: np.ndarray, step: float) -> np.ndarray:
    """Quantised entropy in bits of each row of samples at step."""
    out = np.empty(samples.shape[0])
    for i, row in enumerate(samples):
        levels = np.rint(row / step).astype(np.int64)
        counts = np.bincount(levels - levels.min())
        p = counts[counts > 0] / row.size
        out[i] = -(p * np.log2(p)).sum()
    return out


def _linearity(t: TensorAnalysis, inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """R² of the 3×3 tangent-plane prediction on each input."""
    for which, X in inputs.items():
        try:
            est = LocalLinearity(random_state=rng).fit(X)
        except WeightDNAError as exc:
            t.missing["local_linearity_r2"] = str(exc)
            t.stats.pop("local_linearity_r2", None)
            return
        _record(t, "local_linearity_r2", which, Measure(est.r2_))


def _dna(t: TensorAnalysis, block: np.ndarray, offset: int, rows: int,
         settings: AnalysisSettings) -> None:
    """A DNA at the seed's ratio fitted to a block of rows, and to both nulls of that block."""
    n = block.shape[1]
    keep = max(1, min(block.shape[0], settings.dna_max_values // n))
    sub = block[:keep]
    rng = as_generator(settings.seed)
    inputs = _with_nulls(sub, rng)
    t.dna = {
        which: probe_dna(
            X, offset, rows, ratio=settings.dna_ratio, steps=settings.dna_steps,
            holdout=settings.dna_holdout, seed=settings.seed, random_state=settings.seed,
        )
        for which, X in inputs.items()
    }
    t.details["dna_rows"] = keep
    for which, probe in t.dna.items():
        _record(t, "dna_psnr_db", which, probe.psnr_db)
        _record(t, "dna_snr_db", which, probe.snr_db)
        _record(t, "dna_holdout_snr_db", which, probe.holdout_snr_db)
        _record(t, "dna_gap_ratio", which, Measure(probe.gap_ratio))
