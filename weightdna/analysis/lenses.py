"""The structure lenses on one tensor, and across the tensors of a model, beside three nulls.

Each lens statistic is lower where there is structure, and is measured on the weights and on
three nulls (``baselines.LENS_NULLS``): shuffled, Gaussian of equal mean and variance, and
shuffled within each row (which keeps each row's values and norm, so that unequal rows alone
do not pass for structure).

* transform energy (``transform``): DCT-II and DFT along the rows and along the columns,
  compaction and sparsity (fraction of coefficients holding 95% of the energy); for conv
  kernels also the 2-D DCT of each kh × kw window;
* separability (``separability``): the numbers in the Kronecker factors holding 95% of the
  energy, over the weights', at the cheapest factor shape;
* low rank: the numbers in the rank-k95 factors of the row sample, over the weights';
* spatial smoothness of conv kernels (``smoothness``): roughness of each kh × kw window;
* the column cloud: MLE and TwoNN dimension of the columns as points;
* cross-tensor similarity (``similarity``, across the model: ``match_tensors``).

Sizes: the lenses along the columns and separability see a contiguous block of about
``lens_values`` weights (whole rows, 64 at least, from a row that is a multiple of 256, so
that a Kronecker tensor keeps its alignment); the lenses along the rows and within conv
windows a seeded sample of the rows of about as many weights; the low-rank and column-cloud
lenses the row sample of the point-cloud estimators; the row match ``match_rows`` seeded rows per
tensor, the same rows in every tensor of equal row count. Intervals: bootstrap over the
signals, windows or query rows; for the rank lenses, whose value on the weights is exact,
the nulls' spread over ``LENS_NULL_DRAWS`` draws, as for PCA.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from weightdna.analysis.baselines import LENS_NULLS
from weightdna.analysis.likelihood import MLEDimension
from weightdna.analysis.measure import Measure
from weightdna.analysis.pca import PCAEnergy
from weightdna.analysis.results import TensorAnalysis
from weightdna.analysis.sampling import as_generator, sample_indices
from weightdna.analysis.separability import KroneckerRank, factor_shapes
from weightdna.analysis.similarity import RowMatch
from weightdna.analysis.smoothness import WindowRoughness
from weightdna.analysis.transform import TransformEnergy
from weightdna.analysis.twonn import TwoNN
from weightdna.errors import WeightDNAError

LENS_INPUTS = ("weights", *LENS_NULLS)
LENS_NULL_DRAWS = 2
N_BOOTSTRAP = 10
ALIGN = 256
MATCH_QUERIES = 32


def lens_block(W: np.ndarray, offset: int, lens_values: int) -> tuple[np.ndarray, int]:
    """Whole rows of the matrix W, from offset rounded down to a multiple of ALIGN, and that
    first row: all rows if they hold at most lens_values weights, else a multiple of 64 rows
    (at least 64) holding at most that many, so that factor shapes still divide the block."""
    m = W.shape[0]
    rows = m if m * W.shape[1] <= lens_values else min(m, max(64, lens_values // W.shape[1]
                                                                // 64 * 64))
    start = min((offset // ALIGN) * ALIGN, W.shape[0] - rows)
    return W[start : start + rows], start


def with_lens_nulls(X: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """X and each of its lens nulls, seeded from rng."""
    return {"weights": X, **{name: make(X, rng) for name, make in LENS_NULLS.items()}}


def measure_lenses(
    t: TensorAnalysis,
    block: np.ndarray,
    points: np.ndarray,
    rng: np.random.Generator,
    lens_values: int = 65536,
    knn_points: int = 1000,
) -> None:
    """Every single-tensor lens of t: block is a contiguous block of whole rows of the matrix
    layout (``lens_block``), points the row sample; the results go into t.stats.

    Lenses along the rows (and within conv windows) see a seeded sample of the points of at
    most lens_values weights; those that need neighbouring rows (along the columns,
    separability) see the block.
    """
    rows = points[sample_indices(len(points), max(8, lens_values // points.shape[1]), rng)]
    row_inputs = with_lens_nulls(rows, rng)
    block_inputs = with_lens_nulls(block, rng)
    for transform in ("dct", "dft"):
        if rows.shape[1] >= 4:
            _transform(t, row_inputs, transform, "rows", None, rng)
        if len(block) >= 4:
            _transform(t, block_inputs, transform, "columns", None, rng)
    _separability(t, block_inputs, rng)
    _low_rank(t, points, rng)
    if len(t.shape) == 4 and t.shape[2] * t.shape[3] >= 4:
        _windows(t, row_inputs, (t.shape[2], t.shape[3]), rng)
    _column_cloud(t, points, rng, knn_points)


def _record(t: TensorAnalysis, stat: str, which: str, measure: Measure) -> None:
    t.stats.setdefault(stat, {})[which] = measure


def _guarded(t: TensorAnalysis, stat: str, measure_one) -> None:
    """measure_one(which) → Measure on every input; a WeightDNAError marks stat missing."""
    try:
        for which in LENS_INPUTS:
            _record(t, stat, which, measure_one(which))
    except WeightDNAError as exc:
        t.stats.pop(stat, None)
        t.missing[stat] = str(exc)


def _transform(t: TensorAnalysis, inputs: dict[str, np.ndarray], transform: str, axis: str,
               window: tuple[int, int] | None, rng: np.random.Generator) -> None:
    key = f"{transform}_{axis}"
    fitted = {}
    try:
        for which, X in inputs.items():
            fitted[which] = TransformEnergy(transform, axis, window, n_bootstrap=N_BOOTSTRAP,
                                            random_state=rng).fit(X)
    except WeightDNAError as exc:
        t.missing[f"{key}_sparsity"] = t.missing[f"{key}_compaction"] = str(exc)
        return
    for which, est in fitted.items():
        _record(t, f"{key}_compaction", which, Measure(est.compaction_, *est.compaction_interval_))
        _record(t, f"{key}_sparsity", which, Measure(est.sparsity_, *est.sparsity_interval_))
    t.details[f"{key}_coefficients"] = fitted["weights"].n_coefficients_


def _separability(t: TensorAnalysis, inputs: dict[str, np.ndarray],
                  rng: np.random.Generator) -> None:
    """Cheapest Kronecker factors on the weights; the nulls at the same factor shape."""
    X = inputs["weights"]
    shape = (X.shape[0], *t.shape[1:]) if len(t.shape) > 2 else X.shape
    try:
        est = KroneckerRank(factor_shapes(shape)).fit(X)
    except WeightDNAError as exc:
        t.missing["kronecker_cost"] = str(exc)
        return
    chosen = [est.factor_shape_]
    m1, n1 = est.factor_shape_
    t.details["kronecker"] = {
        "factor_shape": [m1, n1, X.shape[0] // m1, X.shape[1] // n1],
        "rank": est.rank_, "rank_fraction": est.rank_fraction_,
        "terms_possible": int(est.spectrum_.size),
        "costs": {f"{a}x{b}": c for (a, b), c in est.costs_.items()},
    }
    _record(t, "kronecker_cost", "weights", Measure(est.cost_))
    for which, make in LENS_NULLS.items():
        costs = [KroneckerRank(chosen).fit(inputs[which]).cost_]
        costs += [KroneckerRank(chosen).fit(make(X, rng)).cost_
                  for _ in range(LENS_NULL_DRAWS - 1)]
        _record(t, "kronecker_cost", which, Measure(costs[0], min(costs), max(costs)))


def _low_rank(t: TensorAnalysis, points: np.ndarray, rng: np.random.Generator) -> None:
    """Numbers in the k95 factors (k·(rows + columns)) over the weights, on the row sample."""
    m, n = points.shape

    def cost(X: np.ndarray) -> float:
        return PCAEnergy((0.95,)).fit(X).k_[0.95] * (m + n) / (m * n)

    def one(which: str) -> Measure:
        if which == "weights":
            return Measure(cost(points))
        make = LENS_NULLS[which]
        values = [cost(make(points, rng)) for _ in range(LENS_NULL_DRAWS)]
        return Measure(values[0], min(values), max(values))

    _guarded(t, "lowrank_cost", one)


def _windows(t: TensorAnalysis, inputs: dict[str, np.ndarray], window: tuple[int, int],
             rng: np.random.Generator) -> None:
    """The 2-D DCT of every kh × kw window, and the windows' roughness."""
    _transform(t, inputs, "dct", "window", window, rng)

    def one(which: str) -> Measure:
        est = WindowRoughness(window, n_bootstrap=N_BOOTSTRAP, random_state=rng)
        est.fit(inputs[which])
        return Measure(est.roughness_, *est.interval_)

    _guarded(t, "window_roughness", one)


def _column_cloud(t: TensorAnalysis, points: np.ndarray, rng: np.random.Generator,
                  knn_points: int) -> None:
    """MLE and TwoNN dimension of the columns of the row sample as points."""
    inputs = with_lens_nulls(points, rng)
    seed = int(rng.integers(2**31))
    for stat, template in (
        ("column_mle_dimension", MLEDimension(max_points=knn_points, n_bootstrap=N_BOOTSTRAP,
                                              random_state=seed)),
        ("column_twonn_dimension", TwoNN(max_points=knn_points, n_bootstrap=N_BOOTSTRAP,
                                         random_state=seed)),
    ):
        def one(which: str, template=template) -> Measure:
            est = template.fit(inputs[which].T)
            return Measure(est.dimension_, *(est.interval_ or (None, None)))

        _guarded(t, stat, one)


def match_rows(W: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of W the row match uses (float32) and their indices: a sample that depends
    only on the row count and seed, so that tensors of equal shape share it."""
    index = sample_indices(W.shape[0], count, seed + W.shape[0])
    return W[index].astype(np.float32), index


def match_tensors(tensors: Sequence[TensorAnalysis], seed: int = 0) -> None:
    """Cross-tensor similarity: for each tensor, the tensor (itself included) whose rows its
    rows repeat most closely up to scale and order; t.stats["tied_residual"] on the weights
    against that partner and on the nulls of the query rows against the same partner.

    Each tensor needs t.curves["match_rows"] = (rows, indices) from ``match_rows``.
    """
    rng = as_generator(seed)
    by_width: dict[int, list[TensorAnalysis]] = {}
    for t in tensors:
        if "match_rows" in t.curves:
            by_width.setdefault(t.curves["match_rows"][0].shape[1], []).append(t)
    for group in by_width.values():
        queries = {}
        for t in group:
            rows, index = t.curves["match_rows"]
            pick = np.sort(sample_indices(len(rows), MATCH_QUERIES, rng))
            queries[t.name] = (rows[pick], index[pick])
        for t in group:
            _match_one(t, group, queries[t.name], rng)


def _match_one(t: TensorAnalysis, group: Sequence[TensorAnalysis],
               query: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> None:
    rows, index = query
    best = None
    for other in group:
        reference, ref_index = other.curves["match_rows"]
        same = other is t
        est = _row_match(rows, index, reference, ref_index, same, rng)
        if est is not None and (best is None or est.residual_ < best[1].residual_):
            best = (other, est)
    if best is None:
        return
    partner, est = best
    reference, ref_index = partner.curves["match_rows"]
    t.details["tied_partner"] = {
        "tensor": partner.name, "matched_rows": est.matched_,
        "matched_in_place": est.in_place_, "query_rows": est.n_queries_,
        "reference_rows": len(reference),
    }
    _record(t, "tied_residual", "weights", Measure(est.residual_, *est.interval_))
    for which, make in LENS_NULLS.items():
        null = RowMatch(n_bootstrap=N_BOOTSTRAP, random_state=rng).fit(
            make(rows.astype(np.float64), rng), reference)
        _record(t, "tied_residual", which, Measure(null.residual_, *null.interval_))


def _row_match(rows: np.ndarray, index: np.ndarray, reference: np.ndarray,
               ref_index: np.ndarray, same: bool, rng: np.random.Generator) -> RowMatch | None:
    if same and len(reference) < 2:
        return None
    est = RowMatch(n_bootstrap=N_BOOTSTRAP, random_state=rng)
    try:
        return est.fit(rows, reference, index, ref_index, exclude_same=same)
    except WeightDNAError:
        return None

