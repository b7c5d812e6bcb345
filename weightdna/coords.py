"""φ of SPEC part B: every weight's place as four coordinates (x, y, z, w) in [−1, 1].

* x, y — row and column. A tensor is seen as a matrix of m rows and n columns: its first
  axis is the row, the remaining axes flattened in C order are the column (a conv kernel
  (out, in, kh, kw) has row = out channel, column = (in·kh + kh_index)·kw + kw_index;
  an embedding has row = token or position). A 1-D tensor (bias, norm) is a single row
  (m = 1) and a 0-d tensor a single point (m = n = 1).
* z — the layer: index l of the tensor in its stack (``encoder.layer.3.`` → 3) out of L,
  where L is one more than the stack's highest index; each stack has its own L. Tensors
  outside any stack have z = 0.
* w — the tensor type: the distinct kinds (the name with the layer index as ``*``) of
  the space, sorted as strings, k-th of K.

Each axis maps index i of m by ``(2i − (m − 1)) / (m − 1)`` (= 2i/(m−1) − 1, written so
that the only rounding is one correctly rounded division), and to 0 when m = 1. The
inverse ``rint((x + 1) · (m − 1) / 2)`` is exact in float64 for any m < 2⁴⁹, and from
float32 coordinates for m ≤ 2²³.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from weightdna.errors import InvalidInputError

if TYPE_CHECKING:  # coordinates need only NumPy at run time, not torch
    from weightdna.weights import ModelWeights, TensorInfo

Index = slice | ArrayLike | None


def axis_coordinate(index: ArrayLike, size: int) -> np.ndarray:
    """Coordinates in [−1, 1] (float64) of integer positions ``index`` on an axis of ``size``."""
    i = np.asarray(index, dtype=np.float64)
    if size <= 1:
        return np.zeros_like(i)
    return (2.0 * i - (size - 1)) / (size - 1)


def axis_index(coordinate: ArrayLike, size: int) -> np.ndarray:
    """The exact inverse of ``axis_coordinate``: int64 positions on an axis of ``size``."""
    x = np.asarray(coordinate, dtype=np.float64)
    if size <= 1:
        return np.zeros(x.shape, dtype=np.int64)
    return np.rint((x + 1.0) * ((size - 1) / 2.0)).astype(np.int64)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """Rows and columns a tensor of ``shape`` is laid out as (see the module docstring)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


class CoordinateSpace:
    """The layer counts and type-code table of a set of tensors; maps weights to φ and back."""

    def __init__(self, infos: Iterable[TensorInfo]) -> None:
        self.infos: dict[str, TensorInfo] = {i.name: i for i in infos}
        if not self.infos:
            raise InvalidInputError("a coordinate space needs at least one tensor.")
        self.kinds: tuple[str, ...] = tuple(sorted({i.kind for i in self.infos.values()}))
        self._code = {kind: k for k, kind in enumerate(self.kinds)}
        self.layers: dict[str, int] = {}  # stack → L
        for i in self.infos.values():
            if i.layer is not None:
                self.layers[i.stack] = max(self.layers.get(i.stack, 0), i.layer + 1)
        self._names = {(i.kind, i.layer): i.name for i in self.infos.values()}
        # Every tensor of a kind shares its stack (the kind's text contains it).
        self._stack = {i.kind: i.stack for i in self.infos.values()}

    @classmethod
    def from_weights(cls, weights: ModelWeights, include_buffers: bool = False) -> CoordinateSpace:
        """The space of a model's fittable tensors (all tensors with ``include_buffers``)."""
        return cls(weights.infos if include_buffers else weights.float_infos())

    def type_code(self, kind: str) -> float:
        """w of a tensor kind."""
        return float(axis_coordinate(self._code[kind], len(self.kinds)))

    def layer_coordinate(self, info: TensorInfo) -> float:
        """z of a tensor."""
        if info.layer is None:
            return 0.0
        return float(axis_coordinate(info.layer, self.layers[info.stack]))

    def type_table(self) -> list[tuple[str, float]]:
        """(kind, w) for every kind, in code order."""
        return [(kind, self.type_code(kind)) for kind in self.kinds]

    def coordinates(
        self, name: str, index: Index = None, dtype: DTypeLike = np.float64
    ) -> np.ndarray:
        """φ of tensor ``name`` at flat C-order positions ``index`` (a slice, an array, or
        None for all), as an (n, 4) array of x, y, z, w."""
        info = self._info(name)
        m, n = matrix_shape(info.shape)
        flat = _flat_positions(index, info.numel)
        rows, cols = np.divmod(flat, n) if n else (flat, flat)
        out = np.empty((flat.size, 4), dtype=dtype)
        out[:, 0] = axis_coordinate(rows, m)
        out[:, 1] = axis_coordinate(cols, n)
        out[:, 2] = self.layer_coordinate(info)
        out[:, 3] = self.type_code(info.kind)
        return out

    def locate(self, coords: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The exact inverse of φ over the space: tensor names (object array) and flat indices."""
        c = _check_coords(coords, columns=4)
        kind_idx = axis_index(c[:, 3], len(self.kinds))
        names = np.empty(len(c), dtype=object)
        flat = np.empty(len(c), dtype=np.int64)
        for k in np.unique(kind_idx):
            rows_k = np.flatnonzero(kind_idx == k)
            kind, stack = self.kinds[k], self._stack[self.kinds[k]]
            layers = axis_index(c[rows_k, 2], self.layers[stack] if stack is not None else 1)
            for layer in np.unique(layers):
                sel = rows_k[layers == layer]
                key = (kind, int(layer) if stack is not None else None)
                if key not in self._names:
                    raise InvalidInputError(f"no tensor of kind {kind!r} in layer {layer}.")
                name = self._names[key]
                names[sel] = name
                flat[sel] = coordinate_indices(c[sel], self.infos[name].shape)
        return names, flat

    def _info(self, name: str) -> TensorInfo:
        if name not in self.infos:
            raise InvalidInputError(
                f"{name!r} is not in this coordinate space (buffers and integer tensors "
                "have no coordinates)."
            )
        return self.infos[name]


def tensor_coordinates(
    info: TensorInfo, space: CoordinateSpace, index: Index = None, dtype: DTypeLike = np.float64
) -> np.ndarray:
    """φ of the weights of ``info`` at flat positions ``index`` (all by default), (n, 4)."""
    return space.coordinates(info.name, index, dtype)


def coordinate_indices(coords: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """Flat C-order indices into a tensor of ``shape`` from its (n, ≥2) coordinates.

    ``np.unravel_index(result, shape)`` gives the per-axis indices.
    """
    c = _check_coords(coords, columns=2)
    m, n = matrix_shape(tuple(shape))
    rows, cols = axis_index(c[:, 0], m), axis_index(c[:, 1], n)
    return rows * n + cols


def _flat_positions(index: Index, numel: int) -> np.ndarray:
    if index is None:
        return np.arange(numel, dtype=np.int64)
    if isinstance(index, slice):
        return np.arange(*index.indices(numel), dtype=np.int64)
    flat = np.asarray(index, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= numel):
        raise InvalidInputError(f"flat indices must lie in [0, {numel}).")
    return flat


def _check_coords(coords: ArrayLike, columns: int) -> np.ndarray:
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < columns:
        raise InvalidInputError(f"coordinates must be an (n, {columns}) array, got {c.shape}.")
    if c.size and not (np.isfinite(c).all() and np.abs(c).max() <= 1.0):
        raise InvalidInputError("coordinates must be finite and lie in [−1, 1].")
    return c
