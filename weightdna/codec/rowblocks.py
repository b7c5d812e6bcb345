"""Large tensors as row blocks: tasks that each read, measure, analyse or code some of a
tensor's rows, so that no task holds a large tensor whole and memory follows the work in
flight (`weightdna.codec.workers`), not the model's largest tensor.

A tensor of ROW_BLOCK_WEIGHTS elements or more (an LLM's embedding or LM head, a 70B
model's MLP matrices) coded to a whole-model rate–distortion target is split into tasks
of about TASK_WEIGHTS elements of whole rows (`row_ranges`), each a whole number of the
encoder's blocks (`weightdna.codec.tensor.BLOCK_ELEMENTS`). Each task reads its rows alone
(`ModelWeights.rows`: from a safetensors file, only their bytes). The format is
unchanged, and so are the symbols and figures: the quantiser and the trellis search work
row by row, the trellis's row classes and rate table come from each row's mean |x| and
from rows sampled at one stride over the tensor (gathered here from the tasks), and the
per-block figures are summed in the encoder's order. The symbols are the whole tensor's
coding's (`weightdna.codec.tensor.encode_tensor` at the same step); their entropy coding
is each task's own (format version 16, `weightdna.codec.tensor.row_streams`): a task
codes its rows' symbols under models fitted to them and returns the coded bytes, and this
process only lays the tasks' streams end to end (`coded`), so that it codes nothing while
the workers work, and a reader can decode each block apart. A tensor of one task is coded
as a whole tensor is, byte for byte.

What differs from a whole tensor's analysis: the candidates of a row-blocked tensor are
plain quantisation and the row transforms (`weightdna.codec.transform`); a low-rank, DNA
or Kronecker prediction needs the whole matrix and is not tried. Its Σ w² is summed a
task at a time (the same figure to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from weightdna.codec.dtypes import FLOAT_NAMES, NAMES, tensor_bytes
from weightdna.codec.quantize import row_shape, rows_per_block
from weightdna.codec.ratecontrol import (
    SAMPLE_ELEMENTS,
    Candidate,
    Choice,
    TensorCandidates,
    _finite_values,
    _row_figures,
)
from weightdna.codec.tensor import (
    BLOCK_ELEMENTS,
    _Block,
    _coded_blocks,
    _coded_entry,
    _Figures,
    _learnt_trellis,
    _nonfinite_indices,
    _Overflow,
    _steps_for_request,
    _Symbols,
    _Trellis,
    _trellis_figures,
    _zeroed_share,
    code_symbols,
    row_streams,
    trellis_stride,
)
from weightdna.codec.transform import TRANSFORMS, compacting_transforms, forward
from weightdna.errors import InvalidInputError
from weightdna.weights import ModelWeights, TensorInfo

# From this many elements (2^24: 64 MiB of float32) a tensor is coded as row blocks; below,
# as one task. The largest whole-tensor task's float64 analysis then stays near 128 MiB.
ROW_BLOCK_WEIGHTS = 1 << 24
# Elements of whole rows per row-block task (2^23: 32 MiB of float32).
TASK_WEIGHTS = 1 << 23
MEASURE_BLOCK = 1 << 20  # elements per block when measuring a tensor's peak and energy

Coded = tuple[dict, dict[str, bytes]]


def splits(info: TensorInfo, threshold: int | None = None) -> bool:
    """Whether ``info``'s tensor is coded as row blocks (floating point, 2 or more
    dimensions, ``threshold`` (ROW_BLOCK_WEIGHTS) elements or more)."""
    limit = ROW_BLOCK_WEIGHTS if threshold is None else threshold
    return info.dtype in FLOAT_NAMES and len(info.shape) >= 2 and info.numel >= limit


def row_ranges(info: TensorInfo, task_weights: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) rows of each task: about ``task_weights`` (TASK_WEIGHTS) elements, a
    whole number of the encoder's blocks (so that each block's figures are the ones a
    whole-tensor coding sums)."""
    rows, columns = row_shape(tuple(info.shape))
    per_block = rows_per_block(columns, BLOCK_ELEMENTS)
    per_task = max(1, (task_weights or TASK_WEIGHTS) // max(per_block * columns, 1)) * per_block
    return [(a, min(a + per_task, rows)) for a in range(0, rows, per_task)]


def _rows(weights: ModelWeights, name: str, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) as (rows, columns) of `as_rows`."""
    t = weights.rows(name, start, stop)
    return t.reshape(t.shape[0], -1)


def _sample_stride(info: TensorInfo) -> int:
    """`weightdna.codec.ratecontrol._sampled_rows`'s row stride for this tensor."""
    return max(1, math.ceil(info.numel / SAMPLE_ELEMENTS))


# The tasks (`weightdna.codec.workers`): each reads its own rows of ``weights``.

def measure(tensor: torch.Tensor) -> tuple[float, float]:
    """max |w| and Σ w² over the finite elements."""
    peak = signal = 0.0
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), MEASURE_BLOCK):  # float64 a block at a time
        values = flat[start : start + MEASURE_BLOCK].to(torch.float64)
        values = values[torch.from_numpy(np.isfinite(values.numpy()))]
        if values.numel():
            values.abs_()  # in place (|w|·|w| is w·w exactly): one temporary fewer
            peak = max(peak, float(values.max()))
            signal += float(torch.dot(values, values))
    return peak, signal


def _measure_rows(weights: ModelWeights, name: str, start: int, stop: int
                  ) -> tuple[float, float]:
    """max |w| and Σ w² of rows [start, stop) (finite elements)."""
    return measure(weights.rows(name, start, stop))


def _analyse_rows(weights: ModelWeights, name: str, start: int, stop: int, stride: int,
                  transforms: Sequence[str]) -> tuple:
    """Rows [start, stop)'s share of `tensor_candidates`: the sampled rows (every
    ``stride``-th of the tensor, float32), each row's max |w| and mean w², Σ w², and each
    row's max |coefficient| of each of ``transforms``."""
    values = _finite_values(_rows(weights, name, start, stop))
    sample = values[(-start) % stride :: stride].astype(np.float32)
    peaks, mean_squares = _row_figures(values)
    signal = float(np.dot(values.reshape(-1), values.reshape(-1)))
    per_block = rows_per_block(values.shape[1], BLOCK_ELEMENTS)
    transform_peaks = [np.concatenate([np.zeros(0)] + [
        np.abs(forward(values[a : a + per_block], kind)).max(axis=1)
        for a in range(0, values.shape[0], per_block)]) for kind in transforms]
    return sample, peaks, mean_squares, signal, transform_peaks


def _prepare_rows(weights: ModelWeights, name: str, start: int, stop: int,
                  steps: float | np.ndarray, transform: str | None, stride: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, stop)'s share of the trellis's preparation (`_trellis_figures`);
    ``steps``: theirs."""
    return _trellis_figures(_rows(weights, name, start, stop), steps, None, transform, stride,
                            start)


def _encode_rows(weights: ModelWeights, name: str, start: int, stop: int,
                 steps: float | np.ndarray, deadzone: float, transform: str | None,
                 search: tuple | None) -> tuple | None:
    """Rows [start, stop) coded (`weightdna.codec.tensor._coded_blocks`) and their symbols
    entropy-coded (`weightdna.codec.tensor.code_symbols`): each encoder block's figures,
    (rows, symbol model, sections), and the flat indices and exact bytes of the non-finite
    elements; None when the step overflows the dtype or the coder's alphabet (the tensor
    is then stored exactly). ``search``: (classes of these rows, classes, groups, rate
    table, states) for the trellis, None for scalar rounding."""
    return encode_rows(_rows(weights, name, start, stop), start, steps, deadzone, transform,
                       search)


def encode_rows(source: torch.Tensor, start: int, steps: float | np.ndarray,
                deadzone: float, transform: str | None, search: tuple | None
                ) -> tuple | None:
    """`_encode_rows` of rows ``start`` … of a tensor, given as ``source`` (rows ×
    columns): what a task returns, and `coded` takes."""
    stop = start + source.shape[0]
    trellis = None if search is None else _Trellis(*search)
    symbols = _Symbols(source.numel(), 1 if trellis is None else trellis.groups
                       * trellis.n_classes)
    try:
        blocks = []
        for b in _coded_blocks(source, steps, deadzone, _dtype_name(source), None, None,
                               trellis, None, True, transform):
            symbols.add(b.pieces)
            blocks.append((b.signal, b.noise, b.max_error, b.count, b.nonzero, b.lost))
        model, sections = code_symbols(trellis, symbols.streams())
    except (_Overflow, InvalidInputError):
        return None
    del symbols
    found = _nonfinite_indices(source)
    exact = (tensor_bytes(source.reshape(-1)[torch.from_numpy(found.astype(np.int64))])
             if found.size else b"")
    return (blocks, (stop - start, model, sections),
            (found + start * source.shape[1]).astype("<u8"), exact)


def _dtype_name(t: torch.Tensor) -> str:
    return NAMES[t.dtype]


# What this process makes of the tasks' results.

def first_pass(parts: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The tensor's max |w| and Σ w² from its tasks' (`_measure_rows`), in order."""
    peak = signal = 0.0
    for part_peak, part_signal in parts:
        peak, signal = max(peak, part_peak), signal + part_signal
    return peak, signal


def candidates(info: TensorInfo, parts: Iterable[tuple], transforms: Sequence[str]
               ) -> TensorCandidates:
    """The tensor's candidates from its tasks' shares (`_analyse_rows`): plain
    quantisation, and each of ``transforms`` that compacts the sampled rows' energy."""
    parts = list(parts)
    sample = np.concatenate([p[0] for p in parts])
    peaks = np.concatenate([p[1] for p in parts])
    found = [Candidate("quantized", None, sample, peaks, 0.0)]
    compacting = set(compacting_transforms(sample))
    for i, kind in enumerate(transforms):
        if kind in compacting:
            coefficients = forward(sample.astype(np.float64), kind).astype(np.float32)
            found.append(Candidate("transform", None, coefficients,
                                   np.concatenate([p[4][i] for p in parts]), 0.0, kind))
    signal = 0.0
    for p in parts:
        signal += p[3]
    return TensorCandidates(info=info, candidates=found, signal=signal,
                            peak=float(peaks.max(initial=0.0)),
                            scale=info.numel / max(sample.size, 1),
                            row_ms=np.concatenate([p[2] for p in parts]))


def analysed_transforms(info: TensorInfo, representations: Sequence[str]) -> tuple[str, ...]:
    """The transforms whose row peaks the analysis tasks measure."""
    return TRANSFORMS if "transform" in representations and len(info.shape) >= 2 else ()


def steps_of(info: TensorInfo, choice: Choice) -> float | np.ndarray:
    """The step(s) the encoder codes ``choice`` with (per-row steps as stored: on the grid
    of `weightdna.codec.rowsteps`)."""
    return _steps_for_request(tuple(info.shape), lambda: np.zeros(0), choice.step, None)


def search_of(info: TensorInfo, parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> _Trellis:
    """The trellis's row classes and rate table from the tasks' shares (`_prepare_rows`)."""
    rows, columns = row_shape(tuple(info.shape))
    parts = list(parts)
    means = np.concatenate([p[0] for p in parts])
    sample = np.concatenate([p[1] for p in parts])
    return _learnt_trellis(means, sample, rows, columns)


def coded(info: TensorInfo, steps: float | np.ndarray, search: _Trellis | None,
          transform: str | None, parts: Iterable[tuple | None]
          ) -> tuple[Coded, float | None] | None:
    """The tensor's entry and sections from its tasks' codings (`_encode_rows`, in order):
    their figures summed, their streams laid end to end (`row_streams`); and the share of
    its non-zero weights restored as 0 (None: none); None when a task found the step
    overflowing (every part is still taken)."""
    figures = _Figures()
    nonzero = lost = 0
    indices, exact, coded_blocks = [np.zeros(0, dtype="<u8")], [], []
    overflow = False
    for part in parts:
        if part is None or overflow:
            overflow = True
            continue
        blocks, block_coding, found, values = part
        indices.append(found)
        exact.append(values)
        coded_blocks.append(block_coding)
        del part
        for figure in blocks:
            block = _Block([], *figure)
            figures.add(block)
            nonzero, lost = nonzero + block.nonzero, lost + block.lost
    if overflow:
        return None
    indices = np.concatenate(indices)
    nonfinite = indices.tobytes() + b"".join(exact) if indices.size else b""
    stats = figures.stats()
    entry = _coded_entry(info.name, info.dtype, tuple(info.shape), steps, search,
                         None, stats, "auto", int(indices.size), nonfinite, transform,
                         coded=row_streams(coded_blocks, search))
    return entry, _zeroed_share(stats, nonzero, lost)


def search_args(search: _Trellis | None, start: int, stop: int) -> tuple | None:
    """``search`` as `_encode_rows` takes it for rows [start, stop)."""
    if search is None:
        return None
    return (np.ascontiguousarray(search.classes[start:stop]), search.n_classes, search.groups,
            search.bits, search.states)


def sample_stride(info: TensorInfo) -> int:
    """The stride of the rows a row-blocked tensor's analysis samples."""
    return _sample_stride(info)



def prepare_stride(info: TensorInfo) -> int:
    """The stride of the rows the trellis's rate table is learnt on (`_prepare_rows`)."""
    return trellis_stride(*row_shape(tuple(info.shape)))
