"""References to another tensor of the same file, for the ``reference+residual``
representation: a tied or repeated block — a tensor equal to an earlier one up to a scale
and, perhaps, an order of its rows (the first axis) — predicted by

    P[i] = scale · R[order[i]]

with R the referenced tensor as the decoder restored it (float64 of its dtype), and the
residual coded as a prediction's is. The reference is an earlier tensor of the file, of the
same shape and a floating-point dtype, and not itself a reference: decoding a tensor
decodes at most one other, and no chain or cycle can form (`weightdna.codec.container`
resolves it; `weightdna.codec.tensor` decodes). Format: docs/FORMAT.md,
``reference+residual``.

The encoder finds candidates cheaply (`signature`: the sorted row mean squares over their
mean, the same for a scaled copy in any row order) and fits the scale and order of each
(`fit`); the rate control then weighs the residual's bits against coding the tensor alone.
"""

from __future__ import annotations

import math

import numpy as np

from weightdna.codec.fields import is_finite_number
from weightdna.codec.quantize import as_rows
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError

REFERENCE_KEYS = {"name", "scale", "rows"}
# Candidates: tensors of at least MIN_ELEMENTS elements and 2 dimensions whose signatures
# agree to SIGNATURE_TOLERANCE (relative), fitted where the prediction leaves at most
# REFERENCE_RESIDUAL of the tensor's energy.
MIN_ELEMENTS = 1024
SIGNATURE_TOLERANCE = 1e-2
REFERENCE_RESIDUAL = 0.25
# Rows of the referenced tensor looked at, either side in norm rank, for each row's match.
MATCH_WINDOW = 8


def signature(values: np.ndarray) -> np.ndarray | None:
    """The sorted row mean squares over their mean (None: too small, under 2 dimensions,
    or all zero)."""
    if values.ndim < 2 or values.size < MIN_ELEMENTS:
        return None
    rows = as_rows(values)
    ms = np.sort(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)) / rows.shape[1]
    mean = float(ms.mean())
    return ms / mean if mean > 0 and math.isfinite(mean) else None


def alike(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two signatures may be of one tensor scaled and reordered."""
    return (a is not None and b is not None and a.shape == b.shape
            and float(np.max(np.abs(a - b), initial=0.0)) <= SIGNATURE_TOLERANCE)


def _matched_order(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """For each row of ``b``, the row of ``a`` most parallel to it among the MATCH_WINDOW
    nearest in norm rank (the ranks of a scaled copy's norms are the same; noise moves a
    row a few places): a permutation, or None where two rows pick one."""
    norms_a, norms_b = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    by_a = np.argsort(norms_a, kind="stable")
    rank_b = np.argsort(np.argsort(norms_b, kind="stable"), kind="stable")
    rows = a.shape[0]
    unit_a = a / np.sqrt(np.maximum(norms_a, 1e-300))[:, None]
    unit_b = b / np.sqrt(np.maximum(norms_b, 1e-300))[:, None]
    best = np.full(rows, -1.0)
    order = by_a[rank_b]
    for shift in range(-MATCH_WINDOW, MATCH_WINDOW + 1):
        picked = by_a[np.clip(rank_b + shift, 0, rows - 1)]
        cos = np.abs(np.einsum("ij,ij->i", unit_a[picked], unit_b))
        better = cos > best
        best[better], order[better] = cos[better], picked[better]
    return order if np.unique(order).size == rows else None


def fit(referenced: np.ndarray, values: np.ndarray) -> tuple[float, np.ndarray | None] | None:
    """(scale, row order or None for the rows in place) predicting ``values`` from
    ``referenced`` (same shape) within REFERENCE_RESIDUAL of its energy, or None. The
    order (`_matched_order`) is tried where the rows in place miss."""
    a, b = as_rows(np.asarray(referenced, np.float64)), as_rows(np.asarray(values, np.float64))
    energy = float(np.sum(b * b))
    if a.shape != b.shape or not energy > 0:
        return None
    for attempt in range(2):
        order = None if attempt == 0 else _matched_order(a, b)
        if attempt and order is None:
            return None
        source = a if order is None else a[order]
        norm = float(np.sum(source * source))
        if not norm > 0:
            continue
        scale = float(np.sum(source * b)) / norm
        left = float(np.sum((b - scale * source) ** 2))
        if math.isfinite(scale) and scale != 0 and left <= REFERENCE_RESIDUAL * energy:
            if order is not None and np.array_equal(order, np.arange(order.size)):
                order = None
            return scale, order
    return None


def values(referenced: np.ndarray, scale: float, order: np.ndarray | None) -> np.ndarray:
    """The prediction (float64): scale × each row of the referenced tensor, in ``order``
    (its non-finite elements, stored exactly on the side, predicted as 0)."""
    rows = as_rows(np.asarray(referenced, dtype=np.float64))
    if order is not None:
        rows = rows[order]
    rows = np.where(np.isfinite(rows), rows, 0.0)
    return (rows * float(scale)).reshape(referenced.shape)


def order_bytes(order: np.ndarray) -> bytes:
    """The ``order`` section: uint32 LE row indices, zstd-compressed."""
    return compress_bytes(np.ascontiguousarray(order, dtype="<u4").tobytes())


def check_reference(params: object, where: str) -> tuple[str, float, bool]:
    """(referenced name, scale, whether an order is stored) of a ``reference+residual``
    entry's reference params, checked."""
    if not isinstance(params, dict) or set(params) != REFERENCE_KEYS:
        raise CorruptFileError(f"{where}: reference params must have the keys "
                               f"{sorted(REFERENCE_KEYS)}.")
    name, scale, rows = params["name"], params["scale"], params["rows"]
    if not isinstance(name, str) or not name:
        raise CorruptFileError(f"{where}: the reference's name must be a non-empty string.")
    if not (is_finite_number(scale) and scale != 0):
        raise CorruptFileError(f"{where}: the reference's scale must be a finite non-zero "
                               "number.")
    if not isinstance(rows, bool):
        raise CorruptFileError(f"{where}: the reference's rows must be true or false.")
    return name, float(scale), rows


def decode_order(section: bytes, rows: int, where: str) -> np.ndarray:
    """The row order of an ``order`` section: a permutation of 0 … rows − 1."""
    order = np.frombuffer(decompress_bytes(section, 4 * rows, where), dtype="<u4")
    if order.size != rows or not np.array_equal(np.sort(order), np.arange(rows)):
        raise CorruptFileError(f"{where}: the row order must be a permutation of the "
                               f"{rows} rows.")
    return order.astype(np.int64)
