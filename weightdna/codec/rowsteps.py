"""Per-row steps on a grid (format version `entries.GRID_VERSION`): row r's step is
base · 2^(k_r / G), base a float32, G steps per octave, k_r an integer. The encoder rounds
the steps it wants to the grid before it quantises (G = 64: at most 2^(1/128) − 1 ≈ 0.54%
off), so the decoder reads exactly the steps the encoder used; the k_r cost a few bits a
row where float32 steps cost 32 (docs/FORMAT.md, "Per-row steps").

The grid's values are computed exactly alike everywhere: 2^(j/G) for 0 ≤ j < G is the
float64 just below it, found with integer arithmetic (no libm), then one IEEE
multiplication by base and an exact power of two (`grid_values`).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError, InvalidInputError

PER_OCTAVE = 64
MIN_PER_OCTAVE = 1
# k_r is stored as an int16: |k_r| ≤ MAX_OCTAVES · G must fit.
MAX_PER_OCTAVE = 112
# A step must lie where a float32 step could (finite, > 0): [2^-149, the largest float32].
SMALLEST_STEP = 2.0**-149
LARGEST_STEP = float(np.finfo(np.float32).max)
# |k_r / G| beyond this cannot bring a float32 base into that range (2^128 / 2^-149).
MAX_OCTAVES = 280
_MANTISSA_BITS = 52
# The grid's params as the header's JSON holds them: ', "grid": {"base": 0.36501935124397278,
# "per_octave": 64}' is 56 characters.
GRID_PARAMS_BYTES = 56


@cache
def _fractions(per_octave: int) -> np.ndarray:
    """2^(j / per_octave) for j < per_octave, each the float64 at or just below it: the
    integer x with x^G ≤ 2^(j + 52·G) < (x + 1)^G, over 2^52 (exact)."""
    out = np.empty(per_octave, dtype=np.float64)
    for j in range(per_octave):
        target = 1 << (j + _MANTISSA_BITS * per_octave)
        x = int(2.0 ** (j / per_octave) * (1 << _MANTISSA_BITS))  # within a few units
        while x**per_octave > target:
            x -= 1
        while (x + 1) ** per_octave <= target:
            x += 1
        out[j] = x / (1 << _MANTISSA_BITS)  # x < 2^53: exact
    out.flags.writeable = False
    return out


def grid_values(base: float, per_octave: int, k: np.ndarray) -> np.ndarray:
    """The steps base · 2^(k / per_octave) (float64), the same bits on every machine."""
    k = np.asarray(k)
    octaves, within = np.divmod(k, per_octave)  # floor division, in k's integer type
    steps = _fractions(per_octave)[within]
    np.multiply(steps, float(base), out=steps)
    return np.ldexp(steps, octaves.astype(np.int32), out=steps)


def on_grid(steps: np.ndarray, per_octave: int = PER_OCTAVE, up: bool = False
            ) -> tuple[float, int, np.ndarray, np.ndarray]:
    """Per-row ``steps`` (finite, > 0) rounded to the nearest point of the grid (``up``:
    the nearest at or above each, but within a part in 10⁹): (base, G, k, the grid's
    steps). base is the float32 of the middle step (sorted), so that rounding again
    changes nothing. Raises InvalidInputError where a step lies outside float32's
    positive range."""
    steps = np.asarray(steps, dtype=np.float64)
    if not (np.all(steps >= SMALLEST_STEP) and np.all(steps <= LARGEST_STEP)):
        raise InvalidInputError(f"per-row steps must lie within [{SMALLEST_STEP:.3g}, "
                                f"{LARGEST_STEP:.4g}] (float32's positive range).")
    base = float(np.float32(np.sort(steps)[steps.size // 2])) if steps.size else 1.0
    if base == 0.0:  # the middle step below float32's smallest subnormal
        base = SMALLEST_STEP
    points = per_octave * np.log2(steps / base)
    k = (np.ceil(points - 1e-9) if up else np.rint(points)).astype(np.int64)
    values = grid_values(base, per_octave, k)
    # The grid's ends: a step rounded past float32's range comes back in by one point.
    k = np.where(values > LARGEST_STEP, k - 1, np.where(values < SMALLEST_STEP, k + 1, k))
    return base, per_octave, k, grid_values(base, per_octave, k)


def encode_k(k: np.ndarray) -> bytes:
    """The ``steps`` section of grid steps: each k_r less the row before's (the first's
    less 0) modulo 2^16, as little-endian int16, zstd-compressed. (Smallest of the ways
    measured on MiniLM's per-row steps at 3 bits per weight: its word embedding's 30522
    rows in 407 bytes, where int32 differences take 442 and int16 values 612; a 384-row
    layer's in about 550, where int16 values split into byte planes take about 480:
    BENCHMARKS.md, "Per-row steps on a grid".)"""
    k = np.asarray(k, dtype=np.int64)
    return compress_bytes(np.diff(k, prepend=0).astype("<i2").tobytes())


def stored_bits(scale: np.ndarray) -> float:
    """What per-row steps proportional to ``scale`` (> 0) cost in the file, in bits: their
    ``steps`` section (`encode_k`) and the grid's params in the header (GRID_PARAMS_BYTES,
    before the header's zlib). The rate control's price of per-row steps."""
    scale = np.asarray(scale, dtype=np.float64)
    relative = np.clip(scale / float(scale.max(initial=1.0)), SMALLEST_STEP, 1.0)
    return 8.0 * (len(encode_k(on_grid(relative)[2])) + GRID_PARAMS_BYTES)


def decode_grid(params: object, section: bytes, rows: int, where: str) -> np.ndarray:
    """The per-row steps of a ``grid`` param and its ``steps`` section, checked: G within
    [MIN_PER_OCTAVE, MAX_PER_OCTAVE], base a positive float32, one k per row, every step
    within float32's positive range. Raises CorruptFileError."""
    if not (isinstance(params, dict) and set(params) == {"base", "per_octave"}):
        raise CorruptFileError(f"{where}: grid must have the keys base, per_octave.")
    base, per_octave = params["base"], params["per_octave"]
    if not (type(per_octave) is int and MIN_PER_OCTAVE <= per_octave <= MAX_PER_OCTAVE):
        raise CorruptFileError(f"{where}: the grid's per_octave must be an integer from "
                               f"{MIN_PER_OCTAVE} to {MAX_PER_OCTAVE}.")
    if not (type(base) is float and SMALLEST_STEP <= base <= LARGEST_STEP
            and float(np.float32(base)) == base):
        raise CorruptFileError(f"{where}: the grid's base must be a positive float32.")
    raw = decompress_bytes(section, 2 * rows, where)  # exactly one k a row
    k = np.cumsum(np.frombuffer(raw, dtype="<i2"), dtype=np.int16)  # wraps modulo 2^16
    limit = MAX_OCTAVES * per_octave
    if k.size and not (int(k.min()) >= -limit and int(k.max()) <= limit):
        raise CorruptFileError(f"{where}: a per-row step lies off the grid's range.")
    steps = grid_values(base, per_octave, k)
    if not (np.all(steps >= SMALLEST_STEP) and np.all(steps <= LARGEST_STEP)):
        raise CorruptFileError(f"{where}: every per-row step must lie within float32's "
                               "positive range.")
    return steps
