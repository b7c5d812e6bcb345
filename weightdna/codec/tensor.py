"""One tensor to a header entry plus byte sections, and back: ``raw`` (exact),
``quantized`` (uniform steps or the trellis of `weightdna.codec.trellis`, entropy-coded),
a prediction (``lowrank+residual``, ``dna+residual``, ``separable+residual``,
``factored+residual``) plus its residual quantised the same way, or the coefficients of an
orthonormal transform of each row (``transform``) quantised so, as specified in
docs/FORMAT.md. A ``factored+residual`` prediction's factors are themselves tensors coded
here, ``quantized`` (`factored_prediction`, `decode_factored`)."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from weightdna.codec import adaptive, ans, factored, reference, trellis
from weightdna.codec.adaptive import max_symbols as adaptive_max_symbols
from weightdna.codec.dtypes import (
    BITS_DTYPES,
    DTYPES,
    FLOAT_NAMES,
    NAMES,
    as_torch,
    finite_mask,
    from_float64,
    itemsize,
    tensor_bytes,
    tensor_from_bytes,
    to_float64,
)
from weightdna.codec.entries import (
    COLUMNS_VERSION,
    DECODE_BLOCK_ELEMENTS,
    DEFAULT_MAX_MEMORY,
    GRID_VERSION,
    MAX_NAME_CHARS,
    NEW_IN_7,
    NEW_IN_8,
    ROW_STREAMS_KIND,
    ROW_STREAMS_VERSION,
    STATES_VERSION,
    TRELLIS_CODER_VERSION,
    TRELLIS_COLUMN_VERSION,
    VERSION,
    check_entry,
    decode_memory,
)
from weightdna.codec.entropy import (
    check_model_params,
    check_stream_descriptors,
    decode_streams,
    decode_symbols,
    encode_streams,
    encode_symbols,
)
from weightdna.codec.fields import is_finite_number, is_int
from weightdna.codec.gptq import GPTQPlan, gptq_symbols, prepare
from weightdna.codec.lossless import decode_lossless, encode_lossless
from weightdna.codec.prediction import DECODERS, Prediction, decode_dna, decode_lowrank
from weightdna.codec.quantize import (
    MAX_SYMBOL,
    as_rows,
    dequantize,
    quantize,
    row_blocks,
    row_shape,
    row_steps_for_bits,
    rows_per_block,
    scale,
)
from weightdna.codec.rowsteps import decode_grid, encode_k, on_grid
from weightdna.codec.separable import decode_separable
from weightdna.codec.transform import TRANSFORMS, check_transform, forward, inverse
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError, InvalidInputError

# Steps tried for a max-abs-error target E, as multiples of E, until every element is
# within E after the cast. 2E is the nominal step; the last, just under E, keeps
# |w − q·step| < E/2, which a round-to-nearest cast can at most double.
_ERROR_STEP_FACTORS = (
    2.0,
    2.0 * (1 - 2.0**-40),
    1.995,
    1.98,
    1.95,
    1.9,
    1.8,
    1.5,
    1.2,
    1.0 - 2.0**-20,
)


# Elements quantised and restored at a time: the float64 temporaries of one block, not of
# a whole tensor, set the encoder's and decoder's memory beside the tensor itself.
BLOCK_ELEMENTS = DECODE_BLOCK_ELEMENTS  # the reader's memory bound counts on it

# The header key under which each predicted representation keeps its predictor's params,
# and the sections the predictor owns.
PREDICTOR_KEY = {"lowrank+residual": "lowrank", "dna+residual": "network",
                 "separable+residual": "separable", "factored+residual": "factored",
                 "reference+residual": "reference"}
PREDICTOR_SECTIONS = {"lowrank+residual": {"factors"}, "dna+residual": {"network"},
                      "separable+residual": {"factors"}}
# A factored prediction's sections: each factor's own, named "<factor>.<section>"; a
# reference's: "order" when it stores one.
QUANTIZERS = ("scalar", "trellis")
# Row classes of the trellis's context models by tensor size: more classes pay for their
# models' tables only on larger tensors (one class below 2^16 elements, eight from 2^20).
TRELLIS_CLASS_ELEMENTS = 1 << 15


# From this many elements the trellis's contexts tell all 8 states apart (else only the
# two quantisers): 0.01 bits per weight saved against 6 more models to store per class.
TRELLIS_STATE_ELEMENTS = 1 << 16


# From this many elements the trellis searches with 64 states (format version 19: the
# trellis model's "states"), below it with NNCodec's 8: about 0.2 dB at equal size on
# MiniLM's tensors (BENCHMARKS.md, "More trellis states"), which a small tensor's
# "states" key in the header would cost it back.
TRELLIS_STATES = 64
TRELLIS_STATES_ELEMENTS = 1 << 14


def trellis_states(numel: int) -> int:
    """The trellis's number of states (`weightdna.codec.trellis.TABLES`) for this size."""
    return TRELLIS_STATES if numel >= TRELLIS_STATES_ELEMENTS else trellis.STATES


def trellis_groups(numel: int) -> int:
    """The trellis's state groups (`weightdna.codec.trellis.STATE_GROUPS`) for this size."""
    return trellis.STATES if numel >= TRELLIS_STATE_ELEMENTS else 2


def trellis_classes(numel: int, rows: int) -> int:
    """How many row classes the trellis's contexts use for a tensor of this size."""
    classes = 1
    while classes < trellis.MAX_CLASSES and numel >= TRELLIS_CLASS_ELEMENTS * 2 * classes \
            and rows >= 16 * 2 * classes:
        classes *= 2
    return classes


class _Trellis:
    """What the trellis search of one tensor needs beside the values: each row's class,
    the learnt rate table and the number of states (see `weightdna.codec.trellis`)."""

    def __init__(self, classes: np.ndarray, n_classes: int, groups: int,
                 bits: np.ndarray, states: int = trellis.STATES) -> None:
        self.classes, self.n_classes, self.groups, self.bits = classes, n_classes, groups, bits
        self.states = states

    def model(self) -> dict:
        """The model params' "states" (format version 19), none for NNCodec's 8."""
        return {} if self.states == trellis.STATES else {"states": self.states}


def _reconstruct(
    symbols: np.ndarray, steps: float | np.ndarray, dtype: str, base: np.ndarray | None = None,
    transform: str | None = None, columns: np.ndarray | None = None,
) -> torch.Tensor:
    """ŵ = cast(float64(q) × float64(step) [+ prediction]), or with a ``transform``
    cast(inverse(float64(q) × float64(step))): the one formula encoder and decoder share
    (q: the symbols, or the trellis's levels in units of the step). ``columns``: a
    ``quantized`` tensor's per-column factors (float64 of the stored float32), multiplied
    in before the cast: cast(float64(q) × float64(step) × float64(c_j))."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected by the callers
        values = dequantize(symbols, steps)
        if transform is not None:
            values = inverse(values, transform)
        if base is not None:
            values += base
        if columns is not None:
            values *= columns
        return from_float64(values, DTYPES[dtype])


# A quantized tensor's per-column factors (version 9) lie within 2^±16 of 1.
COLUMN_FACTOR_RANGE = (2.0**-16, 2.0**16)


def column_factors_fit(factors: np.ndarray) -> bool:
    """Whether every factor lies within COLUMN_FACTOR_RANGE (NaN does not)."""
    low, high = COLUMN_FACTOR_RANGE
    with np.errstate(invalid="ignore"):
        return bool(np.all((factors >= low) & (factors <= high)))


def with_columns(coded: tuple[dict, dict[str, bytes]], factors: np.ndarray
                 ) -> tuple[dict, dict[str, bytes]]:
    """A ``quantized`` tensor's coding (`encode_tensor`) with per-column ``factors`` the
    decoder multiplies its values by (format version 9): the caller coded the tensor
    divided by them, so that each column's error is weighed by 1/c_j² against the others.
    The factors are stored as float32 (finite, within COLUMN_FACTOR_RANGE); the entry's
    stats stay those of the tensor coded. Raises InvalidInputError for another
    representation, a tensor of fewer than 2 dimensions or factors that do not fit."""
    entry, sections = coded
    shape = tuple(entry["shape"])
    if entry["representation"] != "quantized" or len(shape) < 2:
        raise InvalidInputError(f"{entry['name']}: per-column factors apply to a quantized "
                                "tensor of 2 or more dimensions.")
    stored = np.asarray(factors, dtype="<f4").reshape(-1)
    if stored.size != row_shape(shape)[1] or not column_factors_fit(stored):
        raise InvalidInputError(f"{entry['name']}: give one factor per column "
                                f"({row_shape(shape)[1]}), each within [2^-16, 2^16].")
    entry = {**entry, "params": {**entry["params"], "columns": int(stored.size)}}
    return entry, {**sections, "columns": compress_bytes(stored.tobytes())}


def _raw_entry(name: str, t: torch.Tensor, fast: bool = False
               ) -> tuple[dict, dict[str, bytes]]:
    params, sections = encode_lossless(t, fast)
    entry = {
        "name": name,
        "dtype": NAMES[t.dtype],
        "shape": list(t.shape),
        "representation": "raw",
        "params": params,
        "stats": {"max_abs_error": 0.0, "snr_db": None, "mse": 0.0},
    }
    return entry, sections


def _repair_ties(
    values: np.ndarray,
    finite: np.ndarray,
    symbols: np.ndarray,
    restored: torch.Tensor,
    steps: float,
    target: float,
    dtype: str,
    base: np.ndarray | None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Move elements just over the error target to their other neighbouring symbol.

    With step 2E, a value near a midpoint is about E from both neighbours, and float
    rounding (of w/step, of q·step, of the cast) can push the nearer one a hair over E;
    the other one is often within. Shrinking the whole step for a few such elements
    would cost every element bits.
    """
    error = to_float64(restored) - values
    over = finite & (np.abs(error) > target)
    if not over.any():
        return symbols, restored
    moved = symbols.copy()
    moved[over] -= np.sign(error[over]).astype(np.int32)
    if np.abs(moved).max(initial=0) > MAX_SYMBOL:
        return symbols, restored
    again = _reconstruct(moved, steps, dtype, base)
    better = over & (np.abs(to_float64(again) - values) <= target)
    symbols = np.where(better, moved, symbols)
    return symbols, _reconstruct(symbols, steps, dtype, base)


def _steps_for_request(
    shape: tuple[int, ...], row_peaks: Callable[[], np.ndarray], step: float | np.ndarray | None,
    bits: int | None,
) -> float | np.ndarray:
    """The step(s) a ``step`` or ``bits`` request asks for; ``row_peaks`` gives max |residual|
    of each row (of `as_rows`), computed only for a ``bits`` request."""
    per_row = len(shape) >= 2
    rows = shape[0] if shape else 0
    if bits is not None:
        steps = row_steps_for_bits(row_peaks().reshape(-1, 1), bits)
        if not per_row:
            return float(steps.max(initial=1.0))
        array = steps
    else:
        array = np.asarray(step, dtype=np.float64)
    if array.ndim == 0:
        return float(array)
    if not per_row or array.shape != (rows,):
        raise InvalidInputError(
            f"per-row steps need a tensor of 2 or more dimensions and one step per row "
            f"({rows}); got {array.shape}."
        )
    # Per-row steps are stored on a grid (`weightdna.codec.rowsteps`): quantise with exactly
    # the steps the decoder reads. Steps beyond float32's range are refused where they are
    # used (`scale`), as before.
    with np.errstate(over="ignore"):
        array = array.astype(np.float32).astype(np.float64)
    if not (np.all(np.isfinite(array)) and np.all(array > 0)):
        return array
    # A ``bits`` request's steps are never finer than asked: max |row| stays within
    # ±(2^(bits−1) − 1) steps.
    return on_grid(array, up=bits is not None)[3]


def _nonfinite_indices(t: torch.Tensor) -> np.ndarray:
    """Flat indices of the NaN/±Inf elements, found a block at a time (a mask of a
    whole tensor holds temporaries several times the tensor's size)."""
    flat = t.reshape(-1)
    parts = [np.zeros(0, dtype=np.int64)]
    for start in range(0, flat.numel(), BLOCK_ELEMENTS):
        found = np.flatnonzero(~finite_mask(flat[start : start + BLOCK_ELEMENTS]))
        if found.size:
            parts.append(found + start)
    return np.concatenate(parts)


class _Overflow(Exception):
    """Restored values overflow the dtype at this step."""


def _row_blocks(rows: int, columns: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of about BLOCK_ELEMENTS elements each."""
    return row_blocks(rows, columns, BLOCK_ELEMENTS)


class _Base:
    """A prediction the residual is coded against, a block of `_row_blocks` at a time
    (float64). A low-rank one is computed block by block on every pass (`Prediction.
    row_blocks`: the values of the decoder's whole product), so that a large tensor's
    prediction is never held whole; a DNA is evaluated whole, as the decoder does, once."""

    def __init__(self, prediction: Prediction, rows: int, columns: int) -> None:
        self.prediction, self.rows = prediction, rows
        self.per_block = rows_per_block(columns, BLOCK_ELEMENTS)
        self.whole = (None if prediction.representation == "lowrank+residual"
                      else as_rows(prediction.values))

    def blocks(self) -> Iterator[np.ndarray]:
        """The prediction of each row block, in order."""
        if self.whole is None:
            return (block for _, block in self.prediction.row_blocks(self.per_block))
        return (self.whole[a : a + self.per_block] for a in range(0, self.rows, self.per_block))


def _blocks_with_base(rows: int, columns: int,
                      base: _Base | None) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Each of `_row_blocks` as (start, stop, its prediction or None)."""
    bounds = _row_blocks(rows, columns)
    if base is None:
        return ((start, stop, None) for start, stop in bounds)
    return ((start, stop, block)
            for (start, stop), block in zip(bounds, base.blocks(), strict=True))


class _Symbols:
    """A tensor's symbols as they are chosen, block by block, kept as streams of pieces of
    one buffer of the narrowest integer dtype that has held them so far (int8 first,
    widened with a copy when a block needs more): at usual rates a quarter of int32's
    memory, in one allocation made before the blocks' temporaries (small arrays kept
    between those, one per block, would leave the freed room in holes the heap cannot
    give back)."""

    def __init__(self, size: int, streams: int) -> None:
        self.buffer = np.empty(size, dtype=np.int8)
        self.used = 0
        self.count = streams
        self.bounds: list[np.ndarray] = []  # of each block's streams' pieces in the buffer
        self.sample: list[np.ndarray] = []  # the one coder's sample rows (`_Block.kept`)

    def add(self, pieces: list[np.ndarray]) -> None:
        """Append a block: each stream's next piece."""
        lo = min((int(p.min()) for p in pieces if p.size), default=0)
        hi = max((int(p.max()) for p in pieces if p.size), default=0)
        limits = np.iinfo(self.buffer.dtype)
        if lo < limits.min or hi > limits.max:
            wider = next(d for d in (np.int16, np.int32)
                         if np.iinfo(d).min <= lo and hi <= np.iinfo(d).max)
            self.buffer = self.buffer.astype(wider)
        self.bounds.append(self.used + np.cumsum([0] + [p.size for p in pieces]))
        for piece in pieces:
            self.buffer[self.used : self.used + piece.size] = piece.reshape(-1)
            self.used += piece.size

    def streams(self) -> Iterator[list[np.ndarray]]:
        """Each stream's pieces, in order (views into the buffer), one stream at a time."""
        for i in range(self.count):
            yield [self.buffer[bounds[i] : bounds[i + 1]] for bounds in self.bounds]

    def block(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Block i's pieces back to back (a view into the buffer) and each one's size."""
        bounds = self.bounds[i]
        return self.buffer[bounds[0] : bounds[-1]], np.diff(bounds)

    def counts(self, lo: int, width: int, group_of: Sequence[int] | None = None
               ) -> np.ndarray:
        """(streams × width) int64: how often each stream holds each symbol lo … (every
        symbol within), counted piece by piece in the buffer (no copy). ``group_of``: each
        block's group (0 …): (groups × streams × width), each group's own."""
        groups = 1 if group_of is None else max(group_of) + 1
        counts = np.zeros((groups, self.count, width), dtype=np.int64)
        for b, bounds in enumerate(self.bounds):
            group = counts[0 if group_of is None else group_of[b]]
            for i in range(self.count):
                if bounds[i + 1] > bounds[i]:
                    ans.add_counts(self.buffer[bounds[i] : bounds[i + 1]], lo, group[i])
        return counts if group_of is not None else counts[0]


def _block_values(source: torch.Tensor, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, stop) of the tensor as float64 (non-finite elements as 0) and the mask of
    finite ones: one block at a time, so a large tensor is never held in float64 whole."""
    values = to_float64(source[start:stop])
    finite = np.isfinite(values)
    values[~finite] = 0.0
    return values, finite


def _residual_blocks(source: torch.Tensor, base: _Base | None,
                     transform: str | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Each of `_row_blocks` as (start, stop, its values less the prediction, or their
    ``transform``'s coefficients, float64, non-finite elements as 0): a new array per
    block."""
    for start, stop, block_base in _blocks_with_base(*source.shape, base):
        values, _ = _block_values(source, start, stop)
        if block_base is not None:
            values -= block_base
        yield start, stop, values if transform is None else forward(values, transform)


def _code_blocks(
    source: torch.Tensor,
    steps: float | np.ndarray,
    deadzone: float,
    dtype: str,
    base: _Base | None,
    target: float | None,
    search: _Trellis | None = None,
    plan: GPTQPlan | None = None,
    zero_dead: bool = True,
    transform: str | None = None,
) -> tuple[_Symbols, dict, float | None] | None:
    """The symbols of every element (rows of `as_rows`), the error figures over the
    finite ones and the share of the non-zero weights restored as 0 (`_zeroed_share`),
    quantised and restored block by block. The symbols come as streams, each a
    list of pieces (`_Symbols`, with the one coder's sample rows where the trellis
    tensor is weighed on a sample: never a large tensor's symbols in int32 whole): one stream,
    non-finite elements' symbols 0, or with ``search`` the trellis's context streams
    (`weightdna.codec.trellis.split_streams`, with the contexts of the search's own walk).
    None when ``target`` (a max-abs-error) is missed; raises _Overflow when restored values
    overflow, InvalidInputError when the step is too small for the coder's alphabet.
    ``plan``: choose the symbols by GPTQ (`weightdna.codec.gptq`) instead of rounding each
    element."""
    rows, columns = source.shape
    symbols = _Symbols(rows * columns, 1 if search is None else search.groups * search.n_classes)
    figures = _Figures()
    nonzero = lost = 0
    stride = _coder_stride(rows * columns) if search is not None and TRELLIS_CODER else 0
    for block in _coded_blocks(source, steps, deadzone, dtype, base, target, search, plan,
                               zero_dead, transform, stride if stride > 1 else 0):
        figures.add(block)
        if target is not None and figures.max_error > target:
            return None
        nonzero, lost = nonzero + block.nonzero, lost + block.lost
        symbols.add(block.pieces)
        if block.kept is not None:
            symbols.sample.append(block.kept)
    stats = figures.stats()
    return symbols, stats, _zeroed_share(stats, nonzero, lost)


def _zeroed_share(stats: dict, nonzero: int, lost: int) -> float | None:
    """The share of a coded tensor's non-zero weights (``nonzero``, non-finite ones
    included) restored as 0 (``lost``; its blocks' `_Block` counts, summed), as the
    report gives it: None where it holds none or its figures (``stats``) show no error."""
    if not stats.get("mse") or not nonzero:
        return None
    return lost / nonzero


class _Block:
    """One row block as `_coded_blocks` codes it: its streams' pieces, its figures over
    the finite elements (Σ w², Σ (ŵ − w)², max |ŵ − w|, how many), and its share of
    zeroed weights (non-zero ones, finite or not; finite ones restored as 0). ``kept``:
    its symbols of the tensor's rows whose index is a multiple of the one coder's sample
    stride (`_coder_stride`), where they are kept, else None."""

    def __init__(self, pieces: list[np.ndarray], signal: float, noise: float,
                 max_error: float, count: int, nonzero: int, lost: int,
                 kept: np.ndarray | None = None) -> None:
        self.pieces, self.signal, self.noise = pieces, signal, noise
        self.max_error, self.count, self.nonzero, self.lost = max_error, count, nonzero, lost
        self.kept = kept


class _Figures:
    """A tensor's error figures, summed over its blocks in order (the same sums, in the
    same order, whether the blocks were coded in one process or in several)."""

    def __init__(self) -> None:
        self.signal = self.noise = self.max_error = 0.0
        self.count = 0

    def add(self, block: _Block) -> None:
        self.signal += block.signal
        self.noise += block.noise
        self.max_error = max(self.max_error, block.max_error)
        self.count += block.count

    def stats(self) -> dict:
        signal, noise = self.signal, self.noise
        snr = 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None
        return {"max_abs_error": self.max_error, "snr_db": snr,
                "mse": noise / max(self.count, 1)}


def _coded_blocks(
    source: torch.Tensor,
    steps: float | np.ndarray,
    deadzone: float,
    dtype: str,
    base: _Base | None,
    target: float | None,
    search: _Trellis | None = None,
    plan: GPTQPlan | None = None,
    zero_dead: bool = True,
    transform: str | None = None,
    stride: int = 0,
) -> Iterator[_Block]:
    """Each row block of ``source`` (rows × columns) coded, in order (see `_code_blocks`;
    ``steps`` and ``search`` are those of these rows). ``stride``: with ``search``, each
    block keeps its symbols of the rows whose index is a multiple of it (`_Block.kept`:
    the one coder's sample, taken on this walk); 0 for none."""
    rows, columns = source.shape
    count = 1 if search is None else search.groups * search.n_classes
    for start, stop, block_base in _blocks_with_base(rows, columns, base):
        values, finite = _block_values(source, start, stop)
        residual = values if block_base is None else values - block_base
        if transform is not None:
            residual = forward(residual, transform)
        block_steps = steps if not isinstance(steps, np.ndarray) else steps[start:stop]
        contexts = None
        if plan is not None:
            scale(residual, block_steps)  # the step and alphabet checks of `quantize`
            q = gptq_symbols(residual, plan, block_steps, deadzone, zero_dead=zero_dead)
            restored = _reconstruct(q, block_steps, dtype, block_base)
        elif search is None:
            q = quantize(residual, block_steps, deadzone)
            restored = _reconstruct(q, block_steps, dtype, block_base, transform)
        else:
            q, restored, contexts = _trellis_block(residual, block_steps, dtype, block_base,
                                                   search, start, stop, transform)
        if target is not None:
            q, restored = _repair_ties(
                values, finite, q, restored, block_steps, target, dtype, block_base
            )
        if not bool(finite_mask(restored)[finite].all()):
            raise _Overflow
        error = to_float64(restored)
        kept = values != 0
        nonzero = int(np.count_nonzero(kept)) + int(finite.size - np.count_nonzero(finite))
        lost = int(np.count_nonzero(kept & (error == 0)))  # non-finite values are 0 here
        error -= values
        error[~finite] = 0.0
        flat, error = values.reshape(-1), error.reshape(-1)
        signal = float(np.dot(flat, flat))
        noise = float(np.dot(error, error))
        max_error = float(np.abs(error, out=error).max(initial=0.0))
        if contexts is None:
            # Stored exactly on the side; the trellis keeps its own symbol there (its walk
            # needs it), a transform its coefficient (of the whole row).
            if transform is None:
                q[~finite] = 0
            pieces = [q]
        else:
            pieces = trellis.split_streams(q, contexts, count)
        kept = q[-start % stride::stride].copy() if stride and contexts is not None else None
        yield _Block(pieces, signal, noise, max_error, int(np.count_nonzero(finite)),
                     nonzero, lost, kept)


def _trellis_block(residual: np.ndarray, steps: float | np.ndarray, dtype: str,
                   base: np.ndarray | None, search: _Trellis, start: int, stop: int,
                   transform: str | None = None) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Rows [start, stop) by the trellis search: their symbols, restored values and
    contexts."""
    classes = search.classes[start:stop]
    symbols, levels, contexts = trellis.quantize_walked(scale(residual, steps), classes,
                                                        search.n_classes, search.groups,
                                                        search.bits, states=search.states)
    return symbols, _reconstruct(levels, steps, dtype, base, transform), contexts


def _prepare_trellis(source: torch.Tensor, steps: float | np.ndarray,
                     base: _Base | None, transform: str | None = None) -> _Trellis:
    """Row classes and the learnt rate table of a tensor about to be searched."""
    rows, columns = source.shape
    means, sample = _trellis_figures(source, steps, base, transform,
                                     trellis_stride(rows, columns))
    return _learnt_trellis(means, sample, rows, columns)


def trellis_stride(rows: int, columns: int) -> int:
    """Every how many rows the trellis's rate table is learnt on one."""
    return max(1, (rows * columns) // trellis.SAMPLE_ELEMENTS)


def _trellis_figures(source: torch.Tensor, steps: float | np.ndarray, base: _Base | None,
                     transform: str | None, stride: int, first: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The rows [first, first + len(source)) of a tensor about to be searched (``steps``
    theirs): each row's mean |x| (x: values / step) and the rows of x whose index is a
    multiple of ``stride``."""
    rows, columns = source.shape
    means = np.empty(rows)
    sample = [np.zeros((0, columns))]
    for start, stop, residual in _residual_blocks(source, base, transform):
        block_steps = steps if not isinstance(steps, np.ndarray) else steps[start:stop]
        scaled = scale(residual, block_steps)
        means[start:stop] = np.abs(scaled).mean(axis=1) if columns else 0.0
        sample.append(scaled[(-(first + start)) % stride :: stride].copy())  # not a view
    return means, np.concatenate(sample)


def _learnt_trellis(means: np.ndarray, picked: np.ndarray, rows: int,
                    columns: int) -> _Trellis:
    """Row classes from every row's mean |x| and the rate table learnt on the sampled rows
    (`_trellis_figures`) of a tensor of this shape."""
    n_classes = trellis_classes(rows * columns, rows)
    groups = trellis_groups(rows * columns)
    states = trellis_states(rows * columns)
    stride = trellis_stride(rows, columns)
    classes = trellis.class_of(means, n_classes)
    bits = trellis.learn_rates(picked, classes[::stride][: picked.shape[0]], n_classes, groups,
                               states=states)
    return _Trellis(classes, n_classes, groups, bits, states)


def encode_tensor(
    tensor: torch.Tensor | np.ndarray,
    *,
    name: str = "tensor",
    step: float | np.ndarray | None = None,
    bits: int | None = None,
    max_abs_error: float | None = None,
    lossless: bool = False,
    model: str = "auto",
    deadzone: float = 0.0,
    prediction: Prediction | None = None,
    quantizer: str = "scalar",
    hessian: np.ndarray | None = None,
    zero_dead: bool = True,
    transform: str | None = None,
    fast: bool = False,
    zeroed: bool = False,
) -> tuple[dict, dict[str, bytes]] | tuple[tuple[dict, dict[str, bytes]], float | None]:
    """Encode one tensor as a header entry and its byte sections (see docs/FORMAT.md).

    Exactly one request: ``lossless=True``; ``step`` (one, or one per row); ``bits``
    (per-row symmetric round-to-nearest with 2^bits levels, then entropy-coded); or
    ``max_abs_error`` (every finite element restored within it). Integer and bool tensors
    are always stored exactly, as is a tensor whose error target cannot be met by
    quantisation. NaN/±Inf elements of a lossy request are stored exactly on the side.
    ``model``: the symbol model, "auto" (smallest of laplace, gaussian, categorical) or one.
    ``deadzone``: round magnitudes down more often (see `quantize`); not with max_abs_error.
    ``prediction``: code the residual against it (`weightdna.codec.prediction`); the entry's
    representation is then the prediction's.
    ``quantizer``: "scalar" (round each element to a multiple of the step) or "trellis"
    (dependent quantisation, `weightdna.codec.trellis`: the step is the trellis's Δ; not
    with max_abs_error or a deadzone).
    ``hessian``: H = XᵀX/N of the inputs X the tensor's rows (of `as_rows`) are applied to;
    the symbols are then chosen by GPTQ (`weightdna.codec.gptq`) to keep ‖(W − Ŵ)X‖² small
    instead of rounded one by one (same grid, same format). Scalar quantizer with a step or
    bits request only. ``zero_dead``: GPTQ gives the weights of inputs H never sees symbol 0
    (they move no output on that data); False rounds them, for a target on the weights.
    ``transform``: quantise the coefficients of that orthonormal transform of each row
    (`weightdna.codec.transform`, "dct" or "dft") instead of the weights; a step or bits
    request only, on a tensor of 2 or more dimensions, without a prediction or Hessian.
    ``fast``: a float tensor stored exactly (of 64 elements or more) is coded in lanes
    (`weightdna.codec.lanes`, format version 10), several times faster than by its bit
    fields and a little larger; what ``weightdna compress --lossless`` takes.
    ``zeroed``: return (entry and sections, the share of the tensor's non-zero weights
    restored as 0), the share counted as the blocks were coded (what decoding the tensor
    would show; None where it holds none or is stored exactly).
    """
    coded, share = _encode_tensor(tensor, name, step, bits, max_abs_error, lossless, model,
                                  deadzone, prediction, quantizer, hessian, zero_dead,
                                  transform, fast)
    return (coded, share) if zeroed else coded


def _encode_tensor(tensor: torch.Tensor | np.ndarray, name: str, step: float | np.ndarray | None,
                   bits: int | None, max_abs_error: float | None, lossless: bool, model: str,
                   deadzone: float, prediction: Prediction | None, quantizer: str,
                   hessian: np.ndarray | None, zero_dead: bool, transform: str | None,
                   fast: bool) -> tuple[tuple[dict, dict[str, bytes]], float | None]:
    """`encode_tensor`'s work: (entry and sections, zeroed share)."""
    requests = [step is not None, bits is not None, max_abs_error is not None, bool(lossless)]
    if sum(requests) != 1:
        raise InvalidInputError("give exactly one of step, bits, max_abs_error or lossless=True.")
    if deadzone and max_abs_error is not None:
        raise InvalidInputError("a deadzone cannot be combined with a max_abs_error target.")
    if quantizer not in QUANTIZERS:
        raise InvalidInputError(f"unknown quantizer {quantizer!r}; use one of {QUANTIZERS}.")
    if quantizer == "trellis" and (max_abs_error is not None or deadzone):
        raise InvalidInputError("the trellis quantizer takes a step or bits, no deadzone.")
    if hessian is not None and (quantizer != "scalar" or max_abs_error is not None):
        raise InvalidInputError("a Hessian (GPTQ) takes the scalar quantizer and a step or "
                                "bits request.")
    t = as_torch(tensor)
    if transform is not None and (
            transform not in TRANSFORMS or max_abs_error is not None or prediction is not None
            or hessian is not None or t.dim() < 2):
        raise InvalidInputError(f"a transform is one of {TRANSFORMS}, for a step or bits "
                                "request on a tensor of 2 or more dimensions, without a "
                                "prediction or Hessian.")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("a tensor needs a non-empty name.")
    dtype = NAMES[t.dtype]
    if lossless or dtype not in FLOAT_NAMES:
        return _raw_entry(name, t, fast), None

    shape = tuple(t.shape)
    source = t.reshape(row_shape(shape))
    nonfinite_idx = _nonfinite_indices(t).astype("<u8")
    base = None
    if prediction is not None:
        if prediction.shape != shape:
            raise InvalidInputError(f"{name}: the prediction's shape differs from the tensor's.")
        base = _Base(prediction, *source.shape)
    plan = None
    if hessian is not None:
        hessian = np.asarray(hessian)
        columns = source.shape[1]
        if hessian.shape != (columns, columns):
            raise InvalidInputError(f"{name}: the Hessian is {hessian.shape}; the tensor's rows "
                                    f"need ({columns}, {columns}).")
        plan = prepare(hessian)

    def row_peaks() -> np.ndarray:
        peaks = [np.abs(residual).max(axis=1, initial=0.0)
                 for _, _, residual in _residual_blocks(source, base, transform)]
        return np.concatenate([np.zeros(0), *peaks])

    target = None
    if max_abs_error is not None:
        target = float(max_abs_error)
        if not (math.isfinite(target) and target > 0):
            raise InvalidInputError(f"max_abs_error must be finite and > 0, not {max_abs_error}.")
        candidates = [target * f for f in _ERROR_STEP_FACTORS]
    else:
        candidates = [_steps_for_request(shape, row_peaks, step, bits)]

    for steps in candidates:
        try:
            search = None
            if quantizer == "trellis":
                search = _prepare_trellis(source, steps, base, transform)
            coded = _code_blocks(source, steps, deadzone, dtype, base, target, search, plan,
                                 zero_dead, transform)
        except InvalidInputError:
            if target is not None:
                return _raw_entry(name, t), None  # the target is finer than the coder's alphabet
            raise
        except _Overflow:
            if target is None:
                raise InvalidInputError(
                    f"{name}: quantised values overflow {dtype} (|w| is close to its largest "
                    "value); use a smaller step or lossless storage."
                ) from None
            continue
        if coded is not None:
            symbols, stats, share = coded
            break
    else:
        return _raw_entry(name, t), None  # no step met the target after the cast: store exactly

    nonfinite = b""
    if nonfinite_idx.size:
        exact = tensor_bytes(t.reshape(-1)[torch.from_numpy(nonfinite_idx.astype(np.int64))])
        nonfinite = nonfinite_idx.tobytes() + exact
    return _coded_entry(name, dtype, shape, steps, search, symbols, stats, model,
                        int(nonfinite_idx.size), nonfinite, transform, prediction), share


def _coded_entry(name: str, dtype: str, shape: tuple[int, ...], steps: float | np.ndarray,
                 search: _Trellis | None, symbols: _Symbols | None, stats: dict,
                 model: str, nonfinite_count: int, nonfinite: bytes,
                 transform: str | None = None, prediction: Prediction | None = None,
                 coded: tuple[dict, dict[str, bytes]] | None = None
                 ) -> tuple[dict, dict[str, bytes]]:
    """A quantized tensor's entry and sections from its symbols (`_code_blocks`) and
    figures; ``nonfinite``: the indices ("<u8") of its NaN/±Inf elements, then their
    exact bytes. ``coded``: the symbols' model and sections, coded already (`row_streams`;
    ``symbols`` is then None)."""
    if coded is not None:
        model_params, sections = coded
    elif search is not None:
        model_params, sections = _encode_trellis(search, symbols, len(shape) >= 3)
    else:
        model_params, sections = encode_symbols(next(symbols.streams()), model)
    per_row = isinstance(steps, np.ndarray)
    params = {
        "step": None if per_row else float(steps),
        "rows": int(steps.shape[0]) if per_row else None,
        "model": model_params,
        "nonfinite": nonfinite_count,
    }
    if per_row:
        base, per_octave, k, values = on_grid(steps)
        if not np.array_equal(values, steps):  # steps not from `_steps_for_request`
            raise InvalidInputError(f"{name}: per-row steps must lie on the grid.")
        params["grid"] = {"base": base, "per_octave": per_octave}
        sections["steps"] = encode_k(k)
    if nonfinite_count:
        sections["nonfinite"] = compress_bytes(nonfinite)
    representation = "quantized"
    if transform is not None:
        representation = "transform"
        params = {"transform": transform, "coefficients": params}
    if prediction is not None:
        representation = prediction.representation
        params = {PREDICTOR_KEY[representation]: prediction.params, "residual": params}
        sections.update(prediction.sections)
    entry = {
        "name": name,
        "dtype": dtype,
        "shape": list(shape),
        "representation": representation,
        "params": params,
        "stats": stats,
    }
    return entry, sections


# Whether a trellis tensor's symbols are weighed under one adaptive coder too (format
# version 17, `weightdna.codec.trellis.coder_encode`): kept where its stream is smaller than
# the context streams' sections by at least CODER_BITS_PER_BIN bits for each of its bins.
# Its decoder takes 12–23 ns a bin (each waits on the one before), the streams' table
# decoder about 8 ns a symbol: a saving smaller than that would slow decoding more than it
# is worth (whole MiniLM at 4 bits per weight: 13M weights per CPU second with every
# smaller coder kept, against 27M without; BENCHMARKS.md, "One adaptive coder per trellis
# tensor").
TRELLIS_CODER = True
CODER_BITS_PER_BIN = 0.005
TRELLIS_CODER_KEYS = {"kind", "classes", "coder", "neighbours", "min", "max"}
# Format version 18: the coder's column context (``"column"``: `trellis.COLUMN_BUCKETS`),
# weighed while TRELLIS_COLUMN beside each variant without it, the smaller kept; absent,
# version 17's contexts (TRELLIS_COLUMN off: version 17's files, byte for byte).
TRELLIS_COLUMN = True
TRELLIS_COLUMN_KEY = "column"
# The coder's encode cost is paid only where it can pay: a tensor of more than
# CODER_WHOLE_ELEMENTS elements is first weighed on evenly spaced whole rows holding about
# CODER_SAMPLE_ELEMENTS (`_sample_wins`; the rows kept as the tensor is coded), and coded
# in full only where the sample says the coder wins by CODER_BITS_PER_BIN a bin (before
# either, a matrix may be ruled out by its streams' histograms alone: `_floor_loses`,
# CODER_FLOOR_SLACK below); the neighbours' contexts are weighed on kernels
# (three or more dimensions) only: on matrices they took 0–2 of MiniLM's 39 tensors
# (BENCHMARKS.md, "The trellis coder's encode cost, gated").
CODER_WHOLE_ELEMENTS = 1 << 16
CODER_SAMPLE_ELEMENTS = 1 << 15
# ... and by this share of the streams' bits besides (the sample's own noise: MiniLM's
# word embedding at 2 bits per weight, 0.4% smaller under the coder, below its floor,
# passed a sample without it and cost 3.5 CPU seconds to code in full).
CODER_SAMPLE_MARGIN = 0.002
# Before any walk, a matrix whose streams' histograms show that the coder cannot win
# (`_floor_loses`) is not weighed at all: the coder's ideal bits were at least its floor
# (`_coder_floor`) less 0.21% on every real matrix measured whose rows are not ordered by
# scale (MiniLM at 2, 3 and 4 bits per weight, Silero's, a slice of the 1.1B synthetic
# model), less 0.31% on synthetic ones (the halving of its counts, and the left
# neighbour's sign, can take it below): this slack leaves 1.6 times that (BENCHMARKS.md,
# "The trellis coder's gate: a floor from the streams' histograms").
CODER_FLOOR_SLACK = 0.005
# The floor is also taken over runs of consecutive rows (one per CODER_DRIFT_ELEMENTS, at
# most CODER_DRIFT_GROUPS: `_gate_floor`), each run's contexts learnt from its own symbols,
# plus what learning them costs an adaptive estimate. Where a tensor's statistics drift
# along its rows (the runs' floor under the whole's by CODER_DRIFT: the word embedding of
# a BERT model as the default codes it, its first thousand rows the unused tokens), the
# one coder follows the drift and comes under the whole tensor's floor (MiniLM at 3 bits
# per weight: 0.9888 of it), so that floor alone turned it down; such a tensor is coded
# whole wherever the runs' floor is under the coder's limit (the coder follows the drift
# within a run too: 0.9949 of the limit where the runs' floor said 0.9996). Any other
# matrix whose floor is under the limit by CODER_FLOOR_CLEAR of it is coded whole without
# its sample: spaced rows learn its 260 contexts on a few dozen rows and miss what the
# coder gains (MiniLM at 3 bits per weight: five matrices 0.6-0.95% smaller in full, all
# turned down by their samples; BENCHMARKS.md, "The trellis coder's gate judged on the
# whole tensor, and its decoder"). With 64 states six of MiniLM's FFN matrices are still
# turned down by their samples (0.7–1.2% smaller in full, their floors 0.1% under the
# limit to 0.04% over it); coding them whole (CODER_FLOOR_CLEAR −0.002) made the file
# 16 KB smaller and its judged cosine lower twice (the rate control spent the bytes
# elsewhere), and decoding 17% slower: not adopted (BENCHMARKS.md, "Per-state contexts
# in the trellis coder", branch s31-ctx).
CODER_DRIFT_ELEMENTS = 1 << 18
CODER_DRIFT_GROUPS = 64
CODER_DRIFT_COUNTS = 1 << 18  # the runs' histograms: 2 MB of int64 at most
CODER_DRIFT = 0.002
CODER_FLOOR_CLEAR = 0.003


def _encode_trellis(search: _Trellis, symbols: _Symbols,
                    kernel: bool = False) -> tuple[dict, dict[str, bytes]]:
    """The trellis's context streams (`_code_blocks`' symbols) coded: the model params and
    the sections. Non-finite positions keep the symbol the search chose (the walk needs
    it). While TRELLIS_CODER, the tensor's symbols under one adaptive coder instead where
    that is smaller (`_one_coder`; ``kernel``: the tensor has three or more dimensions)."""
    model, sections = code_symbols(search, symbols.streams())
    if TRELLIS_CODER:
        coded = (len(sections["symbols"]) + len(sections.get("histogram", b""))
                 + _descriptor_bytes(model))
        one = _one_coder(search, symbols, coded, kernel)
        if one is not None:
            model, sections = one
    if search.n_classes > 1:
        sections["classes"] = _classes_section(search)
    return model, sections


def _classes_section(search: _Trellis) -> bytes:
    return compress_bytes(search.classes.astype(np.uint8).tobytes())


def code_symbols(search: _Trellis | None, streams: Iterator[list[np.ndarray]],
                 model: str = "auto") -> tuple[dict, dict[str, bytes]]:
    """Symbols' streams (`_Symbols.streams`) entropy-coded: the model params and the
    sections ``symbols`` (and ``histogram``); the trellis's context streams each under its
    own model (its row classes not among the sections), else the one stream under
    ``model``. Never the one adaptive coder (`_one_coder`): a row block's coding
    (`row_streams`) keeps the context streams."""
    if search is None:
        return encode_symbols(next(streams), model)
    descriptors, sections = encode_streams(streams)
    return {"kind": "trellis", "classes": search.n_classes, "groups": search.groups,
            **search.model(), "streams": descriptors}, sections


def _coder_stride(total: int) -> int:
    """Every how many rows the one coder's gate weighs a trellis tensor of ``total``
    elements on one (`_sample_wins`): 1, the whole, up to CODER_WHOLE_ELEMENTS."""
    return 1 if total <= CODER_WHOLE_ELEMENTS else -(-total // CODER_SAMPLE_ELEMENTS)


def _one_coder(search: _Trellis, symbols: _Symbols, coded: int,
               kernel: bool = False) -> tuple[dict, dict[str, bytes]] | None:
    """The trellis tensor's symbols under one adaptive coder (its model params and
    ``symbols`` section), with (kernels only) or without the neighbours' contexts, and
    with or without the column context (while TRELLIS_COLUMN), whichever is smallest;
    None unless its stream is smaller than ``coded`` (the context streams' bytes) by
    CODER_BITS_PER_BIN bits a bin, or where a large tensor's sample (``symbols.sample``:
    its rows at `_coder_stride`, kept as they were coded) says it is not
    (`_sample_wins`). A matrix's floor (`_gate_floor`) is lowered by what the column
    context would take off, estimated on the sample (`_column_gain`), so that a tensor
    that wins only with it is weighed. The symbols are walked back into element order
    from the streams (`_WalkedBlocks`), a row block at a time, only for the whole
    tensor's coding."""
    total = symbols.used
    rows = search.classes.size
    if total == 0 or rows == 0:
        return None
    columns = total // rows
    lo, hi = (int(v) for v in ans.span(symbols.buffer[:total]))
    stride = _coder_stride(total)
    variants = tuple((caps, column)
                     for caps in (trellis.NEIGHBOURS if kernel else trellis.NEIGHBOURS[:1])
                     for column in (trellis.COLUMNS if TRELLIS_COLUMN else (1,)))
    counts = None
    clear = False
    sample = None
    if stride > 1 and symbols.sample:
        sample = (np.ascontiguousarray(np.concatenate(symbols.sample)),
                  np.ascontiguousarray(search.classes[::stride]))
    if not kernel and search.groups == trellis.STATES and _classes_interleaved(search):
        counts, floor, bins, drifts = _gate_floor(symbols, search, lo, hi)
        if TRELLIS_COLUMN and sample is not None:
            # what the column context would take off, from the sample
            floor -= max(0.0, _column_gain(*sample, search.n_classes, total, search.states))
        if _floor_loses(floor, bins, coded):
            return None
        # coded whole where the floor clears the limit by a margin, or where the
        # statistics drift along the rows and the runs' floor is under it at all: the
        # coder follows the drift within a run too, which no run's floor sees, and spaced
        # rows would not see it either (`CODER_FLOOR_CLEAR`)
        limit = _coder_limit(coded, bins)
        clear = floor / 8 + 8 <= limit * (1 - (0 if drifts else CODER_FLOOR_CLEAR))
    if stride > 1 and not clear:
        if sample is None:
            return None  # not kept: `_code_blocks` keeps it while TRELLIS_CODER
        if counts is None:
            counts = symbols.counts(lo, hi - lo + 1)
        if not _sample_wins(sample, search, counts, lo, coded, variants):
            return None
    blocks = _WalkedBlocks(symbols, search, rows, columns)
    plan = min((trellis.coder_plan(blocks, search.n_classes, columns, *caps, column,
                                   states=search.states)
                for caps, column in variants), key=lambda plan: plan.bits)
    limit = _coder_limit(coded, plan.bins)
    if plan.bits / 8 + 8 >= limit:
        return None
    data = trellis.coder_push(blocks, plan, search.n_classes)
    if len(data) >= limit:
        return None
    model = {"kind": "trellis", "classes": search.n_classes, **search.model(),
             "coder": "adaptive", "neighbours": list(plan.caps), "min": lo, "max": hi}
    if plan.column > 1:
        model[TRELLIS_COLUMN_KEY] = plan.column
    return model, {"symbols": data}


def _column_gain(rows: np.ndarray, classes: np.ndarray, n_classes: int,
                 total: int, states: int = trellis.STATES) -> float:
    """The bits the one coder's column context (`trellis.COLUMN_BUCKETS`) would take off
    a trellis tensor of 8 state contexts and ``total`` symbols, estimated on its sampled
    rows (``rows``, their ``classes``; the column sums taken over them): the empirical
    entropy of the ``sig`` and ``gt`` bins under the coder's contexts without and with the
    column's bucket (each with the Miller–Madow correction, ½·log2(e) bits a context with
    both outcomes seen: a split on few rows looks better than it is), the difference
    scaled to the whole tensor, less what learning the extra contexts costs an adaptive
    estimate on the whole (½·log2(n) + 1 bits a context of n bins). Negative where the
    split does not pay. Cheap: numpy over the sample, no coder walked."""
    magnitude = np.abs(rows.astype(np.int32))
    contexts = trellis.reconstruct(rows, classes, n_classes, trellis.STATES,
                                   states)[1].astype(np.int32)
    buckets = trellis.column_buckets(rows)  # int8
    size = (trellis.STATES + 2 * adaptive.GTX) * n_classes
    split = trellis.COLUMN_BUCKETS
    n = np.zeros(size * split)
    ones = np.zeros(size * split)

    def count(key: np.ndarray, bit: np.ndarray, bucket: np.ndarray) -> None:
        at = key * split + bucket
        n[:] += np.bincount(at, minlength=n.size)
        ones[:] += np.bincount(at[bit], minlength=n.size)

    count(contexts.ravel(), (magnitude > 0).ravel(), buckets.ravel())  # sig
    # gt j, by quantiser and class
    contexts = ((contexts // n_classes) & 1) * n_classes + contexts % n_classes
    base = trellis.STATES * n_classes
    for j in range(1, adaptive.GTX + 1):
        reached = magnitude >= j
        if not reached.any():
            break
        count(base + contexts[reached], magnitude[reached] > j, buckets[reached])
        base += 2 * n_classes
    scale = total / rows.size
    cost = []
    for n_key, ones_key in ((n.reshape(size, split).sum(axis=1),
                             ones.reshape(size, split).sum(axis=1)), (n, ones)):
        seen = n_key > 0
        n_key, ones_key = n_key[seen], ones_key[seen]
        both = float(np.count_nonzero((ones_key > 0) & (ones_key < n_key)))
        static = float(_bin_bits(ones_key, n_key).sum()) + both * 0.5 * math.log2(math.e)
        cost.append(static * scale + _learning_bits(n_key * scale))
    return cost[0] - cost[1]


def _bin_bits(ones: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Each context's empirical entropy of its bins, n·h(ones / n) bits (``ones`` 1s among
    its ``totals`` bins; 0 where it has none): what an adaptive estimate of its bins costs
    at least, as the gate's floors count it."""
    bits = np.zeros(np.shape(totals))
    with np.errstate(divide="ignore", invalid="ignore"):
        for part in (ones, totals - ones):
            bits -= np.where(part > 0, part * np.log2(part / totals), 0.0)
    return bits


def _learning_bits(totals: np.ndarray) -> float:
    """What a Krichevsky–Trofimov estimate pays at most to learn contexts of ``totals``
    bins each (all > 0): ½·log2(n) + 1 bits a context of n bins."""
    return float((0.5 * np.log2(totals) + 1.0).sum())


def _descriptor_bytes(model: dict) -> int:
    """What a trellis tensor's context streams' descriptors (`code_symbols`' model: a
    model, count and bytes for each of up to 64 streams) add to the file's header, which
    the one coder's few params do not: their compact JSON deflated on its own. MiniLM at 3
    bits per weight: 590–1,211 bytes a tensor, 0.2–1.1% of its symbols; the header's one
    deflate of every entry, with its preset dictionary, took 755 a tensor on average
    (BENCHMARKS.md, "The one coder weighed against the context streams with their
    header")."""
    text = json.dumps(model.get("streams", []), separators=(",", ":"))
    return len(zlib.compress(text.encode(), 9))


def _coder_limit(coded: int, bins: int) -> float:
    """The bytes a trellis tensor's one coder must come under to be kept: the context
    streams' ``coded`` bytes less CODER_BITS_PER_BIN bits for each of its ``bins``."""
    return coded - CODER_BITS_PER_BIN * bins / 8


def _coder_floor(counts: np.ndarray, lo: int, n_classes: int) -> tuple[float, int]:
    """(floor bits, bins) of a trellis tensor's symbols under the one coder without the
    neighbours (`trellis.NEIGHBOURS[0]`), from its 8 states' context streams' histograms
    (``counts``: (8 × n_classes) × width, stream state·n_classes + class, symbols lo …).
    The bins are exactly those the coder codes (`adaptive.forward_symbol`'s binarisation);
    the floor is the sum over the coder's contexts of each one's bins' empirical entropy
    (n·h(ones / n)), its bypass bins at 1 bit: what a Krichevsky–Trofimov estimate
    (the coder's, in integers) costs at least on those bins when it never halves its
    counts, and what the coder's ideal bits came to within 0.5% on every matrix measured
    (`CODER_FLOOR_SLACK`). The sign bins are priced without the left neighbour's sign
    (the coder's sign contexts have it): its gain is within the slack on matrices."""
    bits, bins, _ = _floor_parts(counts[np.newaxis], lo, n_classes)
    return float(bits[0]), int(bins[0])


def _floor_parts(counts: np.ndarray, lo: int, n_classes: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_coder_floor` of each of G sets of histograms at once (``counts``: G × (8 ×
    n_classes) × width): (floor bits, bins, and each context's bins: G × contexts)."""
    groups, _, width = counts.shape
    magnitude = np.abs(np.arange(lo, lo + width))
    per_state = counts.reshape(groups, trellis.STATES, n_classes, width)
    # by quantiser (state & 1), class: the sign and gt bins' contexts
    per_q = per_state.reshape(groups, trellis.STATES // 2, 2, n_classes, width).sum(axis=1)
    ones, totals = [per_state[..., magnitude > 0].sum(axis=-1)], [per_state.sum(axis=-1)]
    ones.append(per_q[..., np.arange(lo, lo + width) < 0].sum(axis=-1))
    totals.append(per_q[..., magnitude > 0].sum(axis=-1))
    for j in range(1, adaptive.GTX + 1):
        ones.append(per_q[..., magnitude > j].sum(axis=-1))
        totals.append(per_q[..., magnitude >= j].sum(axis=-1))
    # Exp-Golomb: n = ⌊log2(|k| − GTX)⌋ prefix 1s and a 0 (shared contexts), n bypass bins
    large = magnitude > adaptive.GTX
    lengths = np.floor(np.log2(magnitude[large] - adaptive.GTX)).astype(np.int64)
    spread = np.zeros((lengths.size, adaptive.MAX_PREFIX + 1), dtype=np.int64)
    spread[np.arange(lengths.size), lengths] = 1
    prefix = counts[..., large].sum(axis=1) @ spread  # G × (MAX_PREFIX + 1)
    at_least = np.cumsum(prefix[:, ::-1], axis=1)[:, ::-1]  # how many have n ≥ j
    ones.append(at_least[:, 1:adaptive.MAX_PREFIX + 1])
    totals.append(at_least[:, :adaptive.MAX_PREFIX])
    bypass = prefix @ np.arange(prefix.shape[1])
    ones = np.concatenate([o.reshape(groups, -1) for o in ones], axis=1).astype(np.float64)
    totals = np.concatenate([t.reshape(groups, -1) for t in totals], axis=1).astype(np.float64)
    bits = bypass.astype(np.float64) + _bin_bits(ones, totals).sum(axis=1)
    return bits, totals.sum(axis=1).astype(np.int64) + bypass, totals


def _drift_floor(counts: np.ndarray, lo: int, n_classes: int
                 ) -> tuple[float, float, float, int]:
    """(floor bits, the runs' floor bits, their learning bits, bins) of the one coder on a
    trellis tensor from its streams' histograms: G × those `_coder_floor` takes, one per
    run of consecutive rows (`_gate_floor`). The floor is `_coder_floor` of their sum;
    the runs' floor, the runs' floors summed; the learning bits, what a
    Krichevsky–Trofimov estimate pays at most to learn each context of each run,
    ½·log2(n) + 1 bits on its n bins. The runs' floor with its learning stays above the
    floor on a tensor whose statistics do not drift along its rows (the same decisions
    as the floor alone); where they drift it is what an estimate that followed them
    would pay (`CODER_DRIFT_GROUPS`)."""
    floor, bins = _coder_floor(counts.sum(axis=0), lo, n_classes)
    bits, _, totals = _floor_parts(counts, lo, n_classes)
    return floor, float(bits.sum()), _learning_bits(totals[totals > 0]), bins


def _classes_interleaved(search: _Trellis) -> bool:
    """Whether a trellis tensor's row classes change from row to row at least half as
    often as in rows of random order (1 − 1/classes of them): its rows are not ordered by
    scale. Where they are (a class's rows in runs, their scale drifting along them), the
    one coder's halving counts follow the drift and have come up to 5% under its floor
    (`_coder_floor`): the floor is trusted only here."""
    classes = search.classes
    if search.n_classes < 2 or classes.size < 2:
        return False
    changes = int(np.count_nonzero(classes[1:] != classes[:-1]))
    return changes >= (classes.size - 1) * (1 - 1 / search.n_classes) / 2


def _gate_floor(symbols: _Symbols, search: _Trellis, lo: int, hi: int
                ) -> tuple[np.ndarray, float, int, bool]:
    """(the streams' histograms, `_Symbols.counts`; the one coder's floor bits and bins,
    `_drift_floor`; whether its statistics drift along the rows: the runs' floor, learning
    included, under the whole's by CODER_DRIFT of it) of a trellis tensor of 8 state
    contexts, symbols lo … hi, in one counting pass: its rows in G runs, one per
    CODER_DRIFT_ELEMENTS elements, at most CODER_DRIFT_GROUPS and as many as keep the
    runs' histograms within CODER_DRIFT_COUNTS counts (each row block counted in the run
    where it starts)."""
    rows, width = search.classes.size, hi - lo + 1
    columns = symbols.used // rows
    groups = min(CODER_DRIFT_GROUPS, -(-symbols.used // CODER_DRIFT_ELEMENTS),
                 CODER_DRIFT_COUNTS // (symbols.count * width))
    ranges = _row_blocks(rows, columns)
    if groups < 2 or len(ranges) != len(symbols.bounds):  # one piece a block (`_code_blocks`)
        counts = symbols.counts(lo, width)
        return (counts, *_coder_floor(counts, lo, search.n_classes), False)
    group_of = [start * groups // rows for start, _ in ranges]
    counts = symbols.counts(lo, width, group_of)
    floor, runs, learning, bins = _drift_floor(counts, lo, search.n_classes)
    drifts = runs + learning < floor * (1 - CODER_DRIFT)
    return counts.sum(axis=0), min(floor, runs + learning), bins, drifts


def _floor_loses(floor: float, bins: int, coded: int) -> bool:
    """Whether the one coder without the neighbours cannot win on a trellis tensor of 8
    state contexts (``floor``, ``bins``: `_drift_floor` of its streams' histograms) by
    CODER_BITS_PER_BIN a bin: `_one_coder`'s final check with the coder's floor, less
    CODER_FLOOR_SLACK, in place of its ideal bits. Where it holds, the whole coding would
    be refused too (the same file), and neither the sample nor the whole is walked."""
    return floor * (1 - CODER_FLOOR_SLACK) / 8 + 8 >= _coder_limit(coded, bins)


def _sample_wins(sample: tuple[np.ndarray, np.ndarray], search: _Trellis,
                 counts: np.ndarray, lo: int, coded: int,
                 variants: tuple[tuple[tuple[int, int], int], ...]) -> bool:
    """Whether the one coder (its best of ``variants``) is smaller on the sampled rows
    (``sample``: their symbols and classes) than the context streams by
    CODER_BITS_PER_BIN bits a bin. The streams' side: each sampled symbol's ideal bits
    under its context's histogram over the whole tensor (``counts``: each stream's, of
    symbols lo …), scaled so that the whole tensor's ideal bits come to ``coded`` bytes
    (their tables and the coder's overhead shared out). Deterministic: the tensor's own
    symbols only."""
    rows, classes = sample
    costs = np.zeros(counts.shape)
    ideal = 0.0
    for c, stream in enumerate(counts):
        seen = stream > 0
        costs[c, seen] = -np.log2(stream[seen] / stream.sum())
        ideal += float(stream[seen] @ costs[c, seen])
    # The coder learns on the even sampled rows and is measured on the odd ones (its
    # counts from empty would charge the sample a learning cost the whole tensor shares
    # out over many more symbols).
    warm, measured = (rows[0::2], classes[0::2]), (rows[1::2], classes[1::2])
    _, contexts = trellis.reconstruct(*measured, search.n_classes, search.groups,
                                      search.states)
    priced = float(costs[contexts.astype(np.int64), measured[0].astype(np.int64) - lo].sum())
    streams = (8 * coded * priced / ideal if ideal > 0
               else 8 * coded * measured[0].size / counts.sum())
    best = math.inf
    for caps, column in variants:
        # one walk over both: the measured rows' bits and bins are the whole's less the
        # warm rows' (the same sums as a walk over the warm rows alone)
        plan = trellis.coder_plan([warm, measured], search.n_classes, rows.shape[1], *caps,
                                  column, states=search.states)
        bits = plan.bits - plan.costs[0]
        best = min(best, bits + CODER_BITS_PER_BIN * (plan.bins - plan.starts[1][3]))
    return best < streams * (1 - CODER_SAMPLE_MARGIN)


class _WalkedBlocks:
    """A trellis tensor's row blocks (`_row_blocks`) as (symbols int32, row classes),
    walked back into element order from its context streams (``symbols``: one piece of
    each per row block, `_Symbols.block`) when asked, in any order: block i from its own
    pieces (`trellis.StreamReader`, the decoder's walk), so that no more than a block is
    ever held in element order, and the streams are never copied."""

    def __init__(self, symbols: _Symbols, search: _Trellis, rows: int, columns: int) -> None:
        self.symbols, self.search, self.columns = symbols, search, columns
        self.ranges = _row_blocks(rows, columns)
        if len(symbols.bounds) != len(self.ranges):
            raise ValueError("the streams' pieces are not the row blocks'")  # `_code_blocks`'

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = self.ranges[i]
        search = self.search
        reader = trellis.StreamReader(*self.symbols.block(i), search.classes,
                                      search.n_classes, search.groups, search.states)
        block = reader.rows(start, stop, self.columns)
        if block is None or not reader.exhausted():
            raise ValueError("the streams' pieces are not the block's")  # the search's own
        return block[0], np.ascontiguousarray(search.classes[start:stop])


def row_streams(blocks: Sequence[tuple[int, dict, dict[str, bytes]]],
                search: _Trellis | None) -> tuple[dict, dict[str, bytes]]:
    """A tensor's symbol model and sections from its row blocks' codings, in order, each
    (rows, model params, sections) of `code_symbols` (format version 16): one block's as
    it is; several under the ``blocks`` model, each block's rows, model and byte lengths,
    their streams back to back in the sections ``symbols`` and ``histogram``. The
    trellis's row classes (``search``'s, of the whole tensor) beside them."""
    if len(blocks) == 1:
        model, sections = blocks[0][1], dict(blocks[0][2])
    else:
        described, symbols, histograms = [], [], []
        for rows, params, coded in blocks:
            histogram = coded.get("histogram", b"")
            described.append({"rows": int(rows), "model": params,
                              "bytes": len(coded["symbols"]), "histogram": len(histogram)})
            symbols.append(coded["symbols"])
            histograms.append(histogram)
        model = {"kind": ROW_STREAMS_KIND, "blocks": described}
        sections = {"symbols": b"".join(symbols)}
        if any(histograms):
            sections["histogram"] = b"".join(histograms)
    if search is not None and search.n_classes > 1:
        sections["classes"] = _classes_section(search)
    return model, sections


def _check_quantized_params(params: object, shape: tuple[int, ...], where: str,
                            columns: bool = False, version: int = VERSION) -> dict:
    """``columns``: whether these params may hold per-column factors (a ``quantized``
    entry's own, from version 9)."""
    keys = {"step", "rows", "model", "nonfinite"}
    if isinstance(params, dict) and "grid" in params:
        if version < GRID_VERSION or params.get("rows") is None:
            raise CorruptFileError(
                f"{where}: per-row steps on a grid need rows, and are new in version "
                f"{GRID_VERSION}; this file is version {version}.")
        keys = keys | {"grid"}
    if isinstance(params, dict) and "columns" in params:
        if not columns or version < COLUMNS_VERSION:
            raise CorruptFileError(
                f"{where}: per-column factors belong to a quantized entry's own params, "
                f"new in version {COLUMNS_VERSION}; this file is version {version}.")
        count = params["columns"]
        if not (len(shape) >= 2 and is_int(count) and count == row_shape(shape)[1]):
            raise CorruptFileError(f"{where}: columns must equal the tensor's columns "
                                   "(its elements over its first dimension), 2 or more "
                                   "dimensions.")
        keys = keys | {"columns"}
    if not isinstance(params, dict) or set(params) != keys:
        raise CorruptFileError(f"{where}: quantized params must have the keys {sorted(keys)}.")
    step, rows, nonfinite = params["step"], params["rows"], params["nonfinite"]
    if rows is None:
        if not (is_finite_number(step) and step > 0):
            raise CorruptFileError(f"{where}: the step must be a finite number > 0.")
    elif not (step is None and is_int(rows) and len(shape) >= 2 and rows == shape[0]):
        raise CorruptFileError(
            f"{where}: per-row steps need step null and rows equal to the first dimension."
        )
    numel = math.prod(shape)
    if not is_int(nonfinite):
        raise CorruptFileError(f"{where}: nonfinite must be an integer.")
    if not 0 <= nonfinite <= numel:
        raise CorruptFileError(f"{where}: nonfinite count {nonfinite} is out of range.")
    return params


def _check_trellis_model(model: dict, shape: tuple[int, ...], where: str,
                         version: int) -> dict:
    if "coder" in model:
        return _check_coder_model(model, shape, where, version)
    _check_states(model, where, version)
    if set(model) - {"states"} != {"kind", "classes", "groups", "streams"}:
        raise CorruptFileError(f"{where}: a trellis model has the keys classes, groups, kind, "
                               "streams (and from version 19 states).")
    classes, groups = model["classes"], model["groups"]
    if not (is_int(classes) and 1 <= classes <= trellis.MAX_CLASSES):
        raise CorruptFileError(f"{where}: trellis classes must be 1..{trellis.MAX_CLASSES}.")
    if not (is_int(groups) and groups in trellis.STATE_GROUPS):
        raise CorruptFileError(f"{where}: trellis groups must be one of {trellis.STATE_GROUPS}.")
    streams = check_stream_descriptors(model["streams"], groups * classes, where)
    if sum(d["count"] for d in streams) != math.prod(shape):
        raise CorruptFileError(f"{where}: the trellis streams do not hold one symbol per "
                               "element.")
    return model


def _check_row_streams(model: dict, shape: tuple[int, ...], where: str, version: int,
                       sections: dict[str, bytes]) -> dict:
    """A ``blocks`` model (format version 16, `row_streams`) checked against the tensor's
    shape and its sections' lengths before anything is decoded: its row blocks cover the
    rows in order, each block's model is a trellis one (all alike) or a scalar one (none
    of them trellis), and their byte lengths add up to the sections."""
    if version < ROW_STREAMS_VERSION:
        raise CorruptFileError(f"{where}: symbols coded by row blocks are new in version "
                               f"{ROW_STREAMS_VERSION}; this file is version {version}.")
    if set(model) != {"kind", "blocks"} or not isinstance(model["blocks"], list):
        raise CorruptFileError(f"{where}: a blocks model has the keys blocks (a list) and "
                               "kind.")
    rows, columns = row_shape(shape)
    blocks = model["blocks"]
    if len(blocks) > max(rows, 1):
        raise CorruptFileError(f"{where}: {len(blocks)} row blocks for {rows} rows.")
    keys = {"rows", "model", "bytes", "histogram"}
    covered = total = histograms = 0
    kinds = set()
    for block in blocks:
        if not isinstance(block, dict) or set(block) != keys:
            raise CorruptFileError(f"{where}: a row block has the keys {sorted(keys)}.")
        if not all(is_int(block[k]) and block[k] >= 0 for k in ("rows", "bytes", "histogram")) \
                or block["rows"] == 0:
            raise CorruptFileError(f"{where}: a row block's rows must be an integer ≥ 1 and "
                                   "its lengths integers ≥ 0.")
        covered += block["rows"]
        if covered > rows:
            raise CorruptFileError(f"{where}: the row blocks hold more than {rows} rows.")
        inner = block["model"]
        kind = inner.get("kind") if isinstance(inner, dict) else None
        if kind == "trellis":
            if "coder" in inner:  # a row block's symbols keep the context streams
                raise CorruptFileError(f"{where}: a row block's model is never under the "
                                       "one adaptive coder.")
            _check_trellis_model(inner, (block["rows"], columns), where, version)
            streams = inner["streams"]
            if block["bytes"] != sum(d["bytes"] for d in streams) or \
                    block["histogram"] != sum(d["histogram"] for d in streams):
                raise CorruptFileError(f"{where}: a row block's lengths are not its "
                                       "streams'.")
            kinds.add((kind, inner["classes"], inner["groups"],
                       inner.get("states", trellis.STATES)))
        else:
            check_model_params(inner, where)
            if (kind == "categorical") != (block["histogram"] > 0) and columns:
                raise CorruptFileError(f"{where}: only a categorical row block has a "
                                       "histogram.")
            kinds.add("scalar")
        total, histograms = total + block["bytes"], histograms + block["histogram"]
    if covered != rows:
        raise CorruptFileError(f"{where}: the row blocks hold {covered} rows, not {rows}.")
    if len(kinds) > 1:
        raise CorruptFileError(f"{where}: the row blocks' models must be all trellis ones "
                               "of the same classes, groups and states, or none.")
    if total != len(sections.get("symbols", b"")) or \
            histograms != len(sections.get("histogram", b"")):
        raise CorruptFileError(f"{where}: the row blocks' lengths do not add up to the "
                               "sections.")
    return model


def _row_stream_parts(model: dict, sections: dict[str, bytes], rows: int, where: str
                      ) -> Iterator[tuple[int, int, dict, dict[str, bytes], np.ndarray | None]]:
    """Each row block of a checked ``blocks`` model: its first row, its last + 1, its
    model, its sections (slices of the tensor's) and, for a trellis, its rows' classes."""
    first = model["blocks"][0]["model"] if model["blocks"] else {}
    classes = _row_classes(first, sections, rows, where) if first.get("kind") == "trellis" \
        else None
    data, histograms = sections["symbols"], sections.get("histogram", b"")
    start = at = hat = 0
    for block in model["blocks"]:
        parts = {"symbols": data[at : at + block["bytes"]]}
        if block["histogram"]:
            parts["histogram"] = histograms[hat : hat + block["histogram"]]
        stop = start + block["rows"]
        yield (start, stop, block["model"], parts,
               None if classes is None else classes[start:stop])
        start, at, hat = stop, at + block["bytes"], hat + block["histogram"]


def _check_states(model: dict, where: str, version: int) -> None:
    """A trellis model's "states" (format version 19), if it has one: a table's number of
    states other than NNCodec's 8 (absent for it)."""
    if "states" not in model:
        return
    if version < STATES_VERSION:
        raise CorruptFileError(f"{where}: a trellis of more states is new in version "
                               f"{STATES_VERSION}; this file is version {version}.")
    allowed = [c for c in trellis.STATE_COUNTS if c != trellis.STATES]
    if not (is_int(model["states"]) and model["states"] in allowed):
        raise CorruptFileError(f"{where}: a trellis model's states must be one of {allowed} "
                               f"(absent for {trellis.STATES}).")


def _check_coder_model(model: dict, shape: tuple[int, ...], where: str, version: int) -> dict:
    """A trellis model under one adaptive coder (format version 17; its column context,
    version 18)."""
    if version < TRELLIS_CODER_VERSION:
        raise CorruptFileError(f"{where}: one adaptive coder per trellis tensor is new in "
                               f"version {TRELLIS_CODER_VERSION}; this file is version "
                               f"{version}.")
    _check_states(model, where, version)
    if (set(model) - {TRELLIS_COLUMN_KEY, "states"} != TRELLIS_CODER_KEYS
            or model["coder"] != "adaptive"):
        raise CorruptFileError(f"{where}: a trellis model under one coder has the keys "
                               f"{sorted(TRELLIS_CODER_KEYS)} (and optionally "
                               f"{TRELLIS_COLUMN_KEY!r}), coder adaptive.")
    if TRELLIS_COLUMN_KEY in model:
        if version < TRELLIS_COLUMN_VERSION:
            raise CorruptFileError(f"{where}: the trellis coder's column context is new in "
                                   f"version {TRELLIS_COLUMN_VERSION}; this file is version "
                                   f"{version}.")
        column = model[TRELLIS_COLUMN_KEY]
        if not (is_int(column) and column in trellis.COLUMNS[1:]):
            raise CorruptFileError(f"{where}: the coder's column context must be one of "
                                   f"{list(trellis.COLUMNS[1:])} buckets.")
    classes, lo, hi = model["classes"], model["min"], model["max"]
    if not (is_int(classes) and 1 <= classes <= trellis.MAX_CLASSES):
        raise CorruptFileError(f"{where}: trellis classes must be 1..{trellis.MAX_CLASSES}.")
    caps = model["neighbours"]
    if not (isinstance(caps, list) and all(is_int(c) for c in caps)
            and tuple(caps) in trellis.NEIGHBOURS):
        raise CorruptFileError(f"{where}: the coder's neighbours must be one of "
                               f"{[list(c) for c in trellis.NEIGHBOURS]}.")
    if not (is_int(lo) and is_int(hi) and -MAX_SYMBOL <= lo <= hi <= MAX_SYMBOL):
        raise CorruptFileError(f"{where}: the coder's range must be integers "
                               f"{-MAX_SYMBOL} ≤ min ≤ max ≤ {MAX_SYMBOL}.")
    if math.prod(shape) == 0:
        raise CorruptFileError(f"{where}: an empty tensor has no coder.")
    return model


def _row_classes(model: dict, sections: dict[str, bytes], rows: int,
                 where: str) -> np.ndarray:
    """A trellis-coded tensor's row classes (its ``classes`` section, uint8), checked."""
    n_classes = model["classes"]
    classes = np.zeros(rows, dtype=np.uint8)
    if n_classes > 1:
        classes = np.frombuffer(decompress_bytes(sections["classes"], rows, where), np.uint8)
        if classes.size != rows or int(classes.max(initial=0)) >= n_classes:
            raise CorruptFileError(f"{where}: the row classes must be {rows} values "
                                   f"below {n_classes}.")
    return classes


def _trellis_reader(model: dict, sections: dict[str, bytes], rows: int, where: str,
                    version: int, columns: int = 0, classes: np.ndarray | None = None
                    ) -> trellis.StreamReader | trellis.CoderReader:
    """The reader of a trellis-coded tensor's context streams, decoded, or of its one
    coder (``columns``: the tensor's); ``classes``: its rows' classes (a row block's),
    else read from its sections."""
    n_classes = model["classes"]
    if classes is None:
        classes = _row_classes(model, sections, rows, where)
    if "coder" in model:
        data = sections["symbols"]
        if len(data) % 4 or len(data) < 8 or data[-4:] == bytes(4):
            raise CorruptFileError(f"{where}: the coded symbols are not whole words ending "
                                   "in a coder's state.")
        count = rows * columns
        limit = adaptive_max_symbols(len(data))
        if count > limit:  # work bounded by the bytes: refused unread
            raise CorruptFileError(f"{where}: {len(data)} bytes of coded symbols cannot hold "
                                   f"{count} symbols under the adaptive coder (at most "
                                   f"{limit}).")
        return trellis.CoderReader(data, model["min"], model["max"], classes, n_classes,
                                   columns, tuple(model["neighbours"]),
                                   model.get(TRELLIS_COLUMN_KEY, 1),
                                   model.get("states", trellis.STATES))
    coded = {k: sections[k] for k in ("symbols", "histogram") if k in sections}
    joined = decode_streams(model["streams"], coded, where, version)
    return trellis.StreamReader(joined, [d["count"] for d in model["streams"]], classes,
                                n_classes, model["groups"], model.get("states", trellis.STATES))


def _trellis_rows(model: dict, sections: dict[str, bytes], rows: int, columns: int,
                  where: str, version: int, classes: np.ndarray | None = None
                  ) -> Iterator[np.ndarray]:
    """The levels (units of the step) of each row block, decoded from the context streams."""
    reader = _trellis_reader(model, sections, rows, where, version, columns, classes)
    for start, stop in _row_blocks(rows, columns):
        block = reader.rows(start, stop, columns)
        if block is None:
            raise CorruptFileError(_SHORT[type(reader)].format(where=where))
        yield block[1]
    if not reader.exhausted():
        raise CorruptFileError(_OVER[type(reader)].format(where=where))


def _restore_trellis_float32(model: dict, sections: dict[str, bytes], rows: int,
                             columns: int, where: str, version: int,
                             steps: float | np.ndarray, base: np.ndarray | None,
                             out: np.ndarray, classes: np.ndarray | None = None) -> None:
    """A float32 tensor's trellis-coded rows restored into ``out`` (rows × columns), a row
    block at a time: float32(float64(level) × float64(step) [+ prediction])."""
    reader = _trellis_reader(model, sections, rows, where, version, columns, classes)
    per_row = (np.ascontiguousarray(steps, dtype=np.float64) if isinstance(steps, np.ndarray)
               else np.full(rows, float(steps)))
    for start, stop in _row_blocks(rows, columns):
        block = None if base is None else np.ascontiguousarray(base[start:stop],
                                                                dtype=np.float64)
        if not reader.restore_float32(start, stop, per_row[start:stop], block,
                                      out[start:stop]):
            raise CorruptFileError(_SHORT[type(reader)].format(where=where))
    if not reader.exhausted():
        raise CorruptFileError(_OVER[type(reader)].format(where=where))


# A corrupt trellis tensor's messages by its reader: a symbol that cannot be had, and a
# stream not ended after the last one.
_SHORT = {trellis.StreamReader: "{where}: a trellis stream ends before its symbols do.",
          trellis.CoderReader: "{where}: a symbol of the trellis's coder lies outside its "
                               "range."}
_OVER = {trellis.StreamReader: "{where}: the trellis streams hold symbols left over.",
         trellis.CoderReader: "{where}: the trellis's coded symbols do not end after exactly "
                              "the tensor's symbols."}


def _restore_rows(model: dict, sections: dict[str, bytes], rows: int, columns: int,
                  where: str, version: int, steps: float | np.ndarray,
                  base: np.ndarray | None, dtype: str, transform: str | None,
                  factors: np.ndarray | None, out: torch.Tensor,
                  classes: np.ndarray | None = None) -> None:
    """The ``rows`` × ``columns`` that one symbol coding (``model``, ``sections``) holds,
    restored into ``out`` (``steps``, ``base`` and ``classes`` theirs), a row block at a
    time."""
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind == "trellis" and dtype == "float32" and transform is None and factors is None:
        # Merged, restored and cast in one compiled pass: the same formula as _reconstruct.
        _restore_trellis_float32(model, sections, rows, columns, where, version, steps, base,
                                 out.numpy(), classes)
        return
    if kind == "trellis":
        units = _trellis_rows(model, sections, rows, columns, where, version, classes)
    else:
        coded = {k: sections[k] for k in ("symbols", "histogram") if k in sections}
        symbols = decode_symbols(model, coded, rows * columns, where,
                                 version).reshape(rows, columns)
        units = (symbols[start:stop] for start, stop in _row_blocks(rows, columns))
    for (start, stop), block in zip(_row_blocks(rows, columns), units, strict=True):
        out[start:stop] = _reconstruct(  # float64 one block at a time
            block,
            steps[start:stop] if isinstance(steps, np.ndarray) else steps,
            dtype,
            None if base is None else base[start:stop],
            transform,
            factors,
        )


def decode_tensor(
    entry: dict, sections: dict[str, bytes], max_memory: int = DEFAULT_MAX_MEMORY,
    version: int = VERSION, referenced: torch.Tensor | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Restore the tensor an entry and its sections describe, in its exact dtype and shape;
    ``version``: the format version of the file they come from (how its streams end).
    ``referenced``: a ``reference+residual`` entry's referenced tensor, decoded (the
    caller resolves and checks the reference: `weightdna.codec.container.DnaFile.tensor`).
    ``block``: of a tensor whose symbols are coded by row blocks (`row_streams`), only the
    rows of that block (all of its first dimension's other axes), the same values as
    those rows of the whole tensor's decoding.

    Everything is validated first; a malformed entry or section raises CorruptFileError.
    """
    name, dtype, shape = check_entry(entry, max_memory)
    where = f"tensor {name!r}"
    if not isinstance(sections, dict) or not all(
        isinstance(k, str) and isinstance(v, bytes | bytearray | memoryview)
        for k, v in sections.items()
    ):
        raise CorruptFileError(f"{where}: sections must map names to bytes.")
    sections = {k: v if isinstance(v, bytes) else bytes(v) for k, v in sections.items()}
    params = entry["params"]
    if entry["representation"] == "raw":
        return decode_lossless(params, sections, dtype, shape, where, version)

    if dtype not in FLOAT_NAMES:
        raise CorruptFileError(f"{where}: a {dtype} tensor cannot be quantized.")
    representation = entry["representation"]
    for new, first in ((NEW_IN_7, 7), (NEW_IN_8, 8)):
        if representation in new and version < first:
            raise CorruptFileError(f"{where}: the {representation} representation is new in "
                                   f"version {first}; this file is version {version}.")
    owned: set[str] = set()
    transform = None
    if representation == "transform":
        transform, params = check_transform(params, shape, where)
    elif representation != "quantized":
        key = PREDICTOR_KEY[representation]
        if not isinstance(params, dict) or set(params) != {key, "residual"}:
            raise CorruptFileError(
                f"{where}: {representation} params must have the keys {sorted([key, 'residual'])}."
            )
        if representation == "factored+residual":
            owned = {k for k in sections if k.split(".", 1)[0] in factored.FACTORS and "." in k}
        elif representation == "reference+residual":
            owned = {"order"} if isinstance(params.get("reference"), dict) and \
                params["reference"].get("rows") is True else set()
        else:
            owned = PREDICTOR_SECTIONS[representation]
        if not owned <= set(sections):
            raise CorruptFileError(f"{where}: missing section(s) {sorted(owned - set(sections))}.")
        predictor, params = params[key], params["residual"]
    params = _check_quantized_params(params, shape, where,
                                     representation == "quantized", version)
    numel = math.prod(shape)
    expected = {"symbols"} | owned
    model = params["model"]
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind == ROW_STREAMS_KIND:
        model = _check_row_streams(model, shape, where, version, sections)
        if any(b["histogram"] for b in model["blocks"]):
            expected.add("histogram")
        first = model["blocks"][0]["model"] if model["blocks"] else {}
        if first.get("kind") == "trellis" and first["classes"] > 1:
            expected.add("classes")
    elif kind == "trellis":
        model = _check_trellis_model(model, shape, where, version)
        if any(d["histogram"] for d in model.get("streams", ())):
            expected.add("histogram")
        if model["classes"] > 1:
            expected.add("classes")
    elif kind == "categorical":
        expected.add("histogram")
    if params["rows"] is not None:
        expected.add("steps")
    if params["nonfinite"]:
        expected.add("nonfinite")
    if "columns" in params:
        expected.add("columns")
    if set(sections) != expected:
        raise CorruptFileError(
            f"{where}: sections {sorted(sections)} do not match the params "
            f"(expected {sorted(expected)})."
        )

    steps: float | np.ndarray
    if "grid" in params:
        steps = decode_grid(params["grid"], sections["steps"], params["rows"], where)
    elif params["rows"] is not None:
        if len(sections["steps"]) != 4 * params["rows"]:
            raise CorruptFileError(
                f"{where}: the steps section holds {len(sections['steps'])} bytes, "
                f"expected {4 * params['rows']}."
            )
        with np.errstate(invalid="ignore"):  # a signalling NaN warns; it is refused below
            steps = np.frombuffer(sections["steps"], dtype="<f4").astype(np.float64)
        if not (np.all(np.isfinite(steps)) and np.all(steps > 0)):
            raise CorruptFileError(f"{where}: every per-row step must be finite and > 0.")
    else:
        steps = float(params["step"])
    factors = None
    if "columns" in params:
        # The factors' float32 and float64 beside what `decode_memory` bounds.
        if decode_memory(representation, dtype, shape) + 12 * params["columns"] > max_memory:
            raise CorruptFileError(f"{where}: decoding with {params['columns']} column "
                                   f"factors needs more than the memory limit of "
                                   f"{max_memory}; raise max_memory if the file is trusted.")
        raw = decompress_bytes(sections["columns"], 4 * params["columns"], where)
        factors = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        if not column_factors_fit(factors):
            raise CorruptFileError(f"{where}: every per-column factor must lie within "
                                   "[2^-16, 2^16].")

    base = None
    if representation == "lowrank+residual":
        base = decode_lowrank(predictor, sections, shape, where)
    elif representation == "dna+residual":
        spare = max_memory - decode_memory(representation, dtype, shape)
        base = decode_dna(predictor, sections, shape, where, spare)
    elif representation == "separable+residual":
        base = decode_separable(predictor, sections, shape, where)
    elif representation == "factored+residual":
        base = decode_factored(predictor, {k: sections[k] for k in owned}, shape, name,
                               max_memory, version)
    elif representation == "reference+residual":
        base = decode_reference(predictor, {k: sections[k] for k in owned}, shape, where,
                                referenced)
    base = None if base is None else as_rows(base)
    rows, columns = row_shape(shape)
    first, last = 0, rows  # the rows restored
    if block is not None:
        bounds = row_blocks_of(entry)
        if not 0 <= block < len(bounds) or kind != ROW_STREAMS_KIND:
            raise CorruptFileError(f"{where}: no row block {block} to decode.")
        first, last = bounds[block]
    restored = torch.empty((last - first, columns), dtype=DTYPES[dtype])
    if kind == ROW_STREAMS_KIND:  # each row block from its own streams
        for start, stop, block_model, parts, classes in _row_stream_parts(model, sections,
                                                                          rows, where):
            if start < first or stop > last:
                continue
            _restore_rows(block_model, parts, stop - start, columns, where, version,
                          steps[start:stop] if isinstance(steps, np.ndarray) else steps,
                          None if base is None else base[start:stop], dtype, transform,
                          factors, restored[start - first : stop - first], classes)
    else:
        _restore_rows(model, sections, rows, columns, where, version, steps, base, dtype,
                      transform, factors, restored)
    restored = restored.reshape((last - first, *shape[1:]) if block is not None else shape)
    if _nonfinite_indices(restored).size:
        raise CorruptFileError(f"{where}: steps × symbols overflow {dtype}.")

    count = params["nonfinite"]
    if count:
        width = itemsize(dtype)
        raw = decompress_bytes(sections["nonfinite"], count * (8 + width), where)
        indices = np.frombuffer(raw[: 8 * count], dtype="<u8")
        if indices[-1] >= numel or (count > 1 and not np.all(indices[1:] > indices[:-1])):
            raise CorruptFileError(
                f"{where}: non-finite indices must be strictly increasing and < {numel}."
            )
        exact = tensor_from_bytes(raw[8 * count :], dtype, (count,))
        if bool(finite_mask(exact).any()):
            raise CorruptFileError(f"{where}: the non-finite section holds finite values.")
        bits = BITS_DTYPES[width]
        flat = restored.reshape(-1).view(bits)
        if block is not None:  # those within the block's rows
            inside = (indices >= first * columns) & (indices < last * columns)
            indices, exact = indices[inside] - first * columns, exact[torch.from_numpy(inside)]
        flat[torch.from_numpy(indices.astype(np.int64))] = exact.view(bits)
    return restored


def row_blocks_of(entry: object) -> list[tuple[int, int]]:
    """[start, stop) rows of each row block of a tensor entry whose symbols are coded by
    row blocks (``"kind": "blocks"``, as written: not checked here; `decode_tensor`
    checks them), in order; [] for any other entry."""
    params = entry.get("params") if isinstance(entry, dict) else None
    if isinstance(params, dict) and isinstance(params.get("coefficients"), dict):
        params = params["coefficients"]
    model = params.get("model") if isinstance(params, dict) else None
    if not isinstance(model, dict) or model.get("kind") != ROW_STREAMS_KIND or \
            not isinstance(model.get("blocks"), list):
        return []
    bounds, start = [], 0
    for block in model["blocks"]:
        rows = block.get("rows") if isinstance(block, dict) else None
        if not is_int(rows) or rows < 1:
            return []
        bounds.append((start, start + rows))
        start += rows
    return bounds


def _factor_name(name: str, key: str) -> str:
    """A factor's name as a tensor (its messages): the kernel's name (cut to fit) and the
    factor's."""
    return f"{name[: MAX_NAME_CHARS - 2]}.{key}"


def factored_prediction(values: np.ndarray, factors: dict[str, np.ndarray], step: float,
                        name: str = "tensor") -> Prediction:
    """The ``factored+residual`` prediction of a kernel (`weightdna.codec.factored`):
    its float ``factors`` each coded here as a float32 ``quantized`` tensor at its step for
    the residual step ``step`` (`factored.factor_steps`), and the values the decoder
    computes from them. Raises InvalidInputError where a factor's step is too small for
    the coder's alphabet or overflows."""
    shape = tuple(values.shape)
    params: dict = {"ranks": [factors["u"].shape[1], factors["q"].shape[2]
                              if "q" in factors else 0], "q": None}
    sections: dict[str, bytes] = {}
    for key, factor_step in factored.factor_steps(factors, step).items():
        entry, coded = encode_tensor(factors[key].astype(np.float32),
                                     name=_factor_name(name, key), step=factor_step)
        if entry["representation"] != "quantized":
            raise InvalidInputError(f"{name}: factor {key} cannot be quantized.")
        params[key] = entry["params"]
        sections.update({f"{key}.{part}": data for part, data in coded.items()})
    return Prediction("factored+residual", params, sections, shape)


def _factored_values(prediction: Prediction) -> np.ndarray:
    """What the decoder computes for a ``factored+residual`` prediction."""
    return decode_factored(prediction.params, prediction.sections, prediction.shape,
                           "a factored+residual prediction")


DECODERS["factored+residual"] = _factored_values


def decode_factored(params: object, sections: dict[str, bytes], shape: tuple[int, ...],
                    name: str, max_memory: int = DEFAULT_MAX_MEMORY,
                    version: int = VERSION) -> np.ndarray:
    """The prediction a ``factored+residual`` entry's factors give (validated first: each
    factor decoded as the ``quantized`` float32 tensor of its shape, with its own
    sections, exactly those named "<factor>.<section>")."""
    where = f"tensor {name!r}"
    _, _, checked = factored.check_factored(params, shape, where)
    unknown = {k for k in sections if k.split(".", 1)[0] not in checked}
    if unknown:
        raise CorruptFileError(f"{where}: sections {sorted(unknown)} belong to no factor.")
    decoded = {}
    for key, (sub, factor_shape) in checked.items():
        entry = {"name": _factor_name(name, key), "dtype": "float32",
                 "shape": list(factor_shape), "representation": "quantized", "params": sub}
        own = {k.split(".", 1)[1]: v for k, v in sections.items()
               if k.split(".", 1)[0] == key}
        decoded[key] = to_float64(decode_tensor(entry, own, max_memory, version))
    return factored.values(decoded, shape)


def reference_prediction(name: str, referenced: torch.Tensor, scale: float,
                         order: np.ndarray | None) -> Prediction:
    """The ``reference+residual`` prediction of a tensor from the tensor called ``name``
    (`weightdna.codec.reference`): ``referenced`` as the decoder will restore it."""
    sections = {} if order is None else {"order": reference.order_bytes(order)}
    params = {"name": name, "scale": float(scale), "rows": order is not None}
    return Prediction("reference+residual", params, sections, tuple(referenced.shape),
                      referenced)


def _reference_values(prediction: Prediction) -> np.ndarray:
    """What the decoder computes for a ``reference+residual`` prediction."""
    return decode_reference(prediction.params, prediction.sections, prediction.shape,
                            "a reference+residual prediction", prediction.referenced)


DECODERS["reference+residual"] = _reference_values


def decode_reference(params: object, sections: dict[str, bytes], shape: tuple[int, ...],
                     where: str, referenced: torch.Tensor | None) -> np.ndarray:
    """The prediction of a ``reference+residual`` entry (validated first) from its
    referenced tensor, decoded."""
    _, scale, rows = reference.check_reference(params, where)
    if referenced is None:
        raise CorruptFileError(f"{where}: a reference is decoded with the tensor it refers "
                               "to; read the file with read_dna_file.")
    if tuple(referenced.shape) != tuple(shape) or not referenced.is_floating_point():
        raise CorruptFileError(f"{where}: the referenced tensor must be a floating-point "
                               f"tensor of the same shape {list(shape)}.")
    order = None
    if rows:
        if set(sections) != {"order"}:
            raise CorruptFileError(f"{where}: a reference with rows needs its order section.")
        order = reference.decode_order(sections["order"], row_shape(shape)[0], where)
    elif sections:
        raise CorruptFileError(f"{where}: a reference without rows has no order section.")
    return reference.values(to_float64(referenced), scale, order)
