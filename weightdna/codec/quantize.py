"""Uniform scalar quantisation: one step for a tensor, or one per row (output channel)."""

from __future__ import annotations

import math

import numpy as np

from weightdna.errors import InvalidInputError

# Symbols are coded as int32 and the entropy models need the alphabet below 2^24 (each
# symbol gets a nonzero probability at 24-bit precision); 2^19 either side leaves margin.
MAX_SYMBOL = (1 << 19) - 1


def row_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, rest) of a tensor of ``shape``: the first axis is the output channel."""
    return (shape[0], math.prod(shape[1:])) if shape else (1, 1)


def as_rows(values: np.ndarray) -> np.ndarray:
    """View a tensor as (rows, rest): the first axis is the output channel."""
    return values.reshape(row_shape(values.shape))


def row_steps_for_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Per-row steps of symmetric round-to-nearest with ``bits`` bits: max|row| ↦ 2^(b−1)−1.

    A row of zeros (or a 0-d/1-d tensor's single row) still gets a positive step.
    """
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise InvalidInputError(f"bits must be an integer from 2 to 16, not {bits!r}.")
    rows = as_rows(values)
    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(rows.shape[0])
    steps = peak / float((1 << (bits - 1)) - 1)
    return np.where(steps > 0, steps, 1.0).astype(np.float64)


def rows_per_block(columns: int, elements: int) -> int:
    """Rows of ``columns`` elements in a block of about ``elements`` (one at least)."""
    return max(1, elements // max(columns, 1))


def row_blocks(rows: int, columns: int, elements: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of whole rows, about ``elements`` elements each (one row at
    least): how a large tensor is worked through without whole-tensor temporaries."""
    per_block = rows_per_block(columns, elements)
    return [(a, min(a + per_block, rows)) for a in range(0, rows, per_block)]


def scale(values: np.ndarray, step: float | np.ndarray) -> np.ndarray:
    """``values / step`` as (rows, rest) float64 (``step``: a scalar or one per row),
    checked: every step finite and positive, and |values / step| within the alphabet."""
    rows = as_rows(values).astype(np.float64, copy=False)
    steps = np.asarray(step, dtype=np.float64)
    if not np.all(np.isfinite(steps)) or not np.all(steps > 0):
        raise InvalidInputError("every quantisation step must be finite and positive.")
    scaled = rows / (steps.reshape(-1, 1) if steps.ndim == 1 else steps)
    peak = max(float(scaled.max()), -float(scaled.min())) if scaled.size else 0.0
    if not peak <= MAX_SYMBOL:
        raise InvalidInputError(
            f"the step is too small for this tensor's range (|w|/step reaches {peak:.3g}, "
            f"the limit is {MAX_SYMBOL}); use a larger step or store it losslessly."
        )
    return scaled


def round_symbols(scaled: np.ndarray, deadzone: float = 0.0,
                  out: np.ndarray | None = None) -> np.ndarray:
    """The integers (as float64) ``scaled`` rounds to: nearest, or with a deadzone θ
    magnitudes rounded down unless their fraction exceeds 0.5 + θ. ``out``: round in place
    (nearest rounding only)."""
    if deadzone:
        return np.sign(scaled) * np.floor(np.abs(scaled) + (0.5 - deadzone))
    return np.rint(scaled, out=out)


def quantize(values: np.ndarray, step: float | np.ndarray, deadzone: float = 0.0) -> np.ndarray:
    """Integer symbols of ``values / step`` (``step``: a scalar or one per row).

    ``deadzone`` θ in [0, 0.5) rounds magnitudes down unless their fraction exceeds 0.5 + θ:
    fewer nonzero symbols, fewer bits, at low rates less distortion per bit (the decoder is
    unchanged; the error bound grows from step/2 to step·(0.5 + θ)). 0 is nearest rounding.
    """
    if not 0.0 <= deadzone < 0.5:
        raise InvalidInputError(f"deadzone must lie in [0, 0.5), not {deadzone}.")
    scaled = scale(values, step)
    # In place: a large tensor's peak memory.
    symbols = round_symbols(scaled, deadzone, out=scaled)
    return symbols.astype(np.int32).reshape(values.shape)


def dequantize(symbols: np.ndarray, step: float | np.ndarray) -> np.ndarray:
    """``symbols × step`` in float64, the step per row when ``step`` is an array."""
    rows = as_rows(symbols).astype(np.float64)
    steps = np.asarray(step, dtype=np.float64)
    rows *= steps.reshape(-1, 1) if steps.ndim == 1 else steps  # in place: decoding memory
    return rows.reshape(symbols.shape)
