"""Separable (Kronecker) predictions, for the ``separable+residual`` representation: the
tensor seen as a matrix M (m × n, `weightdna.coords.matrix_shape`) predicted by
Σₖ Aₖ ⊗ Bₖ, Aₖ of m₁ × n₁ and Bₖ of m₂ × n₂ (m = m₁m₂, n = n₁n₂).

Van Loan and Pitsianis (1993): M's blocks rearranged as the rows of R (m₁n₁ × m₂n₂,
R[i₁n₁ + j₁, i₂n₂ + j₂] = M[i₁m₂ + i₂, j₁n₂ + j₂]) turn a sum of r Kronecker products
into a rank-r matrix, so the best such sum is R's truncated SVD — stored as the float16
factors of `weightdna.codec.prediction.lowrank_prediction` of R. A conv kernel (out × in ×
kh × kw) with m₁ = out, n₁ = in is its (out·in) × (kh·kw) reshape.
Format: docs/FORMAT.md, ``separable+residual``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from weightdna.codec.fields import is_int
from weightdna.codec.prediction import (
    DECODERS,
    LOWRANK_KEYS,
    Prediction,
    decode_lowrank,
    lowrank_prediction,
)
from weightdna.coords import matrix_shape
from weightdna.errors import CorruptFileError

SEPARABLE_KEYS = {"blocks", "rank", "dtype"}
# A factorisation is looked at only where it has this many blocks of this many elements
# (fewer save little), and is fitted only where SAMPLED_BLOCKS of its blocks, spread over
# the matrix, hold SEPARABLE_ENERGY of their energy in at most MAX_SAMPLED_RANK directions:
# a Kronecker sum's blocks all lie in the span of its r factors B, an iid matrix's do not.
MIN_BLOCKS = 4
MIN_BLOCK_ELEMENTS = 16
SAMPLED_BLOCKS = 16
SAMPLED_LINES = 16  # rows and columns of each sampled block
MAX_SAMPLED_RANK = 4
SEPARABLE_ENERGY = 0.99
# `separable_looking` skips the eigenvalues of a sample that misses by this factor.
GERSHGORIN_MARGIN = 0.9


def rearrange(matrix: np.ndarray, m1: int, n1: int) -> np.ndarray:
    """R of M (m × n) for blocks A of m1 × n1: row i₁n₁ + j₁ holds block (i₁, j₁) of M."""
    m, n = matrix.shape
    m2, n2 = m // m1, n // n1
    return matrix.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def arrange(r: np.ndarray, m1: int, n1: int, m: int, n: int) -> np.ndarray:
    """M of its `rearrange` R (the inverse)."""
    m2, n2 = m // m1, n // n1
    return r.reshape(m1, n1, m2, n2).transpose(0, 2, 1, 3).reshape(m, n)


def _divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


def factorisations(m: int, n: int) -> Iterator[tuple[int, int]]:
    """Each (m1, n1) worth looking at (MIN_BLOCKS, MIN_BLOCK_ELEMENTS), but those whose R
    is M or Mᵀ itself (a low-rank prediction's)."""
    for m1 in _divisors(m):
        for n1 in _divisors(n):
            m2, n2 = m // m1, n // n1
            if (m1 * n1 < MIN_BLOCKS or m2 * n2 < MIN_BLOCK_ELEMENTS
                    or (m2 == 1 and n1 == 1) or (m1 == 1 and n2 == 1)):
                continue
            yield m1, n1


@functools.lru_cache(maxsize=1024)
def _spread(count: int, most: int) -> np.ndarray:
    """min(count, most) distinct indices spread evenly over 0 … count − 1 (cached, read-only)."""
    k = min(count, most)
    spread = np.arange(k) * (count - 1) // max(k - 1, 1)
    spread.flags.writeable = False
    return spread


def _sampled_stack_indices(m: int, n: int, m1: int, n1: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of M, each (blocks, lines), sampled by `looks_separable`: the same
    SAMPLED_LINES rows and columns of SAMPLED_BLOCKS spread blocks."""
    m2, n2 = m // m1, n // n1
    picked = _spread(m1 * n1, SAMPLED_BLOCKS)
    rows, columns = _spread(m2, SAMPLED_LINES), _spread(n2, SAMPLED_LINES)
    block_rows = (picked // n1)[:, None] * m2 + rows[None, :]  # (blocks, lines)
    block_columns = (picked % n1)[:, None] * n2 + columns[None, :]
    return block_rows, block_columns


def _mostly_in_few_directions(energy: np.ndarray) -> bool:
    """Whether the top min(MAX_SAMPLED_RANK, k // 2) of ``energy`` (k eigenvalues of the
    sampled blocks' Gram matrix, ascending as eigvalsh gives them) hold SEPARABLE_ENERGY."""
    energy = energy[::-1]
    total = float(energy.sum())
    if not total > 0:
        return False
    top = min(MAX_SAMPLED_RANK, len(energy) // 2)
    return float(energy[:top].sum()) >= SEPARABLE_ENERGY * total


def looks_separable(matrix: np.ndarray, m1: int, n1: int) -> bool:
    """Whether SAMPLED_BLOCKS spread blocks lie in a few directions (module docstring):
    a cheap test, on SAMPLED_LINES² elements of each block, whatever the matrix's size."""
    block_rows, block_columns = _sampled_stack_indices(*matrix.shape, m1, n1)
    stack = matrix[block_rows[:, :, None], block_columns[:, None, :]].reshape(
        len(block_rows), -1)
    return _mostly_in_few_directions(np.linalg.eigvalsh(stack @ stack.T))


@functools.lru_cache(maxsize=64)
def _sampled_groups(m: int, n: int) -> tuple[list[tuple[int, int]],
                                             list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(`factorisations` of m × n, their `_sampled_stack_indices` grouped by shape: for each
    shape (positions in that list, rows (g, blocks, lines), columns (g, blocks, lines)))."""
    blocks = list(factorisations(m, n))
    groups: dict[tuple[int, ...], list[int]] = {}
    indices = [_sampled_stack_indices(m, n, m1, n1) for m1, n1 in blocks]
    for i, (rows, columns) in enumerate(indices):
        groups.setdefault(rows.shape + columns.shape[1:], []).append(i)
    stacked = []
    for positions in groups.values():
        rows = np.stack([indices[i][0] for i in positions])
        columns = np.stack([indices[i][1] for i in positions])
        for a in (rows, columns):
            a.flags.writeable = False
        stacked.append((np.array(positions), rows, columns))
    return blocks, stacked


def separable_looking(matrix: np.ndarray) -> list[tuple[int, int]]:
    """The `factorisations` of ``matrix`` (m × n) that pass `looks_separable`, in their
    order, with the same decisions. The sampled stacks of one shape are gathered at once
    and their Gram matrices G formed by one batched ``stacks @ stacksᵀ`` (the same BLAS
    product, stack by stack, as `looks_separable`'s; tests/test_codec_separable.py). A G
    whose top eigenvalues cannot reach SEPARABLE_ENERGY of its trace is rejected without
    its eigenvalues: top · (Gershgorin's bound on the largest) below GERSHGORIN_MARGIN ·
    SEPARABLE_ENERGY · trace, a margin far above the eigensolver's rounding. The others'
    eigenvalues come from one batched eigvalsh (LAPACK's same routine, matrix by matrix)."""
    m, n = matrix.shape
    blocks, groups = _sampled_groups(m, n)
    passed = np.zeros(len(blocks), dtype=bool)
    for positions, rows, columns in groups:
        g, k = rows.shape[:2]
        stacks = matrix[rows[:, :, :, None], columns[:, :, None, :]].reshape(g, k, -1)
        gram = stacks @ stacks.transpose(0, 2, 1)
        bound = np.abs(gram).sum(axis=2).max(axis=1)  # ≥ the largest eigenvalue
        trace = np.trace(gram, axis1=1, axis2=2)
        top = min(MAX_SAMPLED_RANK, k // 2)
        hopeful = ~(top * bound < GERSHGORIN_MARGIN * SEPARABLE_ENERGY * trace)
        if hopeful.any():
            energies = np.linalg.eigvalsh(gram[hopeful])
            passed[positions[hopeful]] = [_mostly_in_few_directions(e) for e in energies]
    return [b for b, ok in zip(blocks, passed, strict=True) if ok]


def separable_prediction(values: np.ndarray, m1: int, n1: int, rank: int) -> Prediction:
    """The best sum of ``rank`` Kronecker products with blocks of m1 × n1 (the truncated
    SVD of R), its factors stored in float16. Raises InvalidInputError where they overflow
    float16 or R's rank is below ``rank``."""
    m, n = matrix_shape(values.shape)
    factors = lowrank_prediction(rearrange(values.reshape(m, n), m1, n1), rank)
    return Prediction("separable+residual", {"blocks": [m1, n1], "rank": rank,
                                             "dtype": "float16"},
                      factors.sections, tuple(values.shape))


def _predicted(prediction: Prediction) -> np.ndarray:
    """What the decoder computes for a ``separable+residual`` prediction."""
    return decode_separable(prediction.params, prediction.sections, prediction.shape,
                            "a separable+residual prediction")


DECODERS["separable+residual"] = _predicted


def decode_separable(params: object, sections: dict[str, bytes], shape: tuple[int, ...],
                     where: str) -> np.ndarray:
    """The prediction a ``separable+residual`` entry's factors give (validated first)."""
    if not isinstance(params, dict) or set(params) != SEPARABLE_KEYS:
        raise CorruptFileError(f"{where}: separable params must have the keys "
                               f"{sorted(SEPARABLE_KEYS)}.")
    blocks = params["blocks"]
    m, n = matrix_shape(shape)
    if not (isinstance(blocks, list) and len(blocks) == 2 and all(is_int(b) for b in blocks)
            and 1 <= blocks[0] <= m and 1 <= blocks[1] <= n
            and m % blocks[0] == 0 and n % blocks[1] == 0):
        raise CorruptFileError(f"{where}: blocks must be [m1, n1], divisors of the matrix's "
                               f"{m} rows and {n} columns.")
    m1, n1 = blocks
    lowrank = {k: params[k] for k in LOWRANK_KEYS}
    r = decode_lowrank(lowrank, sections, (m1 * n1, (m // m1) * (n // n1)), where)
    return arrange(r, m1, n1, m, n).reshape(shape)
