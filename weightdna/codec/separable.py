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

from collections.abc import Iterator

import numpy as np

from weightdna.codec.fields import is_int
from weightdna.codec.prediction import (
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


def _spread(count: int, most: int) -> np.ndarray:
    """min(count, most) distinct indices spread evenly over 0 … count − 1."""
    k = min(count, most)
    return np.arange(k) * (count - 1) // max(k - 1, 1)


def looks_separable(matrix: np.ndarray, m1: int, n1: int) -> bool:
    """Whether SAMPLED_BLOCKS spread blocks lie in a few directions (module docstring):
    a cheap test, on SAMPLED_LINES² elements of each block, whatever the matrix's size."""
    m, n = matrix.shape
    m2, n2 = m // m1, n // n1
    count = m1 * n1
    picked = _spread(count, SAMPLED_BLOCKS)
    # The same few elements of each block: blocks in the span of a few B lie there too.
    rows, columns = _spread(m2, SAMPLED_LINES), _spread(n2, SAMPLED_LINES)
    block_rows = (picked // n1)[:, None] * m2 + rows[None, :]  # (blocks, lines)
    block_columns = (picked % n1)[:, None] * n2 + columns[None, :]
    stack = matrix[block_rows[:, :, None], block_columns[:, None, :]].reshape(len(picked), -1)
    energy = np.linalg.eigvalsh(stack @ stack.T)[::-1]  # the squared singular values
    total = float(energy.sum())
    if not total > 0:
        return False
    top = min(MAX_SAMPLED_RANK, len(picked) // 2)
    return float(energy[:top].sum()) >= SEPARABLE_ENERGY * total


def separable_prediction(values: np.ndarray, m1: int, n1: int, rank: int) -> Prediction:
    """The best sum of ``rank`` Kronecker products with blocks of m1 × n1 (the truncated
    SVD of R), its factors stored in float16. Raises InvalidInputError where they overflow
    float16 or R's rank is below ``rank``."""
    m, n = matrix_shape(values.shape)
    factors = lowrank_prediction(rearrange(values.reshape(m, n), m1, n1), rank)
    return Prediction("separable+residual", {"blocks": [m1, n1], "rank": rank,
                                             "dtype": "float16"},
                      factors.sections, tuple(values.shape))


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
