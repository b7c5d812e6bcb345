"""A whole model to a .dna file under a target, and back to safetensors.

`compress_model` streams: tensors are read one at a time from the model, analysed into
candidates (`weightdna.codec.ratecontrol`), and coded; the coded sections and the small
per-tensor samples wait in a spill file beside the output (`weightdna.codec.spill`), not
in memory, and the samples not even there while the chosen steps are coded (dropped, and
taken again from the model if another round needs them). Every figure it
reports is measured on the coded data (the bytes written, the errors after decoding's
cast), not estimated.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from weightdna import __version__
from weightdna.atomic import FOLDER, check_output, output_form
from weightdna.codec import ratecontrol, reference, rowblocks
from weightdna.codec.bundle import (
    StoredFiles,
    safetensors_metadata,
    write_folder,
    write_onnx_file,
    write_safetensors_file,
    write_torch_file,
)
from weightdna.codec.container import PREFIX, dna_file_size, read_dna_file, write_dna_file
from weightdna.codec.dtypes import to_float64
from weightdna.codec.gptq import Calibration
from weightdna.codec.options import DECOMPRESS_FORMS
from weightdna.codec.quality import TensorQuality
from weightdna.codec.ratecontrol import (
    CANDIDATES,
    Allocation,
    Choice,
    Target,
    TensorCandidates,
    _sampled_rows,
    apply_objective,
    batchnorm_row_weights,
    check_objective,
    drop_samples,
    fill_budget,
    lstm_row_factors,
    pooled_figures,
    probe_curve,
    scalar_choice,
    single_tensor_choice,
    solve_on_curves,
    tensor_candidates,
    trellis_choice,
    with_prediction,
)
from weightdna.codec.resume import ResumableRunner, WorkFolder, settings_of
from weightdna.codec.roles import coding, encode_bounded, encode_relative, short_steps
from weightdna.codec.spill import Spill, sections_bytes
from weightdna.codec.tensor import (
    column_factors_fit,
    decode_tensor,
    encode_tensor,
    factored_prediction,
    reference_prediction,
    with_columns,
)
from weightdna.codec.workers import (
    Runner,
    can_share_output,
    decompress_in_parallel,
    default_workers,
    make_runner,
)
from weightdna.dna.metrics import decibels
from weightdna.errors import InvalidInputError, OutputExistsError, WeightDNAError
from weightdna.weights import ModelWeights, TensorInfo
from weightdna.weights.model import DividedWeights, divided_by_columns
from weightdna.weights.roles import lstm_gates

Progress = Callable[[str, int, int], None]  # (stage, done, total)
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz", ".onnx")
# Rounds of "allocate on estimates, code, measure" before a whole-model target is given up.
MEASURE_ROUNDS = 5
# A size target is met once the file is within this fraction of it (and not over).
SIZE_TARGET_FILL = 0.99
# The fill between two measured codings (`_fill_between`) leaves this share of the budget
# for the header, whose entries change with the tensors' codings.
FILL_HEADER_SLACK = 0.0002
# The step is solved for estimates within this share of a size target below it.
SOLVE_FILL = 0.004
# An SNR/PSNR target is met once the measured figure is at most this far above it.
SNR_TARGET_SLACK_DB = 0.05
# A first guess at the (compressed) header's size per tensor, before it is measured.
HEADER_BYTES_PER_TENSOR = 150
# From this many weights a decompress uses every core by default: starting a process
# (importing torch and the codec) took about 5 s on the shared 2-core box, and MiniLM's
# 22.7M weights decoded in 7.7 s in one process against 15.2 s with 2 (BENCHMARKS.md).
PARALLEL_DECODE_WEIGHTS = 200_000_000
# From this many weights `weightdna compress` uses every core by default: about 7 s of
# coding in one process on a quiet day (0.6M weights/s), against the same 5 s of start.
PARALLEL_ENCODE_WEIGHTS = 4_000_000
# Below this many elements a coded tensor is also stored exactly, and the smaller kept.
EXACT_CHECK_ELEMENTS = 1 << 14


@dataclass(frozen=True)
class TensorReport:
    """How one tensor was stored, measured after coding."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    representation: str
    bytes: int  # its sections on disk
    snr_db: float | None  # None: restored exactly
    psnr_db: float | None  # MAX = max |w| of the tensor ("maxabs" normalisation)
    max_abs_error: float
    role: str = ""  # `weightdna.weights.roles`
    zeroed: float | None = None  # share of its non-zero weights restored as 0 (lossy only)

    @property
    def numel(self) -> int:
        """Elements of the tensor."""
        return math.prod(self.shape)

    @property
    def bits_per_weight(self) -> float | None:
        """Its sections' bits per element (None for an empty tensor)."""
        return 8.0 * self.bytes / self.numel if self.numel else None


@dataclass(frozen=True)
class CompressionReport:
    """What `compress_model` wrote and the figures it measured."""

    output: Path
    target: str
    tensors: list[TensorReport]
    file_bytes: int
    original_bytes: int
    weights: int  # elements of every tensor, buffers and integers included
    snr_db: float  # whole model: Σw² / Σ(w − ŵ)² over the floating-point tensors
    psnr_db: float  # whole model: per-tensor errors normalised by max|w|², pooled
    seconds: float
    files: tuple[str, ...] = ()  # the model's other files stored (`weightdna.codec.bundle`)
    files_bytes: int = 0  # their bytes in the file
    left_out: tuple[tuple[str, str], ...] = ()  # (path, why) of files not stored

    @property
    def bits_per_weight(self) -> float:
        """The file's size (header included) in bits per weight."""
        return 8.0 * self.file_bytes / max(self.weights, 1)

    @property
    def ratio(self) -> float:
        """Original file size over the .dna file's size."""
        return self.original_bytes / max(self.file_bytes, 1)

    def quality(self) -> list[TensorQuality]:
        """The lossy tensors' figures (`weightdna.codec.quality`)."""
        return [TensorQuality(t.name, t.snr_db, t.zeroed) for t in self.tensors
                if t.snr_db is not None or t.zeroed]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


def _give_back_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Freed temporaries of a large tensor, or of a DNA fit's threads, otherwise stay
    resident in the heaps' holes, and count in the process's memory while the rest of the
    model is coded; a call costs about a millisecond."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def original_size(weights: ModelWeights) -> int:
    """Bytes of the model's file (or of the weight files in its folder)."""
    path = weights.path
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_FILE_SUFFIXES]
        if files:
            return sum(p.stat().st_size for p in files)
    return sum(info.nbytes for info in weights.infos)


def _check_paths(source: Path, output: Path, overwrite: bool) -> None:
    if output.is_dir():
        raise OutputExistsError(f"{output} is a folder; give a file name.")
    if not overwrite and (output.exists() or output.is_symlink()):
        raise OutputExistsError(f"{output} exists; pass --force to overwrite it.")
    if output.exists() and source.exists() and os.path.samefile(source, output):
        raise InvalidInputError(f"{output} is the input; write the output somewhere else.")


def _tensor_report(entry: dict, sections: Mapping[str, bytes], peak: float, role: str,
                   zeroed: float | None) -> TensorReport:
    stats = entry.get("stats", {})
    mse, max_error = stats.get("mse", 0.0), stats.get("max_abs_error", 0.0)
    exact = mse == 0
    return TensorReport(
        name=entry["name"],
        dtype=entry["dtype"],
        shape=tuple(entry["shape"]),
        representation=entry["representation"],
        bytes=sections_bytes(sections),
        snr_db=None if exact else stats.get("snr_db"),
        psnr_db=None if exact or peak <= 0 else decibels(peak * peak, mse),
        max_abs_error=max_error,
        role=role,
        zeroed=zeroed,
    )


def _encode_choice(tensor: torch.Tensor, name: str, choice: Choice,
                   hessian: np.ndarray | None = None, zero_dead: bool = True,
                   zeroed: bool = False) -> tuple[dict, dict] | tuple[tuple[dict, dict],
                                                                  float | None]:
    """Code a tensor as chosen; raw when no candidate was chosen or the step overflows.
    With ``hessian`` (its inputs' XᵀX/N) the symbols are chosen by GPTQ, scalar only;
    ``zero_dead``: the weights of inputs it never sees get symbol 0 (a size target), or are
    rounded (an SNR/PSNR target: zeroing them would cap the weights' SNR). ``zeroed``:
    return (the coding, its zeroed share as `encode_tensor` counts it)."""
    coded, share = _encode_measured(tensor, name, choice, hessian, zero_dead)
    return (coded, share) if zeroed else coded


def _encode_measured(tensor: torch.Tensor, name: str, choice: Choice,
                     hessian: np.ndarray | None, zero_dead: bool
                     ) -> tuple[tuple[dict, dict], float | None]:
    """`_encode_choice`'s work: (the coding, its zeroed share; None when stored exactly)."""
    if choice.candidate is None:
        return encode_tensor(tensor, name=name, lossless=True), None
    transform = choice.candidate.transform
    if transform is not None:
        hessian = None  # GPTQ rounds weights, not a transform's coefficients
    if hessian is not None:
        choice = scalar_choice(choice, tensor.numel())
    prediction = choice.candidate.prediction
    try:
        if choice.candidate.factored is not None:
            values = to_float64(tensor)
            values[~np.isfinite(values)] = 0.0
            prediction = factored_prediction(values, choice.candidate.factored.factors,
                                             choice.factor_step, name)
        coded, share = encode_tensor(tensor, name=name, step=choice.step,
                                     deadzone=choice.deadzone, prediction=prediction,
                                     quantizer=choice.quantizer, hessian=hessian,
                                     zero_dead=zero_dead, transform=transform, zeroed=True)
    except InvalidInputError:  # the step overflows the dtype or the coder's alphabet
        return encode_tensor(tensor, name=name, lossless=True), None
    if tensor.numel() < EXACT_CHECK_ELEMENTS:  # a tiny tensor's exact bytes may be fewer
        exact = encode_tensor(tensor, name=name, lossless=True)
        if _section_bytes(exact) <= _section_bytes(coded):
            return exact, None
    return coded, share


class _Restored(Mapping):
    """The floating-point tensors coded so far, decoded when read."""

    def __init__(self, coder: _Coder) -> None:
        self.coder = coder

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.coder.coded or name not in self.coder.signal:
            raise KeyError(name)
        return self.coder.restored(name)

    def __iter__(self):  # noqa: ANN204
        return (n for n in self.coder.coded if n in self.coder.signal)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Coder:
    """Holds the coded tensors (entries and sections, in model order) and their figures.
    With a ``spill`` (`spill.Spill`) the sections are kept in its file as they
    are added, and only their lengths and checksums here (`spill.SpilledSections`); the
    rate control's samples too (`spill_samples`)."""

    def __init__(self, weights: ModelWeights,
                 calibration: Mapping[str, np.ndarray] | Calibration | None = None) -> None:
        self.weights = weights
        self.calibration = calibration or {}
        self.coded: dict[str, tuple[dict, dict[str, bytes]]] = {}
        self.peaks: dict[str, float] = {}
        self.signal: dict[str, float] = {}
        self._restored: dict[str, tuple[int, torch.Tensor]] = {}
        # The zeroed shares counted as the tensors were coded (`_encode`, `rowblocks.coded`):
        # each coding's (entry, share), every round's, so that the round kept is among them.
        self.zeroed: dict[str, list[tuple[dict, float | None]]] = {}
        self.spill: Spill | None = None

    @property
    def columns(self) -> Mapping[str, np.ndarray]:
        """The per-column factors (`compress_model`'s ``column_factors``) that ``weights``
        reads its tensors divided by (a `DividedWeights`); {} without them."""
        return self.weights.factors if isinstance(self.weights, DividedWeights) else {}

    def hessian(self, name: str) -> np.ndarray | None:
        """The calibration H of ``name`` (None: round it), a sequential calibration's
        measured with the tensors coded so far at their restored values."""
        calibration = self.calibration
        if isinstance(calibration, Mapping):
            return calibration.get(name)
        if name not in calibration.names:
            return None
        return calibration.hessian(name, _Restored(self))

    def restored(self, name: str) -> torch.Tensor:
        """A coded tensor decoded (cached while its coding is unchanged)."""
        entry, sections = self.coded[name]
        cached = self._restored.get(name)
        if cached is None or cached[0] != id(entry):
            referenced = None
            if entry["representation"] == "reference+residual":
                referenced = self.restored(entry["params"]["reference"]["name"])
            cached = (id(entry), decode_tensor(entry, dict(sections), referenced=referenced))
            self._restored[name] = cached
        return cached[1]

    def add(self, name: str, coded: tuple[dict, dict[str, bytes]]) -> None:
        self.coded[name] = self.keep(coded)

    def keep(self, coded: tuple[dict, dict[str, bytes]]) -> tuple[dict, dict[str, bytes]]:
        """``coded`` with its sections in the spill (as `add` keeps them): a result kept as
        it arrives, added once the results before it in model order are (the order of
        `coded` is the order the whole-model figures are summed in)."""
        coded = self._with_columns(coded)
        if self.spill is None:
            return coded
        return coded[0], self.spill.keep(coded[1])

    def _with_columns(self, coded: tuple[dict, dict[str, bytes]]
                      ) -> tuple[dict, dict[str, bytes]]:
        """A tensor with column factors, coded from its values divided by them: quantized,
        the factors stored with it; stored exactly (the rate control's choice, or fewer
        bytes than its coding), the tensor as given stored exactly instead (the rate
        control plans such a tensor as nothing else: `_compress`)."""
        entry = coded[0]
        factors = self.columns.get(entry["name"])
        if factors is None or "columns" in entry["params"]:
            return coded
        if entry["representation"] == "quantized":
            return with_columns(coded, factors)
        return encode_tensor(self.weights.base.tensor(entry["name"]), name=entry["name"],
                             lossless=True)

    def spill_samples(self, tc: TensorCandidates) -> None:
        """``tc``'s samples (the rate control's, held for every tensor at once) kept in the
        spill, read back when an allocation evaluates them."""
        if self.spill is None:
            return
        kept = {}
        for candidate in tc.candidates:
            if isinstance(candidate.sample, np.ndarray):
                key = id(candidate.sample)  # one sample shared by candidates: kept once
                if key not in kept:
                    kept[key] = self.spill.keep_array(candidate.sample)
                candidate.sample = kept[key]

    def measure(self, tensor: torch.Tensor, name: str) -> None:
        self.peaks[name], self.signal[name] = rowblocks.measure(tensor)

    def entries(self) -> tuple[list[dict], list[dict[str, bytes]]]:
        names = [n for n in self.weights.names if n in self.coded]
        return [self.coded[n][0] for n in names], [self.coded[n][1] for n in names]

    def figures(self) -> tuple[float, float]:
        """Measured whole-model (SNR, PSNR) over the floating-point tensors. Summed exactly
        (`math.fsum`), so the figures do not depend on the order the codings came in (a
        pool's completion order): the rate control steers by them, and its file must be
        the same bytes in one process and in workers."""
        signal, sse, normalised = [], [], []
        count = 0
        for name, (entry, _) in self.coded.items():
            if name not in self.signal:
                continue  # integers and buffers
            n = math.prod(entry["shape"])
            error = entry.get("stats", {}).get("mse", 0.0) * n
            signal.append(self.signal[name])
            sse.append(error)
            peak = self.peaks[name]
            normalised.append(error / (peak * peak) if peak > 0 else 0.0)
            count += n
        return (decibels(math.fsum(signal), math.fsum(sse)),
                decibels(count, math.fsum(normalised)))

    def keep_zeroed(self, coded: tuple[dict, dict[str, bytes]],
                    kept: tuple[dict, dict[str, bytes]], share: float | None) -> None:
        """Hold ``share``, the zeroed share counted as ``coded`` was coded, for ``kept``
        (`keep`'s form of it) where that is the same coding (not one stored with column
        factors or exactly instead: measured by decoding)."""
        if kept[0] is coded[0]:
            self.zeroed.setdefault(coded[0]["name"], []).append((coded[0], share))

    def measured_zeroed(self, entry: dict) -> tuple[bool, float | None]:
        """(Whether ``entry``'s zeroed share was counted as it was coded, that share)."""
        for found, share in self.zeroed.get(entry["name"], ()):
            if found is entry:
                return True, share
        return False, None

    def reports(self, runner: Runner) -> list[TensorReport]:
        entries, sections = self.entries()
        measured = [self.measured_zeroed(e) for e in entries]
        asked = [(e["name"], e, s) if e.get("stats", {}).get("mse")
                 and e["representation"] != "reference+residual"
                 and not m[0] else (e["name"], None, None)
                 for e, s, m in zip(entries, sections, measured, strict=True)]
        zeroed = [None] * len(asked)
        for i, share in _largest_first(runner, _zeroed, asked,
                                       [math.prod(e["shape"]) for e in entries]):
            zeroed[i] = share
        zeroed = [m[1] if m[0]
                  else _lost(self.weights.tensor(e["name"]), self.restored(e["name"]))
                  if e["representation"] == "reference+residual" and e["stats"].get("mse")
                  else z for e, z, m in zip(entries, zeroed, measured, strict=True)]
        return [_tensor_report(e, s, self.peaks.get(e["name"], 0.0),
                               self.weights.info(e["name"]).role, z)
                for e, s, z in zip(entries, sections, zeroed, strict=True)]


# The tasks of `weightdna.codec.workers`: each reads its own tensor from ``weights``.

def _zeroed(weights: ModelWeights, name: str, entry: dict | None,
            sections: dict[str, bytes] | None) -> float | None:
    """The share of ``name``'s non-zero weights that decode as 0 (None: stored exactly
    (``entry`` None) or holding none), measured on the coded tensor, a block at a time."""
    if entry is None or entry.get("stats", {}).get("mse", 0.0) == 0:
        return None
    return _lost(weights.tensor(name), decode_tensor(entry, dict(sections)))


def _lost(original: torch.Tensor, restored: torch.Tensor) -> float | None:
    """The share of the non-zero weights of ``original`` that ``restored`` holds as 0."""
    original, restored = original.reshape(-1), restored.reshape(-1)
    nonzero = lost = 0
    for start in range(0, original.numel(), rowblocks.MEASURE_BLOCK):
        a = original[start : start + rowblocks.MEASURE_BLOCK]
        b = restored[start : start + rowblocks.MEASURE_BLOCK]
        kept = a != 0
        nonzero += int(kept.sum())
        lost += int((kept & (b == 0)).sum())
    return lost / nonzero if nonzero else None


def _first_pass(weights: ModelWeights, info: TensorInfo, kind: str, signatures: bool = False,
                short_step: bool = False
                ) -> tuple[tuple[float, float] | None, tuple[dict, dict[str, bytes]] | None,
                           np.ndarray | None]:
    """A tensor's max |w| and Σ w² (floating point, not a buffer: None otherwise), its
    coding when its role fixes it (exact, relative, bounded; None: the target's), and with
    ``signatures`` a coded tensor's `reference.signature` (None otherwise); ``short_step``:
    a bounded tensor's short step (`roles.short_steps`)."""
    tensor = weights.tensor(info.name)
    figures = rowblocks.measure(tensor) if info.fittable else None
    how = coding(info)
    coded = None
    if kind == "lossless" or how == "exact":
        # a lossless target's tensors in lanes (fast); the exact ones of a lossy file as before
        coded = encode_tensor(tensor, name=info.name, lossless=True, fast=kind == "lossless")
    elif how == "relative" and kind != "max_abs_error":
        coded = encode_relative(tensor, info.name)
    elif how == "bounded" and kind != "max_abs_error":
        coded = encode_bounded(tensor, info.name, short_step)
    signature = None
    if signatures and coded is None and figures is not None and tensor.dim() >= 2:
        signature = reference.signature(to_float64(tensor))
    return figures, coded, signature


def _analyse(weights: ModelWeights, info: TensorInfo, representations: Sequence[str],
             dna_config: object, probe: tuple | None = None) -> TensorCandidates:
    """`tensor_candidates` of a tensor, read as float64 straight from the reader (the stored
    dtype's copy is not held beside it). ``probe``: (sensitivity, objective, whether the
    sensitivity is measured, target, per_row, row weights or None) of a whole-model
    target: the tensor's sensitivity and objective are set and its rate–distortion curve measured
    (`ratecontrol.rate_curve`), here, beside the other tensors' (not on the driver)."""
    tc = tensor_candidates(info, weights.numpy(info.name), representations, dna_config)
    if probe is not None:
        _probe(tc, probe)
    _give_back_free_memory()
    return tc


def _probe(tc: TensorCandidates, probe: tuple) -> None:
    """Set ``tc``'s sensitivity and objective and measure its curve (`_analyse`'s
    ``probe``)."""
    (sensitivity, objective, measured, target, per_row, row_weight, mean_numel,
     output_weight, row_factor) = probe
    tc.sensitivity = sensitivity
    if target.kind in ("bits_per_weight", "snr"):
        apply_objective(tc, objective, measured=measured, row_weight=row_weight,
                        mean_numel=mean_numel, output_weight=output_weight,
                        row_factor=row_factor)
    probe_curve(tc, target, per_row)


def _sample(weights: ModelWeights, name: str) -> np.ndarray:
    """The sample `drop_samples` dropped, taken again from the tensor (`resample`)."""
    return _sampled_rows(weights.tensor(name))[0]


def _encode(weights: ModelWeights, name: str, choice: Choice, hessian: np.ndarray | None,
            zero_dead: bool) -> tuple[tuple[dict, dict[str, bytes]], float | None]:
    """The tensor coded as chosen, and its zeroed share counted as it was coded (the
    report's, not measured again by decoding it: `_Coder.keep_zeroed`)."""
    coded = _encode_choice(weights.tensor(name), name, choice, hessian, zero_dead,
                           zeroed=True)
    _give_back_free_memory()
    return coded


def _without_sample(choice: Choice) -> Choice:
    """``choice`` as a task's argument: its candidate's sample (the allocation's, not the
    encoder's) left behind."""
    if choice.candidate is None or choice.candidate.sample is None:
        return choice
    return replace(choice, candidate=replace(choice.candidate, sample=None))


def _meet_one(weights: ModelWeights, info: TensorInfo, representations: Sequence[str],
              dna_config: object, sensitivity: float, target: Target, per_row: bool,
              hessian: np.ndarray | None) -> tuple[dict, dict[str, bytes]]:
    """One tensor coded to a per-tensor or max-abs-error target."""
    tc = _analyse(weights, info, representations, dna_config)
    tc.sensitivity = sensitivity
    tensor = weights.tensor(info.name)
    if target.kind == "max_abs_error":
        return _smallest_within(tensor, info.name, tc, target.value)
    return _meet_per_tensor(tensor, info.name, tc, target, per_row, hessian)


def compress_model(
    weights: ModelWeights,
    output: str | Path,
    target: Target,
    *,
    representations: Sequence[str] = CANDIDATES,
    per_row: bool = False,
    objective: str = "layer",
    overwrite: bool = False,
    dna_config: object = None,
    sensitivity: Mapping[str, float] | None = None,
    row_weights: Mapping[str, np.ndarray] | None = None,
    column_factors: Mapping[str, np.ndarray] | None = None,
    calibration: Mapping[str, np.ndarray] | Calibration | None = None,
    files: StoredFiles | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    ray: str | bool | None = False,
    resumable: bool = False,
    resume: bool = False,
    adjust: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]] | None = None,
) -> CompressionReport:
    """Code every tensor of ``weights`` to meet ``target`` at the fewest bits; write ``output``.

    ``representations``: the candidates tried (quantized always; the others where cheap
    tests suggest structure). ``per_row``: per-row steps proportional to each row's
    max |w|. ``objective``: what a whole-model size or SNR target's allocation minimises,
    "layer" (each tensor's mean relative row error, counted once per tensor), "relative"
    (each row's squared error relative to its own mean square, counted per element) or
    "mse" (the pooled squared error: one step on the raw scale); per-row steps where they
    pay under the first two; see `weightdna.codec.ratecontrol`. ``dna_config``: the
    weightdna.dna.FitConfig of DNA candidates.
    ``sensitivity``: {tensor name: s_t}, how much its squared error counts (default 1).
    ``row_weights``: {tensor name: one weight > 0 per row (its first axis)}, how much each
    row's error counts against the tensor's other rows (e.g. a word embedding's rows by
    how often their token occurs: `weightdna.bert.token_prior`); whole-model
    bits-per-weight and SNR targets only (`weightdna.codec.ratecontrol.apply_objective`).
    ``column_factors``: {tensor name: one factor c_j > 0 per column (its elements past the
    first axis), within 2^±16}: the tensor is coded divided by them and the factors are
    stored with it (float32, format version 9: `weightdna.codec.tensor.with_columns`), so
    column j's error counts 1/c_j² as much (a data-free input weighting:
    `weightdna.evaluate.columns.bert_column_factors`); whole-model targets, weight
    matrices only, the tensors read in this process (not with ``ray``). Such a tensor's
    candidates are ``quantized`` only (or exact storage, of the tensor as given).
    ``calibration``: {tensor name: H = XᵀX/N of the inputs its rows are applied to}
    (`weightdna.evaluate.calibration.hessians`), or a `weightdna.codec.gptq.Calibration`
    that measures each H with the tensors coded before it restored (sequential); those
    tensors' symbols are chosen by GPTQ to keep their outputs' error small (scalar
    quantizer; same format). Not with max-abs-error or lossless targets.
    Tensors are stored by role (`weightdna.codec.roles`): integer tensors, buffers,
    and constants exactly; normalisation statistics each within a relative error of 2⁻¹⁰;
    biases, normalisation parameters and small tensors other than weights within 2⁻¹⁰ of
    their max |w| (exactly if whole numbers); only weight matrices, kernels and embeddings
    meet the target. Any coded tensor whose exact bytes are fewer is stored exactly.
    ``files``: the model's other files (config, tokenizer, an ONNX graph:
    `weightdna.codec.bundle.collect_files`), stored beside the tensors and counted in the
    size; none by default.
    ``workers``: code tensors in that many processes (None: this one), ``ray``: on a Ray
    cluster (an address, or True for a local one of ``workers`` CPUs); each reads its own
    tensors from the model's file, and the file is the same for any of them
    (`weightdna.codec.workers`; a sequential calibration runs here).
    ``resumable``: keep each finished task in a work folder beside ``output``, which a
    killed run leaves; ``resume``: finish such a run, doing only what is missing
    (`weightdna.codec.resume`). The folder is removed once ``output`` is written.
    ``adjust``: called once every tensor is coded, with the coded floating-point tensors
    (decoded when read, by name); it returns {name: new value} of tensors coded by role
    (biases, normalisation parameters: `weightdna.codec.roles`), which are coded again
    from those values (a bias corrected for its weights' error:
    `weightdna.evaluate.correction`); their reports' error is against the new values.
    """
    started = time.perf_counter()
    output = Path(output)
    _check_paths(weights.path, output, overwrite)
    check_objective(objective)  # before any tensor is read
    if per_row and not target.rate_distortion:
        raise InvalidInputError("--per-row applies to bits-per-weight, SNR and PSNR targets.")
    report = progress or (lambda stage, done, total: None)
    metadata = {
        "producer": f"weightdna {__version__}",
        "target": target.describe(),
        "source": weights.path.name,
        "source_metadata": json.dumps(weights.metadata, sort_keys=True),
    }
    stored = files or StoredFiles()
    calibration = _check_calibration(weights, calibration, target)
    coder = _Coder(weights, calibration)
    for name, value in (sensitivity or {}).items():
        if not float(value) > 0:
            raise InvalidInputError(f"the sensitivity of {name} must be > 0.")
    row_weights = _check_row_weights(weights, row_weights, target)
    factors = _check_column_factors(weights, column_factors, target, calibration, ray)
    if factors:
        coder.weights = divided_by_columns(weights, factors)
    if not isinstance(calibration, Mapping):
        workers, ray = None, False  # a sequential calibration codes one tensor after another
    folder = None
    if resumable or resume:
        folder = WorkFolder(output, weights, settings_of(
            target=target, representations=list(representations), per_row=per_row,
            objective=objective, dna_config=dna_config, sensitivity=dict(sensitivity or {}),
            **({"row_weights": row_weights} if row_weights else {}),
            **({"column_factors": factors} if factors else {}),
            calibration=_calibration_digest(calibration)), resume)
    try:
        report_ = _compress_and_write(coder.weights, output, target, coder, folder, workers, ray,
                                      representations, per_row, objective, dna_config,
                                      sensitivity, metadata, report, overwrite, stored.files,
                                      row_weights, adjust)
    except WeightDNAError:
        if folder is not None:
            folder.remove()  # a refused request: nothing to resume
        raise
    if folder is not None:
        folder.remove()  # the output is written
    size, snr, psnr, tensors = report_
    return CompressionReport(
        output=output,
        target=target.describe(),
        tensors=tensors,
        file_bytes=size,
        original_bytes=original_size(weights) + sum(e["bytes"] for e, _ in stored.files),
        weights=weights.total_numel,
        snr_db=snr,
        psnr_db=psnr,
        seconds=time.perf_counter() - started,
        files=tuple(stored.paths),
        files_bytes=stored.stored_bytes,
        left_out=tuple(stored.left_out),
    )


def _compress_and_write(weights: ModelWeights, output: Path, target: Target, coder: _Coder,
                        folder: WorkFolder | None, workers: int | None, ray: str | bool | None,
                        representations: Sequence[str], per_row: bool, objective: str,
                        dna_config: object, sensitivity: Mapping[str, float] | None,
                        metadata: dict[str, str], report: Progress, overwrite: bool,
                        files: Sequence[tuple[dict, bytes]] = (),
                        row_weights: Mapping[str, np.ndarray] | None = None,
                        adjust: Callable[[Mapping[str, torch.Tensor]],
                                         Mapping[str, torch.Tensor]] | None = None,
                        ) -> tuple[int, float, float, list[TensorReport]]:
    """compress_model's work once its arguments are checked: (file bytes, SNR, PSNR, the
    tensors' reports). ``files``: the model's stored files (`weightdna.codec.bundle`)."""
    # The coded sections wait in a temporary file beside the output, not in memory.
    with make_runner(weights, workers, ray, warm=__name__) as local, Spill(output) as spill:
        coder.spill = spill
        runner = local if folder is None else ResumableRunner(local, folder)
        _compress(weights, coder, runner, target, representations, per_row, objective,
                  dna_config, sensitivity, metadata, report, files, row_weights)
        def bits_per_weight() -> float:
            entries, sections = coder.entries()
            return 8.0 * dna_file_size(entries, sections, metadata=metadata,
                                       files=files) / weights.total_numel

        if adjust is not None:
            report("correcting", 0, 1)
            _recode_adjusted(weights, coder, adjust(_Restored(coder)),
                             None if target.kind != "bits_per_weight"
                             else lambda: bits_per_weight() <= target.value)
        report("writing", 0, 1)
        entries, sections = coder.entries()
        if target.kind == "bits_per_weight":
            least = bits_per_weight()
            if least > target.value:
                raise InvalidInputError(
                    f"could not meet {target.describe()}: the file needs {least:.4g} bits per "
                    "weight (tensors stored exactly and the header included). Ask for more."
                )
        size = write_dna_file(output, entries, sections, metadata=metadata, files=files,
                              overwrite=overwrite)
        snr, psnr = coder.figures()
        tensors = coder.reports(local)
        written = read_dna_file(output, verify=False)
        if written.groups:  # the compact index packs small raw tensors: their bytes on disk
            tensors = [replace(t, bytes=written.section_bytes(t.name)) for t in tensors]
        report("writing", 1, 1)
    return size, snr, psnr, tensors


def _recode_adjusted(weights: ModelWeights, coder: _Coder,
                     adjusted: Mapping[str, torch.Tensor],
                     fits: Callable[[], bool] | None = None) -> None:
    """Code again, by their role, the tensors ``adjusted`` gives new values
    (`compress_model`'s ``adjust``). With ``fits`` (whether the file still meets its
    size target): if the new codings break the target, the tensors whose sections grew
    most go back to their first coding until it is met again."""
    before = {name: coder.coded[name] for name in adjusted if name in coder.coded}
    for name, value in adjusted.items():
        info = weights.info(name)
        how = coding(info)
        if how not in ("relative", "bounded") or name not in coder.coded:
            raise ValueError(f"adjust may change biases and normalisation parameters coded by "
                             f"role, not {name} ({how})")
        tensor = torch.as_tensor(value).to(getattr(torch, info.dtype)).reshape(info.shape)
        coder.add(name, encode_relative(tensor.contiguous(), name) if how == "relative"
                  else encode_bounded(tensor.contiguous(), name, short_steps(weights.infos)))
    if fits is None or fits():
        return

    def growth(name: str) -> int:
        return _section_bytes(coder.coded[name]) - _section_bytes(before[name])

    for name in sorted(before, key=growth, reverse=True):
        if growth(name) <= 0 or fits():
            break
        coder.coded[name] = before[name]
    if not fits():  # the header grew, not the sections (a step written in more digits)
        coder.coded.update(before)


def _compress(weights: ModelWeights, coder: _Coder, runner: Runner, target: Target,
              representations: Sequence[str], per_row: bool, objective: str,
              dna_config: object, sensitivity: Mapping[str, float] | None,
              metadata: Mapping[str, str], report: Progress,
              files: Sequence[tuple[dict, bytes]] = (),
              row_weights: Mapping[str, np.ndarray] | None = None) -> None:
    """Code every tensor of ``weights`` into ``coder``, the tasks run by ``runner``."""
    lossy: list[str] = []
    infos = weights.infos
    # References (tied or repeated tensors) for rate-distortion targets without a
    # calibration (GPTQ codes each tensor against its own inputs); not among row blocks.
    looking = ("reference" in representations and target.rate_distortion
               and not coder.calibration)
    blocked = {info.name for info in infos if _row_blocked(info, target, coder)}
    whole = [info for info in infos if info.name not in blocked]
    signatures = {}
    kept: dict[int, tuple[dict, dict[str, bytes]]] = {}
    for done, (i, (figures, coded, signature)) in enumerate(_largest_first(
            runner, _first_pass, [(info, target.kind, looking, short_steps(infos))
                                  for info in whole],
            [info.numel for info in whole])):
        report("reading", done, len(infos))
        info = whole[i]
        if figures is not None:
            coder.peaks[info.name], coder.signal[info.name] = figures
        if coded is not None:
            kept[i] = coder.keep(coded)
        else:
            signatures[info.name] = signature
    for i in sorted(kept):  # in model order (`_Coder.keep`)
        coder.coded[whole[i].name] = kept.pop(i)
    for i, (info, parts) in enumerate(_row_tasks(
            runner, rowblocks._measure_rows,
            [(info, lambda start, stop, info=info: (info.name, start, stop))
             for info in infos if info.name in blocked])):
        report("reading", len(whole) + i, len(infos))
        coder.peaks[info.name], coder.signal[info.name] = rowblocks.first_pass(parts)
    lossy = [info.name for info in infos if info.name not in coder.coded]
    report("reading", len(infos), len(infos))
    _give_back_free_memory()

    def weight_of(name: str) -> float:
        return float((sensitivity or {}).get(name, 1.0))

    references = _find_references(weights, lossy, signatures) if looking else {}
    # A tensor with column factors is stored with them only as ``quantized``
    # (`_Coder._with_columns`): the rate control plans it as nothing else (a low-rank or
    # reference coding it picked would be stored exactly, far above the bits it counted).
    references = {name: found for name, found in references.items()
                  if name not in coder.columns}

    def candidates_of(name: str) -> Sequence[str]:
        return ("quantized",) if name in coder.columns else representations
    if target.kind == "max_abs_error" or target.per_tensor:
        alone = [name for name in lossy if name not in references]
        tasks = ((weights.info(name), representations, dna_config, weight_of(name), target,
                  per_row, None if target.kind == "max_abs_error" else coder.hessian(name))
                 for name in alone)
        for i, (name, coded) in enumerate(zip(alone, runner.map(_meet_one, tasks),
                                              strict=True)):
            report("analysing", i, len(lossy))
            coder.add(name, coded)
        # A reference's prediction is its referenced tensor as coded (just now).
        for name, (other, scale, order) in references.items():
            tc = _analyse(weights, weights.info(name), representations, dna_config)
            tc.sensitivity = weight_of(name)
            tensor = weights.tensor(name)
            with_prediction(tc, reference_prediction(other, coder.restored(other), scale,
                                                     order), tensor)
            coder.add(name, _meet_per_tensor(tensor, name, tc, target, per_row))
    elif lossy:
        # Largest first (each analysis depends on its tensor alone): the largest tensor's
        # float64 values and their temporaries then sit beside no other tensor's samples.
        by_size = sorted((n for n in lossy if n not in blocked),
                         key=lambda name: -weights.info(name).numel)
        analysed = {}

        # "share": the mean size of the tensors coded at the rate (`apply_objective`).
        mean_numel = sum(weights.info(n).numel for n in lossy) / len(lossy)

        # The rows of a kernel a BatchNorm follows, by what it makes of their error.
        outputs = _batchnorm_rows(weights, objective, target)
        # The rows of an LSTM's gate matrices, by how their gate passes on their error.
        gates = _gate_rows(weights, objective, target)

        def probe(name: str) -> tuple:
            return (weight_of(name), objective, sensitivity is not None, target, per_row,
                    (row_weights or {}).get(name), mean_numel, outputs.get(name),
                    gates.get(name))

        tasks = [(weights.info(name), candidates_of(name), dna_config, probe(name))
                 for name in by_size]
        results = ((by_size[i], tc) for i, tc in runner.map_unordered(_analyse, tasks))
        for i, (name, tc) in enumerate(itertools.chain(results, _analysed_rows(
                weights, runner, [n for n in lossy if n in blocked], candidates_of))):
            report("analysing", i, len(lossy))
            if name in blocked:  # analysed a row block at a time; probed here
                _probe(tc, probe(name))
            analysed[name] = tc
            coder.spill_samples(tc)
        for name, (other, scale, order) in references.items():
            # Estimated on the referenced tensor as it is; coded on it as coded.
            with_prediction(analysed[name], reference_prediction(
                other, weights.tensor(other), scale, order), weights.tensor(name))
            # Its curve again, with the reference among the candidates.
            probe_curve(analysed[name], target, per_row)
            coder.spill_samples(analysed[name])
        candidates = [analysed[name] for name in lossy]
        report("analysing", len(lossy), len(lossy))
        _meet_whole_model(weights, coder, candidates, target, per_row, metadata, report,
                          runner, files, blocked)


def _largest_first(runner: Runner, task: Callable, tasks: Sequence[tuple],
                   sizes: Sequence[int]) -> Iterator[tuple[int, object]]:
    """(position in ``tasks``, result) of ``task`` on each, the largest (``sizes``) given
    to the workers first, the results as they complete (`Runner.run`)."""
    order = sorted(range(len(tasks)), key=lambda i: -sizes[i])
    for j, result in runner.map_unordered(task, [tasks[i] for i in order]):
        yield order[j], result


def _row_blocked(info: TensorInfo, target: Target, coder: _Coder) -> bool:
    """Whether ``info``'s tensor is read, analysed and coded as row blocks
    (`weightdna.codec.rowblocks`): a large one, coded to a whole-model rate–distortion
    target by the rate control (its role does not fix its coding), without calibration."""
    return (rowblocks.splits(info) and target.whole_model and not coder.calibration
            and coding(info) not in ("exact", "relative", "bounded"))


def _row_tasks(runner: Runner, task: Callable, jobs: Sequence[tuple[TensorInfo, Callable]]
               ) -> Iterator[tuple[TensorInfo, Iterator]]:
    """Each job's tensor and its row-block tasks' results, in order, each as soon as it is
    done (take them all before the next tensor): ``task`` on the arguments ``args(start,
    stop)`` of each of its `rowblocks.row_ranges` (one map over every job's tasks: the
    workers never wait for a tensor's end)."""
    ranges = [rowblocks.row_ranges(info) for info, _ in jobs]
    tasks = (args(start, stop) for (_, args), bounds in zip(jobs, ranges, strict=True)
             for start, stop in bounds)
    results = runner.map(task, tasks)
    for (info, _), bounds in zip(jobs, ranges, strict=True):
        yield info, (next(results) for _ in bounds)


def _analysed_rows(weights: ModelWeights, runner: Runner, names: Sequence[str],
                   representations: Callable[[str], Sequence[str]]
                   ) -> Iterator[tuple[str, TensorCandidates]]:
    """The candidates of the row-blocked tensors ``names``, analysed a row block at a
    time; ``representations``: each one's candidates, by name."""
    jobs = []
    for name in names:
        info = weights.info(name)
        stride = rowblocks.sample_stride(info)
        kinds = rowblocks.analysed_transforms(info, representations(name))
        jobs.append((info, lambda start, stop, info=info, stride=stride, kinds=kinds:
                     (info.name, start, stop, stride, kinds)))
    for info, parts in _row_tasks(runner, rowblocks._analyse_rows, jobs):
        yield info.name, rowblocks.candidates(
            info, parts, rowblocks.analysed_transforms(info, representations(info.name)))
        _give_back_free_memory()


def _code_round(runner: Runner, coder: _Coder,
                whole: Sequence[tuple[TensorInfo, Choice, np.ndarray | None]],
                chosen: Sequence[tuple[TensorInfo, Choice]], zero_dead: bool,
                report: Progress, total: int
                ) -> list[tuple[str, tuple[dict, dict[str, bytes]]]]:
    """One round of codings as chosen: the whole tensors ``whole`` (info, choice, H) a task
    each, and the row-blocked ``chosen`` a row block per task (the trellis's preparation
    first, every tensor's; `rowblocks`), all in one `Runner.run`: the row blocks first,
    then the whole tensors largest first, so that the workers never wait for one kind to
    end, and this process entropy-codes each row-blocked tensor's symbols
    (`rowblocks.coded`) as soon as its last block is done, while they code the rest. Each
    coding is kept (`_Coder.keep`) as it arrives; returns (name, kept coding) in the order
    they were always added: ``whole``'s, then the row-blocked tensors', then those stored
    exactly (no candidate chosen, or a step that overflows). The zeroed share of each
    row-blocked tensor is kept in ``coder``."""
    steps = {info.name: rowblocks.steps_of(info, choice) for info, choice in chosen
             if choice.candidate is not None}

    def part(values: float | np.ndarray, start: int, stop: int) -> float | np.ndarray:
        return values[start:stop] if isinstance(values, np.ndarray) else values

    searches = {}
    trellised = [(info, choice) for info, choice in chosen
                 if choice.candidate is not None and choice.quantizer == "trellis"]
    jobs = [(info, lambda start, stop, info=info, choice=choice: (
        info.name, start, stop, part(steps[info.name], start, stop),
        choice.candidate.transform, rowblocks.prepare_stride(info)))
        for info, choice in trellised]
    for info, parts in _row_tasks(runner, rowblocks._prepare_rows, jobs):
        searches[info.name] = rowblocks.search_of(info, parts)
    coding: list[tuple[Callable, tuple]] = []
    tags: list[tuple] = []  # (position in whole,) or (info, choice, block, blocks)
    for info, choice in chosen:
        if choice.candidate is None:
            continue
        ranges = rowblocks.row_ranges(info)
        for k, (start, stop) in enumerate(ranges):
            coding.append((rowblocks._encode_rows, (
                info.name, start, stop, part(steps[info.name], start, stop),
                choice.deadzone, choice.candidate.transform,
                rowblocks.search_args(searches.get(info.name), start, stop))))
            tags.append((info, choice, k, len(ranges)))
    for i in sorted(range(len(whole)), key=lambda i: -whole[i][0].numel):
        info, choice, hessian = whole[i]
        coding.append((_encode, (info.name, choice, hessian, zero_dead)))
        tags.append((i,))
    done: dict[int, tuple[dict, dict[str, bytes]]] = {}
    rows: dict[str, tuple[dict, dict[str, bytes]]] = {}
    parts: dict[str, list] = {}
    left: dict[str, int] = {}
    overflowed = set()
    for j, result in runner.run(coding):
        tag = tags[j]
        if len(tag) == 1:
            coded, share = result
            done[tag[0]] = coder.keep(coded)
            coder.keep_zeroed(coded, done[tag[0]], share)
            del coded, result
        else:
            info, choice, k, blocks = tag
            parts.setdefault(info.name, [None] * blocks)[k] = result
            left[info.name] = left.get(info.name, blocks) - 1
            del result
            if left[info.name]:
                continue
            coded = rowblocks.coded(info, steps[info.name], searches.get(info.name),
                                    choice.candidate.transform, parts.pop(info.name))
            if coded is None:  # the step overflows: stored exactly
                overflowed.add(info.name)
                continue
            (entry, sections), zeroed = coded
            rows[info.name] = coder.keep((entry, sections))
            coder.keep_zeroed((entry, sections), rows[info.name], zeroed)
            del coded, entry, sections
            _give_back_free_memory()
        report("encoding", len(done) + len(rows), total)
    raw = ([info for info, choice in chosen if choice.candidate is None]
           + [info for info, _ in chosen if info.name in overflowed])
    exact = Choice(None, None, 0.0, 0.0)
    stored = [(info.name, coder.keep(coded)) for info, (coded, _) in zip(raw, runner.map(
        _encode, ((info.name, exact, None, True) for info in raw)), strict=True)]
    return ([(info.name, done[i]) for i, (info, _, _) in enumerate(whole)]
            + [(info.name, rows[info.name]) for info, _ in chosen if info.name in rows]
            + stored)


def _find_references(weights: ModelWeights, lossy: Sequence[str],
                     signatures: Mapping[str, np.ndarray | None]
                     ) -> dict[str, tuple[str, float, np.ndarray | None]]:
    """{tensor: (the earlier tensor it repeats, scale, row order or None)} among the coded
    tensors (`weightdna.codec.reference`): each refers to the first earlier one, itself no
    reference, whose signature matches and whose fit holds."""
    found: dict[str, tuple[str, float, np.ndarray | None]] = {}
    names = [name for name in weights.names if signatures.get(name) is not None]
    for j, name in enumerate(names):
        for other in names[:j]:
            if other in found or not reference.alike(signatures[other], signatures[name]) \
                    or weights.info(other).shape != weights.info(name).shape:
                continue
            fitted = reference.fit(weights.numpy(other), weights.numpy(name))
            if fitted is not None:
                found[name] = (other, *fitted)
                break
    return found


def _refers(choice: Choice) -> bool:
    return choice.candidate is not None and choice.candidate.name == "reference+residual"


def _encode_reference(weights: ModelWeights, coder: _Coder, name: str, choice: Choice,
                      zero_dead: bool) -> tuple[dict, dict[str, bytes]]:
    """A tensor chosen as a reference, coded against its referenced tensor as coded."""
    params = choice.candidate.prediction.params
    order = None
    if params["rows"]:
        order = reference.decode_order(choice.candidate.prediction.sections["order"],
                                       weights.info(name).shape[0], name)
    prediction = reference_prediction(params["name"], coder.restored(params["name"]),
                                      params["scale"], order)
    return _encode_choice(weights.tensor(name), name,
                          replace(choice, candidate=replace(choice.candidate,
                                                            prediction=prediction)),
                          coder.hessian(name), zero_dead)


def _calibration_digest(calibration: Mapping[str, np.ndarray] | Calibration) -> str | None:
    """What a resumed run must have been given to reuse the work folder: the SHA-256 of the
    Hessians (names and bytes; other calibration texts give other ones), "sequential" for
    a calibration measured as the tensors are coded, None for none."""
    if not calibration:
        return None
    if not isinstance(calibration, Mapping):
        return "sequential"
    digest = hashlib.sha256()
    for name in sorted(calibration):
        hessian = np.ascontiguousarray(calibration[name], dtype=np.float64)
        digest.update(name.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(repr(hessian.shape).encode() + hessian.tobytes())
    return digest.hexdigest()


def _check_row_weights(weights: ModelWeights, row_weights: Mapping[str, np.ndarray] | None,
                       target: Target) -> dict[str, np.ndarray]:
    """The row weights as float64 arrays, checked against the model's tensors: one finite
    weight > 0 per row of a tensor of 2 or more dimensions."""
    if not row_weights:
        return {}
    if not target.whole_model or target.kind == "psnr":
        raise InvalidInputError("row weights apply to whole-model bits-per-weight and SNR "
                                "targets.")
    checked = {}
    for name, value in row_weights.items():
        if name not in weights.names:
            raise InvalidInputError(f"row weights name {name!r}, which the model lacks.")
        shape = weights.info(name).shape
        value = np.asarray(value, dtype=np.float64)
        if len(shape) < 2 or value.shape != (shape[0],):
            raise InvalidInputError(f"the row weights of {name} are {value.shape}; its shape "
                                    f"{tuple(shape)} needs ({shape[0] if shape else 0},).")
        if not np.all(np.isfinite(value)) or not np.all(value > 0):
            raise InvalidInputError(f"the row weights of {name} must be finite and > 0.")
        checked[name] = value
    return checked


def _weighs_rows(objective: str, target: Target) -> bool:
    """Whether ``objective`` weighs a tensor's rows against each other (not "mse") under
    ``target``: a whole-model bits-per-weight or SNR target (`_batchnorm_rows`,
    `_gate_rows`)."""
    return objective != "mse" and target.whole_model and target.kind != "psnr"


def _batchnorm_rows(weights: ModelWeights, objective: str, target: Target
                    ) -> dict[str, np.ndarray]:
    """{kernel: its rows' weights from the BatchNorm that follows it}
    (`ratecontrol.batchnorm_row_weights`; `apply_objective`'s ``output_weight``), for
    objectives that weigh rows (not "mse") and whole-model bits-per-weight and SNR
    targets."""
    if ratecontrol.BN_ROWS == "off" or not _weighs_rows(objective, target):
        return {}
    found = {}
    for kernel, (gain, variance) in weights.batchnorms.items():
        if ratecontrol.BN_ROWS == "depthwise" \
                and not ratecontrol.depthwise_kernel(tuple(weights.info(kernel).shape)):
            continue
        rows = batchnorm_row_weights(weights.tensor(gain).numpy(),
                                     weights.tensor(variance).numpy())
        if rows is not None and rows.shape == (weights.info(kernel).shape[0],):
            found[kernel] = rows
    return found


def _gate_rows(weights: ModelWeights, objective: str, target: Target
               ) -> dict[str, np.ndarray]:
    """{LSTM gate matrix: its rows' factors} (`roles.lstm_gates`,
    `ratecontrol.lstm_row_factors`; `apply_objective`'s ``row_factor``) where
    `_weighs_rows`; none where the gates weigh alike
    (every row as any matrix's)."""
    if not _weighs_rows(objective, target) or len(set(ratecontrol.LSTM_GATE_WEIGHTS)) == 1:
        return {}
    shapes = {name: weights.info(name).shape for name in weights.names}
    return {name: lstm_row_factors(hidden)
            for name, hidden in lstm_gates(shapes).items()}


def _check_column_factors(weights: ModelWeights, factors: Mapping[str, np.ndarray] | None,
                          target: Target, calibration: object, ray: str | bool | None
                          ) -> dict[str, np.ndarray]:
    """The column factors (`compress_model`) as the float32 values stored, checked."""
    if not factors:
        return {}
    if not target.whole_model or calibration or ray is not False:
        raise InvalidInputError("column factors apply to whole-model bits-per-weight, SNR "
                                "and PSNR targets, without calibration or Ray.")
    checked = {}
    for name, value in factors.items():
        if name not in weights.names:
            raise InvalidInputError(f"column factors name {name!r}, which the model lacks.")
        info = weights.info(name)
        columns = math.prod(info.shape[1:])
        value = np.asarray(value, dtype=np.float64).astype(np.float32)
        if coding(info) in ("exact", "relative", "bounded") or info.ndim < 2 \
                or value.shape != (columns,):
            raise InvalidInputError(f"column factors apply to the columns of a weight the "
                                    f"rate control codes: {name} ({info.role}, "
                                    f"{tuple(info.shape)}) got {value.shape}.")
        if not column_factors_fit(value):
            raise InvalidInputError(f"the column factors of {name} must lie within "
                                    "[2^-16, 2^16].")
        checked[name] = value
    return checked


def _check_calibration(weights: ModelWeights,
                       calibration: Mapping[str, np.ndarray] | Calibration | None,
                       target: Target) -> Mapping[str, np.ndarray] | Calibration:
    """The calibration Hessians, checked against the model's tensors (a sequential
    calibration's names only: its Hessians are checked as they are measured)."""
    if calibration is None or (isinstance(calibration, Mapping) and not calibration):
        return {}
    if not target.rate_distortion:
        raise InvalidInputError("calibration applies to bits-per-weight, SNR and PSNR targets.")
    if not isinstance(calibration, Mapping):
        missing = sorted(set(calibration.names) - set(weights.names))
        if missing:
            raise InvalidInputError(f"calibration names {missing[0]!r}, which the model lacks.")
        return calibration
    checked = {}
    for name, hessian in calibration.items():
        if name not in weights.names:
            raise InvalidInputError(f"calibration names {name!r}, which the model lacks.")
        shape = weights.info(name).shape
        columns = math.prod(shape[1:]) if len(shape) >= 2 else 0
        hessian = np.asarray(hessian, dtype=np.float64)
        if len(shape) < 2 or hessian.shape != (columns, columns):
            raise InvalidInputError(f"the calibration of {name} is {hessian.shape}; its shape "
                                    f"{tuple(shape)} needs ({columns}, {columns}).")
        checked[name] = hessian
    return checked


def _section_bytes(coded: tuple[dict, dict[str, bytes]]) -> int:
    return sections_bytes(coded[1])


def _smallest_within(tensor: torch.Tensor, name: str, tc: TensorCandidates,
                     error: float) -> tuple[dict, dict[str, bytes]]:
    """The candidate with the fewest bytes that keeps every element within ``error``."""
    best = None
    for candidate in tc.candidates:
        if candidate.transform is not None or candidate.factored is not None:
            continue  # a transform's coefficient error does not bound each weight's; a
            # factored candidate's factors follow a step, not an error bound
        coded = encode_tensor(tensor, name=name, max_abs_error=error,
                              prediction=candidate.prediction)
        if best is None or _section_bytes(coded) < _section_bytes(best):
            best = coded
    return best


def _meets_tensor(entry: dict, target: Target, peak: float, signal: float) -> bool:
    mse = entry.get("stats", {}).get("mse", 0.0)
    n = math.prod(entry["shape"])
    if mse == 0:
        return True
    value = decibels(signal, mse * n) if target.kind == "snr" else decibels(peak * peak, mse)
    return value >= target.value


def _meet_per_tensor(tensor: torch.Tensor, name: str, tc: TensorCandidates, target: Target,
                     per_row: bool, hessian: np.ndarray | None = None
                     ) -> tuple[dict, dict[str, bytes]]:
    """Code one tensor at about the largest step whose measured SNR/PSNR meets the target:
    the estimate's step (scalar rounding; the trellis where it pays), shrunk by 3% until
    the target holds, or grown by 3% while it still holds (the trellis beats the estimate)."""
    choice = trellis_choice(tc, single_tensor_choice(tc, target, per_row))

    def scaled(factor: float) -> Choice:
        return replace(choice, step=choice.step * factor, factor_step=None
                       if choice.factor_step is None else choice.factor_step * factor)

    def meets(coded: tuple[dict, dict[str, bytes]]) -> bool:
        return coded[0]["representation"] == "raw" or _meets_tensor(coded[0], target,
                                                                    tc.peak, tc.signal)

    coded = _encode_choice(tensor, name, choice, hessian, zero_dead=False)
    if meets(coded):
        for _ in range(40):
            if coded[0]["representation"] == "raw":
                return coded
            choice = scaled(1.03)
            larger = _encode_choice(tensor, name, choice, hessian, zero_dead=False)
            if not meets(larger) or _section_bytes(larger) > _section_bytes(coded):
                return coded
            coded = larger
        return coded
    for _ in range(40):
        choice = scaled(0.97)
        coded = _encode_choice(tensor, name, choice, hessian, zero_dead=False)
        if meets(coded):
            return coded
    return encode_tensor(tensor, name=name, lossless=True)


def _coded_ratios(candidates: Sequence[TensorCandidates], allocation: Allocation,
                  coded: Mapping[str, tuple[dict, dict[str, bytes]]]) -> dict[str, float]:
    """Each coded tensor's measured bits over the estimate of its choice (what
    `_meet_whole_model` scales the estimates by after a coding; `bench/coding_rounds.py`
    records them)."""
    ratios = {}
    for tc in candidates:
        estimate = allocation.choices[tc.info.name].bits
        coded_bits = 8.0 * _section_bytes(coded[tc.info.name])
        if estimate > 0 and coded_bits > 0:
            ratios[tc.info.name] = coded_bits / estimate
    return ratios


def _fill_between(coder: _Coder, candidates: Sequence[TensorCandidates], held: Allocation,
                  held_bytes: int, missed_coded: Mapping[str, tuple[dict, dict[str, bytes]]],
                  missed: Allocation, target: Target, budget: float,
                  file_size: Callable[[], int]) -> None:
    """A size target's budget filled between two measured codings: ``coder.coded`` (the
    largest under the budget, ``held``'s, ``held_bytes``) takes tensors' codings from
    ``missed_coded`` (the smallest measured over it, ``missed``'s), the most of the
    objective's error saved per real byte first, while the file holds the budget
    (`ratecontrol.fill_budget` on the two codings' section bytes). Each round's
    correction of the estimates lands anywhere within a few tenths of a percent under the
    budget (MiniLM at 3 bits per weight: 0.9933 of it after a round 0.0001 over);
    between two real codings nothing is estimated but the error saved. A tensor coded
    against another (``reference+residual``) and the one it refers to keep ``held``'s
    coding, as do tensors coded in either by a sequential calibration (not called then).
    The file is measured at the end, with the header as written; over the budget, the
    held coding is kept."""
    kept = coder.coded
    fixed = set()
    for allocation in (held, missed):
        for name, choice in allocation.choices.items():
            if _refers(choice):
                fixed.update((name, choice.candidate.prediction.params["name"]))
    movable = [tc for tc in candidates if tc.info.name not in fixed
               and tc.info.name in missed_coded and tc.info.name in kept]

    def coding(name: str, choice: Choice) -> tuple[dict, dict[str, bytes]]:
        return missed_coded[name] if choice is missed.choices[name] else kept[name]

    def bits(name: str, choice: Choice) -> float:
        return 8.0 * _section_bytes(coding(name, choice))

    base = 8.0 * held_bytes - sum(bits(tc.info.name, held.choices[tc.info.name])
                                  for tc in movable)

    def excess(a: Allocation) -> float:
        return base + sum(bits(tc.info.name, a.choices[tc.info.name]) for tc in movable) \
            - 8.0 * budget * (1 - FILL_HEADER_SLACK)

    filled = fill_budget(movable, held, missed, excess, target, bits)
    if filled is held:
        return
    moved = {tc.info.name for tc in movable}
    coder.coded = {name: coding(name, filled.choices[name]) if name in moved else value
                   for name, value in kept.items()}
    if file_size() > budget:
        coder.coded = kept


def _meet_whole_model(weights: ModelWeights, coder: _Coder,
                      candidates: list[TensorCandidates], target: Target, per_row: bool,
                      metadata: Mapping[str, str], report: Progress,
                      runner: Runner, files: Sequence[tuple[dict, bytes]] = (),
                      blocked: Collection[str] = frozenset()) -> None:
    """Solve the global step on the tensors' rate–distortion curves, code, measure, and
    correct until the measured whole-model figure meets the target.

    Each tensor's curve (`ratecontrol.rate_curve`) was measured in its analysis task; the
    step is solved on them here and checked on the estimates (`solve_on_curves`), so that
    the driver evaluates a few allocations, not a bisection's worth per round. A size
    target is corrected per tensor: after a coding, each coded tensor's estimates are
    scaled by how far its coding measured from them (the trellis and the coder's models
    land above or below scalar rounding's ideal code lengths by different amounts per
    tensor), and the exact tensors and the header are measured. (Scaling the whole budget
    instead charges every miss of the fixed part again to the coded tensors, and starves
    them.)
    """
    exact_names = [n for n in coder.coded]
    exact_bytes = sum(_section_bytes(coder.coded[n]) for n in exact_names)
    exact_signal = sum(coder.signal.get(n, 0.0) for n in exact_names)
    exact_count = sum(math.prod(coder.coded[n][0]["shape"]) for n in exact_names
                      if n in coder.signal)
    header_bytes = PREFIX.size + HEADER_BYTES_PER_TENSOR * len(weights)
    goal = target.value  # what the estimates aim at; corrected after each measurement
    budget_bits = target.value * weights.total_numel if target.kind == "bits_per_weight" else 0
    # Measured bits of each coded tensor over its estimate (1 until it is coded).
    ratios = {tc.info.name: 1.0 for tc in candidates}
    # The best coding so far and its bytes: for a size target the largest file within it,
    # for an SNR/PSNR target the fewest coded bytes that meet it.
    best: dict[str, tuple[dict, dict[str, bytes]]] | None = None
    best_bytes = measured = None
    # A size target's smallest coding measured over it, and the allocations of both: the
    # budget between them is filled tensor by tensor from their real bytes at the end
    # (`_fill_between`).
    over: tuple[dict[str, tuple[dict, dict[str, bytes]]], Allocation] | None = None
    over_bytes = best_allocation = None
    # GPTQ's symbols cost more than the estimates' rounding, the more so at coarser steps:
    # the correction converges from above, and needs more rounds.
    for round_ in range(MEASURE_ROUNDS * (2 if coder.calibration else 1)):
        if target.kind == "bits_per_weight":
            fixed = 8.0 * (exact_bytes + header_bytes)
            # A little more margin each round, so that the rounds cannot cycle.
            margin = 1.0 + 0.002 * round_

            def excess(a: Allocation, fixed: float = fixed, margin: float = margin) -> float:
                coded = sum(ratios[name] * c.bits for name, c in a.choices.items())
                return coded * margin + fixed - budget_bits

            tolerance = SOLVE_FILL * budget_bits
        else:
            index = 0 if target.kind == "snr" else 1

            def excess(a: Allocation, goal: float = goal, index: int = index) -> float:
                return goal - pooled_figures(candidates, a, exact_signal, exact_count)[index]

            tolerance = 0.5 * SNR_TARGET_SLACK_DB

        report("allocating", 0, 1)
        if round_:  # the samples were dropped while the last allocation was coded
            dropped = [tc for tc in candidates
                       if any(c.sample is None and c.factored is None
                              for c in tc.candidates)]
            for tc, sample in ((dropped[i], sample) for i, sample in _largest_first(
                    runner, _sample, [(tc.info.name,) for tc in dropped],
                    [tc.info.numel for tc in dropped])):
                for candidate in tc.candidates:
                    if candidate.sample is None and candidate.factored is None:
                        candidate.sample = sample
                coder.spill_samples(tc)
                del sample
                _give_back_free_memory()
        allocation = solve_on_curves(candidates, excess, per_row, target,
                                     target.kind == "bits_per_weight", tolerance)
        # A row-blocked tensor's samples are kept (a few, each at most 2^20 elements):
        # taking them again would read the whole tensor in one task.
        kept = {tc.info.name: [c.sample for c in tc.candidates] for tc in candidates
                if tc.info.name in blocked}
        drop_samples(candidates)  # the largest tensor's coding need not sit on top of them
        for tc in candidates:
            for candidate, sample in zip(tc.candidates, kept.get(tc.info.name, ()),
                                         strict=False):
                candidate.sample = sample
        _give_back_free_memory()
        # A reference's tensor after the one it refers to, on that one's coding.
        whole = [tc for tc in candidates if tc.info.name not in blocked
                 and not _refers(allocation.choices[tc.info.name])]
        zero_dead = target.kind == "bits_per_weight"
        if isinstance(coder.calibration, Mapping):
            # Every coding at once, the largest first, placed as they complete (kept in
            # the spill as they came: added in model order here).
            for name, kept in _code_round(runner, coder, [
                    (tc.info, _without_sample(allocation.choices[tc.info.name]),
                     coder.hessian(tc.info.name)) for tc in whole], [
                    (tc.info, _without_sample(allocation.choices[tc.info.name]))
                    for tc in candidates if tc.info.name in blocked], zero_dead, report,
                    len(candidates)):
                coder.coded[name] = kept
        else:  # a sequential calibration: each tensor's H after the ones before are coded
            for i, (name, (coded, share)) in enumerate(zip(
                    (tc.info.name for tc in whole), runner.map(
                        _encode, ((tc.info.name,
                                   _without_sample(allocation.choices[tc.info.name]),
                                   coder.hessian(tc.info.name), zero_dead) for tc in whole)),
                    strict=True)):
                report("encoding", i, len(candidates))
                coder.add(name, coded)
                coder.keep_zeroed(coded, coder.coded[name], share)
        for tc in candidates:
            choice = allocation.choices[tc.info.name]
            if _refers(choice):
                coder.add(tc.info.name, _encode_reference(weights, coder, tc.info.name, choice,
                                                          target.kind == "bits_per_weight"))
        report("encoding", len(candidates), len(candidates))
        entries, sections = coder.entries()
        size = dna_file_size(entries, sections, metadata=metadata, files=files)
        header_bytes = size - sum(sections_bytes(s) for s in sections)
        if target.kind == "bits_per_weight":
            measured = 8.0 * size / weights.total_numel
            ratios.update(_coded_ratios(candidates, allocation, coder.coded))
            if measured <= target.value:
                if best_bytes is None or size > best_bytes:
                    best, best_bytes = dict(coder.coded), size
                    best_allocation = allocation
                if measured >= SIZE_TARGET_FILL * target.value:
                    break
            elif over_bytes is None or size < over_bytes:
                over, over_bytes = (dict(coder.coded), allocation), size
        else:
            snr, psnr = coder.figures()
            measured = snr if target.kind == "snr" else psnr
            if measured >= target.value:
                coded_bytes = size - header_bytes  # every tensor's sections
                if best_bytes is None or coded_bytes < best_bytes:
                    best, best_bytes = dict(coder.coded), coded_bytes
                if measured - target.value <= SNR_TARGET_SLACK_DB:
                    break
            # The estimates assume scalar rounding: the trellis lands above them, so the
            # goal moves down as well as up.
            goal += target.value - measured + 0.01
    if best is not None:
        coder.coded = best
        if over is not None and isinstance(coder.calibration, Mapping):
            _fill_between(coder, candidates, best_allocation, best_bytes, *over, target,
                          budget_bits / 8, lambda: dna_file_size(
                              *coder.entries(), metadata=metadata, files=files))
        return
    raise InvalidInputError(
        f"could not meet {target.describe()}: the closest coding measured {measured:.4g}. "
        + ("Ask for more bits per weight." if target.kind == "bits_per_weight"
           else "Ask for a lower target.")
    )


def decompress_model(path: str | Path, output: str | Path, *, overwrite: bool = False,
                     progress: Progress | None = None,
                     workers: int | None = 1) -> tuple[int, int]:
    """Decode every tensor of a .dna file and write them in the form ``output`` names
    (`weightdna.codec.options.DECOMPRESS_FORMS`): ``X.safetensors``, ``X.pt`` (a torch state
    dict), ``DIR/`` (a model folder: the weights, sharded as the source was, and the stored
    files) or ``X.onnx`` (the stored ONNX graph with its weights); returns (tensors, bytes
    written).

    Safetensors and folders stream: each tensor is decoded just before its bytes are
    written and dropped after, so memory follows the largest tensor, not the model. Every
    file appears whole or not at all, and a folder's files all or none (`atomic_folder`).
    ``workers`` (2 or more; one safetensors file only): that many processes decode tensors
    side by side, each writing its bytes into their place in the file
    (`weightdna.codec.workers`): the same file. None: every core for a
    file of PARALLEL_DECODE_WEIGHTS or more, else this process."""
    form = output_form(output, DECOMPRESS_FORMS)  # before Path() drops a trailing slash
    path, output = Path(path), Path(output)
    if form != FOLDER:
        _check_paths(path, output, overwrite)
    check_output(f"{output}{os.sep}" if form == FOLDER else output, overwrite, {form: ""})
    dna = read_dna_file(path)
    if form == FOLDER:
        _, size = write_folder(dna, output, overwrite, progress)
    elif form in (".pt", ".pth"):
        size = write_torch_file(dna, output, overwrite, progress)
    elif form == ".onnx":
        size = write_onnx_file(dna, output, overwrite, progress)
    else:
        if workers is None:  # every core where they pay for starting them
            total = sum(math.prod(entry["shape"]) for entry in dna.entries)
            workers = default_workers() if total >= PARALLEL_DECODE_WEIGHTS else 1
        if workers > 1 and can_share_output() and "__metadata__" not in dna.names:
            report = progress or (lambda stage, done, total: None)
            decompress_in_parallel(dna, output, safetensors_metadata(dna), overwrite, report,
                                   workers)
            size = output.stat().st_size
        else:
            size = write_safetensors_file(dna, output, overwrite, progress)
    if progress is not None:
        progress("decoding", len(dna.names), len(dna.names))
    return len(dna.names), size
