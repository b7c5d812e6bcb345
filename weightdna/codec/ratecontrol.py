"""Rate control: per tensor the representation and step that meet a target at the fewest bits.

The model used. A uniform quantiser of step Δ followed by an entropy coder gives, at high
rate, a distortion of Δ²/12 per weight whatever the distribution, and the rate falls by
one bit per weight when Δ doubles. So the slope dR/dD of every tensor is −6 / (ln 2 · Δ²)
bits per unit of squared error, and bits are spread over tensors at the least total size
for a total squared error when every tensor has the same slope: the same step Δ on the raw
scale (for MSE). With a sensitivity s_t per tensor (the error of tensor t counts s_t
times), the step is Δ_t = Δ / √s_t; the pooled PSNR, which normalises each tensor by its
max |w|, is the case s_t = 1 / max|w_t|², so Δ_t = Δ · max|w_t|.

At that step each tensor takes the candidate — plain quantisation, a low-rank prediction
plus residual, a DNA plus residual, a sum of Kronecker products plus residual, the
coefficients of a DCT or DFT of each row (orthonormal: their error is the weights'), or raw
bytes — and the rounding deadzone (0, 0.1 or
0.2: rounding towards zero saves bits at low rates) with the least Lagrangian cost
``bits + λ_t · squared error``, λ_t = 6 / (ln 2 · Δ_t²): at low rates the distortion is
measured, not assumed to be Δ²/12. The estimates are ideal code lengths of the symbols,
on at most 2^20 sampled elements per tensor. Each tensor's estimates are probed once, at
every octave of the global Δ (`rate_curve`, in the tensor's analysis task, beside the
other tensors'); one global Δ is then solved on these curves until the whole-model
target holds and checked on the estimates themselves (`solve_on_curves`: a few
allocations); where the estimates jump across a size target (a tensor's choice changing
with the step), the budget below the jump is filled tensor by tensor from the step above
it (`fill_budget`). The choice is coded for real (`weightdna.codec.compress`), and the step
corrected with each tensor's measured-over-estimated ratio until the measured figures
meet the target (one correction, usually).

The objective. Pooled MSE (``objective="mse"``, s_t = 1) spends bits where the energy is:
a tensor of large weights beside one of small weights gets the same step, and the small
one is rounded to nothing while the pooled SNR stays high. ``"relative"`` counts each
output row's error relative to its own mean square (with no data, the error of a row's
outputs relative to their size, for inputs of equal variance): weight w_r = 1/ms_r per
element of row r. The default, ``"layer"``, weighs the same by 1/N_t (N_t the tensor's
elements): each tensor's mean relative row error counts once, whatever its size, as a
layer's relative output error adds to the network's once, so a 144-weight first conv is
not rounded to noise to save bits that a 5,120-weight classifier would spend. Measured on
the model panel (`bench/panel.py`, BENCHMARKS.md) it keeps function best of the three.
Where rows differ enough in scale that per-row steps ∝ √ms_r pay for their side
information (high-rate gain ½·N·log₂(AM(w)/GM(w)) bits against PER_ROW_MARGIN times
what the steps take in the file, `apply_objective`), the tensor gets them; else one step
Δ/√s_t.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numba
import numpy as np
import torch

from weightdna.codec import factored as factored_kernels
from weightdna.codec.options import CANDIDATES, OBJECTIVES, TARGET_KINDS
from weightdna.codec.prediction import (
    Prediction,
    dna_prediction,
    lowrank_prediction,
    singular_values,
)
from weightdna.codec.quantize import MAX_SYMBOL, as_rows, round_symbols, rows_per_block
from weightdna.codec.rowsteps import stored_bits
from weightdna.codec.separable import (
    rearrange,
    separable_looking,
    separable_prediction,
)
from weightdna.codec.transform import compacting_transforms, forward
from weightdna.coords import matrix_shape
from weightdna.dna.metrics import decibels
from weightdna.errors import CorruptFileError, InvalidInputError
from weightdna.weights import TensorInfo

SAMPLE_ELEMENTS = 1 << 20
# Elements of a whole-tensor float64 figure (|w|, a prediction, a residual) computed at a
# time: temporaries of 2 MiB, the size of the encoder's (they reuse each other's room).
BLOCK_ELEMENTS = 1 << 18
# Cheap tests for structure: a low-rank candidate needs a predicted gain (high-rate,
# Gaussian: ½·N·log₂(E/E_res) bits) above its factors' cost; a DNA is fitted only where
# neighbouring weights along a row or column correlate at least this much.
DNA_MIN_CORRELATION = 0.5
DNA_MIN_ELEMENTS = 4096
# Bisection of log Δ; the steps tried span this many octaves below max |w|.
BISECTION_STEPS = 18
OCTAVES_BELOW_PEAK = 24
LN2 = math.log(2.0)
# The tensors' rate–distortion curves (`rate_curve`): estimates every CURVE_OCTAVES of the
# global step, down to CURVE_MAX_BITS bits per weight (or a bits-per-weight target plus
# CURVE_HEADROOM_BITS); the global step is bisected CURVE_BISECTIONS times on them, then
# checked on the estimates at most SOLVE_CHECKS times (`solve_on_curves`), and a size
# target's budget left below a jump filled from the finer check (`fill_budget`).
CURVE_OCTAVES = 1.0
CURVE_MAX_BITS = 24.0
CURVE_HEADROOM_BITS = 10.0
CURVE_BISECTIONS = 40
SOLVE_CHECKS = 4
DEADZONES = (0.0, 0.1, 0.2)
# Where the trellis (dependent quantisation) replaces scalar rounding: tensors large enough
# to pay for its context models (2 or more) in the header, at rates where it gains
# (measured on MiniLM's matrices: from about 1 bit per weight up; below ½ bit scalar
# rounding with a deadzone does better on Laplace-like data).
TRELLIS_MIN_ELEMENTS = 1 << 12
TRELLIS_MIN_BITS = 0.5
# A row whose mean square is this far below the median row's counts as this far below (an
# all-zero row would otherwise ask for a step of 0). The median, not the mean: a few rows
# 10³× larger would lift a mean-based floor above every other row.
ROW_FLOOR = 1e-4
# Per-row steps must gain this many times the bits they take in the file: on a grid
# (`weightdna.codec.rowsteps.stored_bits`, measured on the steps themselves), where float32
# steps took 32 bits a row.
PER_ROW_MARGIN = 2.0
# "layer": a tensor's error weighed by 1/N_t^LAYER_EXPONENT (1: once per tensor). 0.5 was
# measured worse on the panel at format version 4: MiniLM 0.969 against 0.976 at 3
# bits/weight, the digits CNN 83.6% against 89.7% at 2 (BENCHMARKS.md, "Function on the
# model panel"); so were 0.75 and 0.5 on the unseen panel at 2–4 (BENCHMARKS.md, "Tensor
# weights between layer and relative").
LAYER_EXPONENT = 1.0
# How "layer" and "relative" weigh a tensor's rows against each other: row r's error
# relative to ms_r^ROW_EXPONENT · ms_t^(1 − ROW_EXPONENT) (ms_r its mean square, ms_t the
# tensor's): 1 relative to the row's own, 0 to the tensor's (rows alike: no per-row
# steps), 0.5 between. 1 is kept: at 0.5 the BatchNorm CNN with outlier channels and the
# ONNX detector collapsed at 2 bits per weight (16% and 10% accuracy; ms_t is the outlier
# rows'), and silero lost 1–4 points; at 0 silero lost 7–12 (BENCHMARKS.md, "Per-row steps
# at 2 bits per weight", 2026-12-05). ROW_FLOOR = 1 (rows under the median weighed as the
# median row) was measured there too: ocr −2.9 points at 3 bits per weight; not adopted.
ROW_EXPONENT = 1.0
# Where the objective grants per-row steps: "high-rate", where the high-rate gain passes
# PER_ROW_MARGIN × their stored bits (`apply_objective`); "operating", there and only
# where they also cost less than one step at the step `choose` is asked for (both judged
# by the objective's row-weighted error). Measured, not adopted: on the unseen models'
# tensors per-row steps win at every step coding them at 0.6–6 bits per weight, so no
# file changes at the panel's rates; one step wins only where a tensor codes to almost
# nothing (same section of BENCHMARKS.md).
ROW_STEPS_RULE = "high-rate"
# How the rows (output channels) of a kernel that a BatchNorm follows are weighed
# (`batchnorm_row_weights`; the BatchNorm found by `ModelWeights.batchnorms`): "gain", the
# error of channel c counts γ_c²/(var_c + ε) (its error as the BatchNorm passes it on:
# scaled by the gain over the running standard deviation, the channel's real output
# spread, which data gave and the model stores); "variance", 1/(var_c + ε); "off", as
# any tensor's rows (relative to each row's own mean square). A depthwise row of 9 or 25
# weights can have a mean square like its neighbours' and a far smaller output (a kernel
# summing to about 0 on smooth inputs); its own mean square hides that, the running
# variance does not. Measured, not adopted ("off" is the default: every file as before):
# "gain" kept the angle classifier's calls at 3 bits per weight 71.3% against 68.8% (the
# mean of targets 2.95/3/3.05; the judge swings 15–20 points between them), the text
# recognizer's lines at 4 67.1% against 68.8%, the BatchNorm CNNs the same or one sample
# fewer (BENCHMARKS.md, "Small conv models at 3 bits per weight", 2026-12-05).
# "depthwise": "gain" for kernels of one input channel an output channel (a depthwise
# conv's k×k rows of 9 or 25 weights, `depthwise_kernel`), the others' rows as under
# "off". Measured on the angle classifier at 3 bits per weight with the ONNX default's
# bias correction, the mean of seven targets 2.925–3.075: "depthwise" 83.5%, "gain"
# 84.1%, "off" 81.0% of the calls kept, each target's figure scattered by 6–10 points
# (standard deviation) about its mean: inside the noise, not adopted (BENCHMARKS.md, "The
# angle classifier at 3 bits per weight: stop 30's drop was the judge's swing"). With the
# bias correction on BatchNorm-matched inputs (the ONNX default since), over fourteen
# targets 2.9–3.1: "off" 84.07%, "depthwise" +0.57 ± 1.37, "gain" +0.24 ± 1.13 (paired,
# standard error; BENCHMARKS.md, "The BatchNorm row rules on the angle classifier with the
# BatchNorm-matched bias correction").
BN_ROWS = "off"
BN_ROW_RULES = ("off", "gain", "variance", "depthwise")
# How the rows of an LSTM's gate matrices (`weightdna.weights.roles.lstm_gates`: input,
# forget, cell and output gates of H rows each) weigh their relative error against each
# other under "layer" and "relative" (`apply_objective`'s ``row_factor``). A gate
# pre-activation's error reaches the cell state through the gate's nonlinearity: the
# cell gate's through tanh (slope 1 at 0), the others' through a sigmoid (slope ¼ at 0),
# times a gate value or the old cell state; so the cell gate's rows count more. Measured
# on Silero VAD at 2 bits per weight (the mean of targets 1.95/2/2.05, share of the
# original's speech decisions kept): (1, 1, 4, 1) 85.47% against 82.24% with rows alike;
# (1, 1, 8, 1) 84.98%, (1, 1, 16, 1) 83.04%, (1, 2, 8, 1) 84.39%; every tensor of the LSTM
# 2× 82.47%, 4× 76.67%, its recurrent matrix 4× 82.11% (BENCHMARKS.md, "Silero VAD at 2
# bits per weight: the LSTM's gates", 2026-12-06). A model without an LSTM is coded as
# before.
LSTM_GATE_WEIGHTS = (1.0, 1.0, 4.0, 1.0)
BN_EPSILON = 1e-5  # ONNX's and PyTorch's default BatchNorm epsilon
# Objectives for measuring tensor weights between "layer" and "relative", not in OBJECTIVES
# (BENCHMARKS.md, "Tensor weights between layer and relative"): ``layer:α`` (each tensor's
# mean relative error counts N_t^α times, `layer_exponent`) and SHARE (it counts
# max(N_t, N̄) times, N̄ the mean size of the tensors coded at the rate: "relative" for a
# tensor larger than the mean, no smaller tensor counted less than a mean one).
SHARE = "share"
# A floor under each coded tensor's estimated SNR (dB) at a whole-model target (issue 11's
# "a floor on each tensor's SNR"): a tensor that the global step would code below it is
# coded at the coarsest step that keeps it (`floor_cap`: read off its rate–distortion
# curve), and the other tensors share what is left; a floor the size target cannot hold
# is lowered until it fits (`lower_floor`). None: no floor. Measured, not adopted (None
# is the default: every file as before): at 2 bits per weight, the mean of targets
# 1.95/2/2.05, 11 dB kept silero's decisions 86.92% against 81.62% and magika's 88.50%
# against 88.36%, but cost MiniLM at 3 (mean cosine 0.98844, 12 dB 0.98654, against
# 0.98919; the floor is on the raw SNR, not the objective's row-weighted error) and the
# ocr detector at 2 (12 dB: 75.59% against 83.06%, the same three targets)
# (BENCHMARKS.md, "A floor under each tensor's SNR", 2026-12-05).
SNR_FLOOR_DB: float | None = None
FLOOR_BISECTIONS = 20


@dataclass(frozen=True)
class Target:
    """What the user asks for: ``kind`` one of TARGET_KINDS, its ``value``, and whether an
    SNR or PSNR target holds for every tensor (``per_tensor``) or for the whole model."""

    kind: str
    value: float | None = None
    per_tensor: bool = False

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise InvalidInputError(f"unknown target {self.kind!r}; use one of {TARGET_KINDS}.")
        if self.kind == "lossless":
            return
        if self.value is None or not math.isfinite(self.value):
            raise InvalidInputError(f"the {self.kind} target needs a finite value.")
        if self.kind in ("bits_per_weight", "max_abs_error") and self.value <= 0:
            raise InvalidInputError(f"the {self.kind} target must be > 0, not {self.value}.")
        if self.per_tensor and self.kind not in ("snr", "psnr"):
            raise InvalidInputError("per_tensor applies to snr and psnr targets only.")

    @property
    def rate_distortion(self) -> bool:
        """A bits-per-weight, SNR or PSNR target (not max-abs-error or lossless): the
        targets calibration, per-row steps and sensitivities apply to."""
        return self.kind in ("bits_per_weight", "snr", "psnr")

    @property
    def whole_model(self) -> bool:
        """A rate–distortion target for the whole model, met by spreading bits over the
        tensors (one global step; not per tensor)."""
        return self.rate_distortion and not self.per_tensor

    def describe(self) -> str:
        """e.g. ``snr 20 dB (every tensor)``."""
        if self.kind == "lossless":
            return "lossless"
        unit = {"bits_per_weight": " bits/weight", "snr": " dB", "psnr": " dB (MAX = max|w|)",
                "max_abs_error": ""}[self.kind]
        scope = " (every tensor)" if self.per_tensor else ""
        return f"{self.kind} {self.value:g}{unit}{scope}"


@dataclass
class Candidate:
    """One way to code a tensor: a prediction (None: plain quantisation) and the residual."""

    name: str  # "quantized", "lowrank+residual", "dna+residual", "separable+residual",
    # "transform"
    prediction: Prediction | None
    # float32 residual (a transform's: coefficients) at the sampled positions, as (rows,
    # columns); None while dropped (plain quantisation's: `drop_samples`, `resample`); on a
    # compress's driver a `weightdna.codec.spill.SpilledArray` (read with np.asarray)
    sample: np.ndarray | None
    row_peak: np.ndarray  # max |residual| per row (all elements), for per-row steps
    side_bits: float
    transform: str | None = None  # quantise this transform's coefficients (weightdna.codec.
    # transform), which keeps each row's error (orthonormal, along the row)
    # A factored+residual prediction (weightdna.codec.factored), whose factors are quantised
    # at steps that follow the residual's: its sample, row peaks and side bits depend on
    # the step (`Factored.at`); ``sample`` stays None.
    factored: Factored | None = None


@dataclass
class Factored:
    """A kernel's float factors (`weightdna.codec.factored`) and what coding them at a step
    costs: the factors' symbols' ideal bits, and the residual left by their quantised
    product (at the sampled rows, and each row's peak). Kept per step, as the rate control
    asks the same steps of it again (each deadzone, each round). ``values``: the kernel in
    float32, for the estimates (a worker coding the factors is sent none)."""

    factors: dict[str, np.ndarray]
    ranks: tuple[int, int]
    values: np.ndarray | None = None

    CACHED_STEPS = 64

    def __post_init__(self) -> None:
        self.cache: dict[float, Candidate] = {}  # not a field: never stored or sent

    @classmethod
    def of(cls, values: np.ndarray, r: int, s: int) -> Factored:
        """The (r, s) factors of a kernel's float64 ``values``."""
        return cls(factored_kernels.factorise(values, r, s), (r, s),
                   values.astype(np.float32))

    def __getstate__(self) -> dict:
        return {"factors": self.factors, "ranks": self.ranks, "values": None, "cache": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def at(self, step: float) -> Candidate:
        """The candidate coding the residual of the factors quantised for ``step``."""
        found = self.cache.get(step)
        if found is not None:
            return found
        side, restored = 0.0, {}
        for key, factor_step in factored_kernels.factor_steps(self.factors, step).items():
            symbols = np.rint(self.factors[key] / factor_step)
            if not np.abs(symbols).max(initial=0.0) < MAX_SYMBOL / 2:
                side = math.inf
                symbols = np.zeros_like(symbols)
            side += _ideal_bits(symbols.astype(np.int64))
            restored[key] = (symbols * factor_step).astype(np.float32)
        residual = as_rows(self.values - factored_kernels.values(restored, self.values.shape))
        stride = max(1, math.ceil(residual.size / SAMPLE_ELEMENTS))
        found = Candidate("factored+residual", None,
                          np.ascontiguousarray(residual[::stride], dtype=np.float32),
                          np.abs(residual).max(axis=1), side)
        if len(self.cache) >= self.CACHED_STEPS:
            self.cache.clear()
        self.cache[step] = found
        return found


@dataclass
class TensorCandidates:
    """A tensor's candidates and the figures the allocation needs."""

    info: TensorInfo
    candidates: list[Candidate]
    signal: float  # Σ w² over finite elements
    peak: float  # max |w| over finite elements
    scale: float  # numel / sampled elements
    row_ms: np.ndarray | None = None  # mean w² per row (`as_rows`; one figure for < 2-d)
    sensitivity: float = 1.0
    # Per-row step multipliers of the objective (None: one step), AM(1/row_scale²) = 1.
    row_scale: np.ndarray | None = None
    # How the objective weighs the rows: row r's squared error counts 1/row_norm_r²
    # (AM(1/row_norm²) = 1; None: alike). The per-row steps' multipliers where they pay.
    row_norm: np.ndarray | None = None
    # Its rate–distortion curve (`rate_curve`): rows log2 of the global step, estimated
    # bits, estimated squared error; None until probed.
    curve: np.ndarray | None = None
    # The coarsest global log2 step at which the tensor keeps SNR_FLOOR_DB (`floor_cap`);
    # None: no floor binds.
    cap: float | None = None

    def raw_bits(self) -> float:
        """Bits of raw storage (uncompressed: an upper bound, used only to compare)."""
        return 8.0 * self.info.numel * getattr(torch, self.info.dtype).itemsize


@dataclass
class Choice:
    """The candidate and step chosen for a tensor, with the estimated bits and error."""

    candidate: Candidate | None  # None: raw
    step: float | np.ndarray | None
    bits: float
    sse: float
    deadzone: float = 0.0
    quantizer: str = "scalar"  # or "trellis" (weightdna.codec.trellis)
    factor_step: float | None = None  # a factored candidate's: the step its factors follow
    # The objective's squared error (rows weighed, `evaluate`), which `choose` trades
    # against bits; None: the raw ``sse`` (raw storage, the curves' estimates).
    weighted: float | None = None


def _sampled_rows(values: torch.Tensor | np.ndarray) -> tuple[np.ndarray, float]:
    """At most SAMPLE_ELEMENTS whole rows (evenly spaced) as float32 (non-finite elements 0),
    and the scale-up; from the tensor or its `_finite_values`, alike."""
    numel = math.prod(values.shape)
    stride = max(1, math.ceil(numel / SAMPLE_ELEMENTS))
    rows = as_rows(values)[::stride]
    if isinstance(rows, torch.Tensor):  # float64 values are `_finite_values` already
        rows = _finite_values(rows)
    sample = rows.astype(np.float32)
    return sample, numel / max(sample.size, 1)


def _lowrank_rank(values: np.ndarray, s: np.ndarray) -> int:
    """The rank whose predicted high-rate gain minus float16 factor cost is largest, or 0."""
    return _lowrank_gain(values, s)[0]


def _lowrank_gain(values: np.ndarray, s: np.ndarray) -> tuple[int, float]:
    """(the rank of `_lowrank_rank`, its predicted net gain in bits)."""
    m, n = matrix_shape(values.shape)
    energy = np.cumsum(s[::-1] ** 2)[::-1]  # energy[k]: Σ of s_i² for i ≥ k
    total = float(energy[0]) if energy.size else 0.0
    if not total > 0:
        return 0, 0.0
    best, best_gain = 0, 0.0
    k = 1
    while k <= len(s) // 2:
        residual = float(energy[k]) if k < len(energy) else 0.0
        gain = 0.5 * values.size * math.log2(total / max(residual, total * 1e-12))
        net = gain - 16.0 * k * (m + n)
        if net > best_gain:
            best, best_gain = k, net
        k *= 2
    return best, best_gain


def _separable(values: np.ndarray) -> Prediction | None:
    """The sum of Kronecker products (`weightdna.codec.separable`) with the largest
    predicted net gain, among the factorisations whose sampled blocks look separable;
    None where none does or none gains."""
    m, n = matrix_shape(values.shape)
    matrix = values.reshape(m, n)
    best, best_gain = None, 0.0
    for m1, n1 in separable_looking(matrix):
        r = rearrange(matrix, m1, n1)
        rank, gain = _lowrank_gain(r, singular_values(r))
        if rank and gain > best_gain:
            best, best_gain = (m1, n1, rank), gain
    if best is None:
        return None
    try:
        return separable_prediction(values, *best)
    except InvalidInputError:
        return None  # factors beyond float16


def _adjacent_correlation(values: np.ndarray) -> float:
    """The larger correlation of neighbouring weights along the row and the column axis,
    over the first rows (at most SAMPLE_ELEMENTS elements)."""
    m, n = matrix_shape(values.shape)
    rows = values.reshape(m, n)[: max(2, SAMPLE_ELEMENTS // max(n, 1))]
    best = 0.0
    for a, b in ((rows[:-1], rows[1:]), (rows[:, :-1], rows[:, 1:])):
        if a.size > 1 and a.std() > 0 and b.std() > 0:
            # corrcoef(a, b) of one (2, N) array, written in place: the same figure as from
            # two flattened copies, with two fewer N-element temporaries.
            pair = np.empty((2, a.size))
            pair[0].reshape(a.shape)[...] = a
            pair[1].reshape(b.shape)[...] = b
            best = max(best, float(np.corrcoef(pair)[0, 1]))
    return best


# `_correlated` decides by its compiled figure only when it is this far from
# DNA_MIN_CORRELATION: its rounding and NumPy's differ by orders of magnitude less.
CORRELATION_MARGIN = 1e-6


def _correlated(values: np.ndarray) -> bool:
    """``_adjacent_correlation(values) >= DNA_MIN_CORRELATION``, the same decision: each
    pair's correlation from one compiled pass over it (`_pair_moments`), not corrcoef's
    copies; `_adjacent_correlation` itself where a figure lies within CORRELATION_MARGIN
    of the threshold or a pair is (nearly) constant, or its variance is lost in its mean's
    rounding (where the two computations may differ by more)."""
    m, n = matrix_shape(values.shape)
    rows = values.reshape(m, n)[: max(2, SAMPLE_ELEMENTS // max(n, 1))]
    decided = False
    for a, b in ((rows[:-1], rows[1:]), (rows[:, :-1], rows[:, 1:])):
        if a.size <= 1:
            continue
        mean_a, mean_b, saa, sbb, sab, flat = _pair_moments(a, b)
        size = float(a.size)
        if flat or not (saa / size > (1e-6 * mean_a) ** 2 + 1e-250
                        and sbb / size > (1e-6 * mean_b) ** 2 + 1e-250):
            return bool(_adjacent_correlation(values) >= DNA_MIN_CORRELATION)
        r = sab / math.sqrt(saa * sbb)
        if not abs(r - DNA_MIN_CORRELATION) > CORRELATION_MARGIN:
            return bool(_adjacent_correlation(values) >= DNA_MIN_CORRELATION)
        decided = decided or r > DNA_MIN_CORRELATION
    return decided


@numba.njit(cache=True, nogil=True)
def _pair_moments(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float,
                                                         float, bool]:
    """(mean of ``a``, mean of ``b``, Σ(a − ā)², Σ(b − b̄)², Σ(a − ā)(b − b̄), whether
    ``a`` or ``b`` holds one value only) of two 2-D arrays of one shape, two passes."""
    rows, columns = a.shape
    sum_a = sum_b = 0.0
    lo_a = hi_a = a[0, 0]
    lo_b = hi_b = b[0, 0]
    for i in range(rows):
        for j in range(columns):
            x, y = a[i, j], b[i, j]
            sum_a += x
            sum_b += y
            lo_a, hi_a = min(lo_a, x), max(hi_a, x)
            lo_b, hi_b = min(lo_b, y), max(hi_b, y)
    mean_a, mean_b = sum_a / a.size, sum_b / a.size
    saa = sbb = sab = 0.0
    for i in range(rows):
        for j in range(columns):
            x, y = a[i, j] - mean_a, b[i, j] - mean_b
            saa += x * x
            sbb += y * y
            sab += x * y
    return mean_a, mean_b, saa, sbb, sab, bool(lo_a == hi_a or lo_b == hi_b)


def _rows_per_block(values: np.ndarray) -> int:
    """Rows of `as_rows` in a block of about BLOCK_ELEMENTS elements."""
    return rows_per_block(as_rows(values).shape[1], BLOCK_ELEMENTS)


def _row_figures(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max |w| and mean w² per row; one figure each for a tensor of fewer than 2 dimensions
    (no per-row steps). One walk, a block at a time: no whole-tensor temporary for |w|."""
    if values.ndim < 2:
        flat = values.reshape(-1)
        blocks = (np.abs(flat[i : i + BLOCK_ELEMENTS]).max(initial=0.0)
                  for i in range(0, flat.size, BLOCK_ELEMENTS))
        peak = np.array([float(max(blocks, default=0.0))])
        row = flat.reshape(1, -1)
        return peak, np.einsum("ij,ij->i", row, row) / max(flat.size, 1)
    rows = as_rows(values)
    if not rows.size:
        return np.zeros(rows.shape[0]), np.zeros(rows.shape[0])
    per_block = _rows_per_block(values)
    peaks, mean_squares = [], []
    for start in range(0, rows.shape[0], per_block):
        block = rows[start : start + per_block]
        mean_squares.append(np.einsum("ij,ij->i", block, block) / rows.shape[1])
        peaks.append(np.abs(block).max(axis=1))
    return np.concatenate(peaks), np.concatenate(mean_squares)


def _predicted_candidate(name: str, prediction: Prediction, values: np.ndarray) -> Candidate:
    """A candidate coding the residual values − prediction: its sample (the rows
    `_sampled_rows` takes) and row peaks, computed a block of rows at a time, so that
    neither the prediction nor the residual of a large tensor is held whole in float64."""
    rows = as_rows(values)
    stride = max(1, math.ceil(values.size / SAMPLE_ELEMENTS))
    samples, peaks = [], []
    for start, predicted in prediction.row_blocks(_rows_per_block(values)):
        residual = np.subtract(rows[start : start + predicted.shape[0]], predicted,
                               out=predicted)
        samples.append(residual[-start % stride :: stride].astype(np.float32))
        peaks.append(np.abs(residual, out=residual).max(axis=1))
    return Candidate(name, prediction, np.concatenate(samples), np.concatenate(peaks),
                     8.0 * prediction.side_bytes)


def _transform_candidate(kind: str, sample: np.ndarray, values: np.ndarray) -> Candidate:
    """A candidate quantising the ``kind`` coefficients of each row: the sample's, and each
    row's max |coefficient|, a block of rows at a time."""
    rows = as_rows(values)
    per_block = _rows_per_block(values)
    peaks = [np.abs(forward(rows[start : start + per_block], kind)).max(axis=1)
             for start in range(0, rows.shape[0], per_block)]
    coefficients = forward(sample.astype(np.float64), kind).astype(np.float32)
    return Candidate("transform", None, coefficients, np.concatenate(peaks), 0.0, kind)


def _finite_values(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    """The tensor as float64, non-finite elements 0 (the encoder stores them exactly on the
    side). A contiguous float64 array is used in place, not copied: a large tensor's values
    are then held once. The zeroing goes a block at a time (no whole-tensor masks)."""
    if isinstance(tensor, np.ndarray) and tensor.dtype == np.float64:
        values = np.ascontiguousarray(tensor)
    else:
        values = np.ascontiguousarray(
            torch.as_tensor(tensor).to(torch.float64, copy=True).numpy())
    flat = values.reshape(-1)
    for start in range(0, flat.size, BLOCK_ELEMENTS):
        block = flat[start : start + BLOCK_ELEMENTS]
        block[~np.isfinite(block)] = 0.0
    return values


def tensor_candidates(
    info: TensorInfo,
    tensor: torch.Tensor | np.ndarray,
    representations: Sequence[str] = CANDIDATES,
    dna_config: object = None,
) -> TensorCandidates:
    """The candidates worth trying for one coded tensor (see the module docstring).
    ``tensor``: the tensor, or its values as a float64 array, then used in place (its
    non-finite elements set to 0)."""
    unknown = set(representations) - set(CANDIDATES)
    if unknown or "quantized" not in representations:
        raise InvalidInputError(
            f"representations must include quantized and come from {CANDIDATES}; "
            f"got {sorted(representations)}."
        )
    values = _finite_values(tensor)
    sample, scale = _sampled_rows(values)
    peaks, mean_squares = _row_figures(values)
    candidates = [Candidate("quantized", None, sample, peaks, 0.0)]
    m, n = matrix_shape(values.shape)
    structured = values.ndim >= 2 and min(m, n) >= 8 and values.size >= DNA_MIN_ELEMENTS
    if structured and "lowrank" in representations:
        rank = _lowrank_rank(values, singular_values(values))
        if rank:
            try:
                prediction = lowrank_prediction(values, rank)
                candidates.append(_predicted_candidate("lowrank+residual", prediction,
                                                       values))
            except InvalidInputError:
                pass  # factors beyond float16: plain quantisation only
    if structured and "separable" in representations:
        prediction = _separable(values)
        if prediction is not None:
            candidates.append(_predicted_candidate("separable+residual", prediction, values))
    if values.ndim >= 2 and "transform" in representations:
        for kind in compacting_transforms(sample):
            candidates.append(_transform_candidate(kind, sample, values))
    if "factored" in representations:
        ranks = factored_kernels.worth_trying(values)
        if ranks is not None:
            candidates.append(Candidate("factored+residual", None, None, peaks, 0.0,
                                        factored=Factored.of(values, *ranks)))
    if structured and "dna" in representations:
        if _correlated(values):  # _adjacent_correlation(values) ≥ DNA_MIN_CORRELATION
            try:
                prediction = dna_prediction(values, dna_config)
                candidates.append(_predicted_candidate("dna+residual", prediction, values))
            except (InvalidInputError, CorruptFileError):  # parameters or output overflow
                pass
    return TensorCandidates(
        info=info,
        candidates=candidates,
        signal=float(np.dot(values.reshape(-1), values.reshape(-1))),
        peak=float(candidates[0].row_peak.max(initial=0.0)),  # max |w|, without a temporary
        scale=scale,
        row_ms=mean_squares,
    )


def with_prediction(tc: TensorCandidates, prediction: Prediction,
                    tensor: torch.Tensor | np.ndarray) -> None:
    """Add to ``tc`` the candidate coding ``tensor``'s residual against ``prediction`` (one
    found across tensors, a reference: `weightdna.codec.reference`)."""
    tc.candidates.append(_predicted_candidate(prediction.representation, prediction,
                                              _finite_values(tensor)))


def check_objective(objective: str) -> None:
    """Refuse an objective not in OBJECTIVES, nor ``layer:α`` (`layer_exponent`)."""
    if (objective not in OBJECTIVES and objective != SHARE
            and layer_exponent(objective) is None):
        raise InvalidInputError(f"unknown objective {objective!r}; use one of "
                                f"{', '.join(OBJECTIVES)}, layer:α (0 ≤ α ≤ 1: each "
                                "tensor counts N^α times, N its elements) or share.")


def layer_exponent(objective: str) -> float | None:
    """The exponent e of ``objective``'s weight 1/N_t^e per element of tensor t: LAYER_EXPONENT
    for "layer", 0 for "relative", 1 − α for ``layer:α`` (0 ≤ α ≤ 1: each tensor's mean
    relative error counts N_t^α times: α = 0 is "layer", α = 1 "relative"; for measuring
    weights between the two, BENCHMARKS.md "Tensor weights between layer and relative");
    None for "mse" or an objective that is none of these."""
    if objective == "layer":
        return LAYER_EXPONENT
    if objective == "relative":
        return 0.0
    head, _, tail = objective.partition(":")
    if head != "layer" or not tail:
        return None
    try:
        alpha = float(tail)
    except ValueError:
        return None
    return 1.0 - alpha if 0.0 <= alpha <= 1.0 else None


def floored_row_ms(row_ms: np.ndarray, ms_t: float) -> np.ndarray:
    """Each row's mean square as the objective counts it: none below ROW_FLOOR × the median
    row's (× 10⁻¹² of the tensor's mean square ``ms_t`` when the median row is 0)."""
    return np.maximum(row_ms, max(float(np.median(row_ms)), ms_t * 1e-12) * ROW_FLOOR)


def batchnorm_row_weights(gain: np.ndarray, variance: np.ndarray,
                          rule: str | None = None) -> np.ndarray | None:
    """The row weights (`apply_objective`'s ``row_weight``) of a kernel whose output
    channels a BatchNorm of ``gain`` γ and running ``variance`` normalises, by ``rule``
    (BN_ROWS when None; "off": None): γ²/(var + ε) or 1/(var + ε) (0 for a channel of
    γ = 0: `apply_objective` floors the rows it weighs). None where the statistics are
    not finite or the variances not all ≥ 0."""
    rule = BN_ROWS if rule is None else rule
    if rule not in BN_ROW_RULES:
        raise InvalidInputError(f"unknown BatchNorm row rule {rule!r}; use one of "
                                f"{', '.join(BN_ROW_RULES)}.")
    gain = np.asarray(gain, dtype=np.float64).reshape(-1)
    variance = np.asarray(variance, dtype=np.float64).reshape(-1)
    if rule == "off" or not (np.all(np.isfinite(gain)) and np.all(np.isfinite(variance))
                             and np.all(variance >= 0)):
        return None
    return (np.ones_like(gain) if rule == "variance" else gain ** 2) / (variance + BN_EPSILON)


def depthwise_kernel(shape: tuple[int, ...]) -> bool:
    """Whether a kernel of ``shape`` reads one input channel for each output channel (a
    depthwise conv, or one on a single-channel input) with a k×k window of more than one
    weight: its rows are whole filters, whose output a BatchNorm after it spreads."""
    return len(shape) >= 3 and shape[1] == 1 and math.prod(shape[2:]) > 1


def lstm_row_factors(hidden: int, gates: Sequence[float] | None = None) -> np.ndarray:
    """The row factors (`apply_objective`'s ``row_factor``) of an LSTM gate matrix of
    4 × ``hidden`` rows: ``gates`` (LSTM_GATE_WEIGHTS when None) repeated over each gate's
    rows."""
    gates = LSTM_GATE_WEIGHTS if gates is None else gates
    return np.repeat(np.asarray(gates, dtype=np.float64), hidden)


def apply_objective(tc: TensorCandidates, objective: str, measured: bool = False,
                    row_weight: np.ndarray | None = None,
                    mean_numel: float | None = None,
                    output_weight: np.ndarray | None = None,
                    row_factor: np.ndarray | None = None) -> None:
    """Set ``tc``'s sensitivity and per-row steps for ``objective`` (module docstring).
    ``measured``: ``tc.sensitivity`` is a measured output sensitivity, which replaces the
    objective's weight of the whole tensor (its rows are still weighed against each
    other). ``row_weight``: how much each row's squared error counts (> 0, one per row of
    `as_rows`; only its ratios matter: it is scaled to a mean of 1), e.g. how often each
    row of a word embedding is read (`weightdna.bert.token_prior`). It replaces the
    objective's weighing of the rows against each other: a row's absolute error counts
    row_weight times, relative to the tensor's mean square under "layer" and "relative"
    (so a uniform error costs what it did), not to the row's own. The tensor gets per-row
    steps where they pay, as for the objective's own. Why not relative to the row's own:
    a word embedding's row is added to the position and type embeddings and normalised
    with them, so its error counts against that sum, not against the row; MiniLM at 3
    bits per weight, no data: 0.9861 (rows by prior^0.65 over their own mean square) →
    0.9877 (BENCHMARKS.md, "Word-embedding rows by their absolute error"). The rows'
    weights are kept as ``tc.row_norm`` whether or not the tensor gets per-row steps (the
    objective's rows weighed as ms_r^ROW_EXPONENT · ms_t^(1 − ROW_EXPONENT)).
    ``mean_numel``: N̄ for the SHARE objective (the tensor's own size when None).
    ``output_weight``: how much a row's absolute error counts at the layer's output, from
    the BatchNorm after it (`batchnorm_row_weights`; ≥ 0, one per row): under "layer" and
    "relative" row r's relative error counts q_r = output_weight_r · ms_r (none below
    ROW_FLOOR × the median q: a channel the BatchNorm switches off still gets a step),
    over the mean q: the tensor counts as much as it would if every row's relative error
    were the same, and its rows are weighed by what the BatchNorm makes of their error.
    Not relative to the tensor's mean square: a few outlier channels (their statistics
    scaled with them) would set it, and the other rows would be coded to nothing. Not
    under "mse", nor beside ``row_weight`` (which wins). ``row_factor``: how much each
    row's relative error counts against the others' (> 0, one per row; an LSTM's gates,
    `lstm_row_factors`): the ``output_weight`` of row_factor_r / ms_r; not beside
    ``output_weight`` (which wins)."""
    check_objective(objective)
    tc.row_scale = tc.row_norm = None
    ms_t = tc.signal / max(tc.info.numel, 1)
    if not ms_t > 0 or tc.row_ms is None:
        return
    if (row_factor is not None and output_weight is None
            and np.shape(row_factor) == tc.row_ms.shape):
        output_weight = np.asarray(row_factor, dtype=np.float64) / floored_row_ms(tc.row_ms,
                                                                                  ms_t)
    if objective == "mse" and row_weight is None:
        return
    if row_weight is not None:  # a row's absolute error counts row_weight times
        row_weight = np.asarray(row_weight, dtype=np.float64)
        ms = ((1.0 if objective == "mse" else ms_t)
              / (row_weight / float(np.mean(row_weight))))
    elif output_weight is not None and objective != "mse" and float(
            np.median(output_weight)) > 0:
        row_ms = floored_row_ms(tc.row_ms, ms_t)
        q = np.asarray(output_weight, dtype=np.float64) * row_ms
        q = np.maximum(q, float(np.median(q)) * ROW_FLOOR)
        ms = row_ms * (float(q.mean()) / q)
    else:
        ms = (np.ones_like(tc.row_ms) if objective == "mse"
              else floored_row_ms(tc.row_ms, ms_t) ** ROW_EXPONENT * ms_t ** (1 - ROW_EXPONENT))
    weight = 1.0 / ms
    mean = float(weight.mean())
    if not measured and objective != "mse":
        # "layer": each tensor's mean relative error counts once, whatever its size.
        if objective == SHARE:  # counted max(N, N̄) times: max(1, N̄/N) per element
            tc.sensitivity *= mean * max(1.0, (mean_numel or 0.0) / max(tc.info.numel, 1))
        else:
            exponent = layer_exponent(objective)
            tc.sensitivity *= mean / (tc.info.numel ** exponent if exponent else 1)
    if ms.size < 2:
        return
    gain_bits = 0.5 * tc.info.numel * math.log2(mean / math.exp(float(np.log(weight).mean())))
    row_scale = np.sqrt(mean * ms)
    tc.row_norm = row_scale
    if gain_bits > PER_ROW_MARGIN * stored_bits(row_scale):
        tc.row_scale = row_scale


def drop_samples(coded: Sequence[TensorCandidates]) -> None:
    """Drop the samples of plain quantisation (most of what the rate control holds: up to
    4 bytes per weight of the model) while the chosen steps are coded, which needs none of
    them; a further allocation first takes them again from the tensors (`resample`). A
    prediction's residual samples are kept: taking them again would mean evaluating the
    prediction again (a DNA: a network over every element); a transform's coefficients
    too (few tensors have one)."""
    for tc in coded:
        for candidate in tc.candidates:
            if candidate.prediction is None and candidate.transform is None:
                candidate.sample = None


def resample(tc: TensorCandidates, tensor: torch.Tensor) -> None:
    """Take the samples `drop_samples` dropped again from the tensor, as `tensor_candidates`
    took them (the same values: the same code, on the same elements)."""
    for candidate in tc.candidates:
        if candidate.sample is None and candidate.factored is None:
            candidate.sample = _sampled_rows(tensor)[0]


def _ideal_bits(symbols: np.ndarray) -> float:
    """Ideal code length of ``symbols`` under their own histogram, plus a table estimate and
    the stream's ends: the coder's final state (64 bits) and its starting state (32 bits,
    `weightdna.codec.entropy.SENTINEL`)."""
    if symbols.size == 0:
        return 0.0
    flat = symbols.reshape(-1)
    lo = int(flat.min())
    return _counted_bits(np.bincount(flat - lo), flat.size)


def _counted_bits(counts: np.ndarray, size: int) -> float:
    """`_ideal_bits` of ``size`` symbols from their histogram ``counts`` (in symbol order;
    zeros anywhere)."""
    nonzero = counts[counts > 0].astype(np.float64)
    return float(-(nonzero * np.log2(nonzero / size)).sum()) + 24.0 * nonzero.size + 96.0


@numba.njit(cache=True, nogil=True)
def _round_and_count(sample: np.ndarray, divisor: np.ndarray, nearest: bool,
                     shift: np.float32, error: np.ndarray, counts: np.ndarray) -> bool:
    """`evaluate`'s rounding, in float32 as NumPy computes it: scaled = sample /
    divisor[row]; the symbol rint(scaled) (``nearest``) or sign(scaled)·floor(|scaled| +
    ``shift``), ``shift`` = float32(0.5 − deadzone); ``error`` ← (scaled − symbol) ·
    divisor[row]; ``counts[symbol + offset]`` += 1, offset = counts.size // 2. False (the
    caller falls back to NumPy) when a symbol falls outside ``counts``.

    A row at a time in two loops: the arithmetic (no branch, no early exit: compiled to
    vector instructions) with a flag for a symbol outside ``counts``, then, if none is,
    the histogram, into eight sub-histograms in turn when ``counts`` is small beside the
    sample (one bin's increments then seldom wait on each other; added up at the end:
    the same integers). The first loop stores each symbol's bin (symbol + offset) as an
    unsigned index, so the histogram's loop has no offset to add and no negative index to
    wrap around (numba's check for a signed index): 1.6–1.8x faster on MiniLM's samples
    (`bench/kernel_speed.py --only kernel`)."""
    rows, columns = sample.shape
    offset = counts.size // 2
    limit = np.float32(offset)
    bins = np.empty(columns, dtype=np.uint32)  # symbol + offset: no wraparound to check
    lanes = 8 if counts.size * 16 <= sample.size else 1
    spread = (np.zeros((8, counts.size), dtype=np.int64) if lanes == 8
              else counts.reshape((1, counts.size)))
    whole = columns - columns % lanes
    for r in range(rows):
        d = divisor[r]
        inside = True
        if nearest:
            for c in range(columns):
                scaled = np.float32(sample[r, c] / d)
                symbol = np.float32(np.rint(scaled))
                error[r, c] = np.float32(np.float32(scaled - symbol) * d)
                inside &= abs(symbol) <= limit  # NaN: False
                bins[c] = np.uint32(np.int32(symbol) + offset)  # read only if all inside
        else:
            for c in range(columns):
                scaled = np.float32(sample[r, c] / d)
                magnitude = np.float32(np.floor(np.float32(abs(scaled) + shift)))
                symbol = np.float32(np.copysign(magnitude, scaled))  # branch-free sign
                error[r, c] = np.float32(np.float32(scaled - symbol) * d)
                inside &= abs(symbol) <= limit
                bins[c] = np.uint32(np.int32(symbol) + offset)
        if not inside:
            return False
        if lanes == 8:
            for c in range(0, whole, 8):
                for lane in range(8):  # unrolled by the compiler
                    spread[lane, bins[c + lane]] += 1
            for c in range(whole, columns):
                spread[0, bins[c]] += 1
        else:
            for c in range(columns):
                spread[0, bins[c]] += 1
    if lanes == 8:
        for i in range(counts.size):
            total = 0
            for lane in range(8):
                total += spread[lane, i]
            counts[i] += total
    return True


def candidate_steps(tc: TensorCandidates, candidate: Candidate, step: float,
                    per_row: bool, rows: bool = True) -> float | np.ndarray:
    """The step for ``step``: per-row steps proportional to each row's max |residual| with
    ``per_row``, else the objective's per-row steps (`apply_objective`) if it set them and
    ``rows``."""
    if not per_row or candidate.row_peak.size < 2 or candidate.sample.ndim != 2:
        return step if tc.row_scale is None or not rows else step * tc.row_scale
    peak = float(candidate.row_peak.max())
    if peak <= 0:
        return step
    relative = np.maximum(candidate.row_peak / peak, 1e-3)
    return step * relative


@dataclass
class _AtStep:
    """What `evaluate` works out of a candidate and a step before rounding, the same for
    every deadzone (`choose` tries three): the candidate (a factored one's at the step),
    its steps, sample, float32 divisor per sampled row, the steps' side bits, about the
    largest |symbol|, and the objective's float32 row scales (None: not weighed)."""

    candidate: Candidate
    steps: float | np.ndarray
    sample: np.ndarray
    divisor: np.ndarray | np.float32
    side: float
    peak: float
    row_scale: np.ndarray | None


def _at_step(tc: TensorCandidates, candidate: Candidate, step: float,
             per_row: bool, rows: bool = True) -> _AtStep:
    if candidate.factored is not None:
        candidate = candidate.factored.at(step)
    steps = candidate_steps(tc, candidate, step, per_row, rows)
    sample = np.asarray(candidate.sample)  # a compress's spilled sample read back
    stride = max(1, math.ceil(tc.info.numel / SAMPLE_ELEMENTS))
    if isinstance(steps, np.ndarray):
        divisor = steps[::stride][: sample.shape[0], None].astype(np.float32)
        side = stored_bits(steps)
    else:
        divisor, side = np.float32(steps), 0.0
    peak = float(np.max(candidate.row_peak / (steps if isinstance(steps, np.ndarray)
                                               else step), initial=0.0))
    row_scale = None
    weigh = tc.row_scale if rows else tc.row_norm  # one step: still the rows' weights
    if weigh is not None and not per_row:
        row_scale = weigh[::stride][: sample.shape[0], None].astype(np.float32)
    return _AtStep(candidate, steps, sample, divisor, side, peak, row_scale)


def evaluate(tc: TensorCandidates, candidate: Candidate, step: float, per_row: bool,
             deadzone: float = 0.0) -> tuple[float, float, float | np.ndarray, float]:
    """(estimated bits, estimated squared error, steps, the objective's squared error) of
    coding ``candidate`` at ``step`` (rounding as `weightdna.codec.quantize.quantize` does
    with ``deadzone``). The objective's error weighs row r's by 1/row_scale_r² (the same
    as the raw error where the objective set no per-row steps). A factored candidate's
    factors are quantised for ``step`` (`Factored.at`)."""
    return _evaluate_at(tc, _at_step(tc, candidate, step, per_row), deadzone)


def _evaluate_at(tc: TensorCandidates, at: _AtStep,
                 deadzone: float) -> tuple[float, float, float | np.ndarray, float]:
    """`evaluate` of what `_at_step` worked out."""
    if not at.peak < MAX_SYMBOL / 2:
        return math.inf, 0.0, at.steps, 0.0
    sample = at.sample
    error, counts = _rounding_errors(sample, at.divisor, deadzone, at.peak)
    sse = float(np.dot(error.reshape(-1), error.reshape(-1))) * tc.scale
    weighted = sse
    if at.row_scale is not None:
        error /= at.row_scale
        weighted = float(np.dot(error.reshape(-1), error.reshape(-1))) * tc.scale
    ideal = _counted_bits(counts, sample.size) if sample.size else 0.0
    bits = ideal * tc.scale + at.candidate.side_bits + at.side
    return bits, sse, at.steps, weighted


def _rounding_errors(sample: np.ndarray, divisor: np.ndarray | np.float32, deadzone: float,
                     peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(float32 rounding errors × divisor, histogram of the symbols in symbol order) of
    ``sample / divisor`` rounded with ``deadzone`` (``peak``: about the largest |symbol|);
    compiled (`_round_and_count`), else by NumPy: the same figures."""
    rows = sample.shape[0] if sample.ndim == 2 else 0
    per_row = (np.full(rows, divisor, dtype=np.float32) if np.ndim(divisor) == 0
               else np.ascontiguousarray(divisor, dtype=np.float32).reshape(-1))
    if sample.ndim == 2 and sample.dtype == np.float32 and per_row.size == rows \
            and peak < MAX_SYMBOL:
        half = int(peak * 1.001) + 2
        error = np.empty(sample.shape, dtype=np.float32)
        counts = np.zeros(2 * half + 1, dtype=np.int64)
        if _round_and_count(np.ascontiguousarray(sample), per_row, not deadzone,
                            np.float32(0.5 - deadzone), error, counts):
            return error, counts
    scaled = sample / divisor
    symbols = round_symbols(scaled, deadzone)
    error = (scaled - symbols) * divisor
    flat = symbols.astype(np.int32).reshape(-1)
    counts = np.bincount(flat - int(flat.min())) if flat.size else np.zeros(0, np.int64)
    return error, counts


def choose(tc: TensorCandidates, step: float, per_row: bool, trellis: bool = True) -> Choice:
    """The candidate with the least ``bits + λ·squared error`` at ``step`` (already Δ_t),
    estimated for scalar rounding; then, where it pays (``trellis``, TRELLIS_MIN_*), the
    trellis at the step that codes at about the same rate with less error
    (`trellis_step_factor`; the estimates stay those of scalar rounding, and
    `weightdna.codec.compress` measures the real figures). With ROW_STEPS_RULE
    "operating", a tensor given the objective's per-row steps is tried with one step too
    (its error still weighed by rows, ``tc.row_norm``), and the cheaper kept."""
    lam = 6.0 / (LN2 * step * step)
    best = Choice(None, None, tc.raw_bits(), 0.0)
    best_cost = best.bits
    modes = ((True, False) if ROW_STEPS_RULE == "operating" and tc.row_scale is not None
             and not per_row else (True,))
    for candidate in tc.candidates:
        for rows in modes:
            at = _at_step(tc, candidate, step, per_row, rows)
            for deadzone in DEADZONES:
                bits, sse, steps, weighted = _evaluate_at(tc, at, deadzone)
                cost = bits + lam * weighted
                if cost < best_cost:
                    best, best_cost = Choice(candidate, steps, bits, sse, deadzone,
                                             factor_step=_factor_step(candidate, step),
                                             weighted=weighted), cost
    return trellis_choice(tc, best) if trellis else best


def _factor_step(candidate: Candidate, step: float) -> float | None:
    return step if candidate.factored is not None else None


def trellis_step_factor(bits_per_weight: float) -> float:
    """Δ / (scalar step) at which the trellis codes at about the scalar rate: ½ at high
    rates (each of its quantisers has step 2Δ), rising to 0.8 at 1 bit per weight, where
    the trellis spends more on the many small symbols (measured on Laplace data and
    MiniLM's matrices: 0.5 at 4 bits and more, 0.6 at 2.6 bits, 0.8 at 1.1 bits)."""
    return 0.5 + 0.3 * min(1.0, max(0.0, (3.5 - bits_per_weight) / 2.5))


def trellis_choice(tc: TensorCandidates, choice: Choice) -> Choice:
    """``choice`` (scalar rounding) as the trellis at the step that codes at about the same
    rate, where it pays (TRELLIS_MIN_ELEMENTS, TRELLIS_MIN_BITS); else ``choice`` itself.
    Not a factored candidate's residual: its bits are mostly the factors', the residual's
    few nonzero symbols cost less rounded with a deadzone."""
    if (choice.candidate is None or choice.quantizer == "trellis"
            or choice.candidate.factored is not None
            or tc.info.numel < TRELLIS_MIN_ELEMENTS
            or choice.bits < TRELLIS_MIN_BITS * tc.info.numel):
        return choice
    factor = trellis_step_factor(choice.bits / tc.info.numel)
    return replace(choice, step=choice.step * factor, deadzone=0.0, quantizer="trellis")


def scalar_choice(choice: Choice, numel: int) -> Choice:
    """A trellis choice as scalar rounding at about the same rate (the inverse of
    `trellis_choice`, for GPTQ, which rounds on the scalar grid); any other choice as it
    is."""
    if choice.quantizer != "trellis":
        return choice
    factor = trellis_step_factor(choice.bits / max(numel, 1))
    return replace(choice, step=choice.step / factor, deadzone=0.0, quantizer="scalar")


@dataclass
class Allocation:
    """The global step and each coded tensor's choice."""

    step: float
    choices: dict[str, Choice] = field(default_factory=dict)

    @property
    def bits(self) -> float:
        """Estimated bits of all coded tensors."""
        return sum(c.bits for c in self.choices.values())

    @property
    def sse(self) -> float:
        """Estimated squared error of all coded tensors."""
        return sum(c.sse for c in self.choices.values())


def tensor_step(tc: TensorCandidates, step: float, target: Target) -> float:
    """Δ_t for the global Δ: Δ/√s_t, with s_t = 1/max|w|² for a PSNR target."""
    sensitivity = tc.sensitivity
    if target.kind == "psnr":
        sensitivity /= max(tc.peak, 1e-30) ** 2
    return step / math.sqrt(sensitivity)


def allocate(coded: Sequence[TensorCandidates], step: float, target: Target,
             per_row: bool) -> Allocation:
    """Every coded tensor's choice at the global step Δ."""
    allocation = Allocation(step)
    for tc in coded:
        at = step if tc.cap is None else min(step, 2.0**tc.cap)
        allocation.choices[tc.info.name] = choose(tc, tensor_step(tc, at, target), per_row)
    return allocation


def pooled_figures(coded: Sequence[TensorCandidates], allocation: Allocation,
                   exact_signal: float, exact_count: int) -> tuple[float, float]:
    """Whole-model (SNR, PSNR) in dB from the estimated squared errors; PSNR pools each
    tensor's error normalised by its max |w|² (exact tensors count with zero error)."""
    signal = exact_signal + sum(tc.signal for tc in coded)
    sse = allocation.sse
    normalised = sum(allocation.choices[tc.info.name].sse / max(tc.peak, 1e-30) ** 2
                     for tc in coded)
    count = exact_count + sum(tc.info.numel for tc in coded)
    return decibels(signal, sse), decibels(count, normalised)


def bisect_step(coded: Sequence[TensorCandidates], meets: Callable[[Allocation], bool],
                per_row: bool, target: Target, coarse_is_ok: bool) -> Allocation:
    """The allocation at the global Δ nearest the point where ``meets`` stops holding, on
    the side where it holds. ``coarse_is_ok``: ``meets`` holds for large steps (a size
    budget) rather than small ones (an error target). If it holds nowhere, the allocation
    nearest to holding is returned; the caller checks."""
    # The coarsest global step worth trying: the one at which each tensor's step reaches
    # its max |w| (per-row steps: the largest ratio of a row's max |w| to its step).
    top = max((_peak_over_step(tc, target) for tc in coded), default=1.0)
    top = top if top > 0 and math.isfinite(top) else 1.0
    fine, coarse = math.log2(top) - OCTAVES_BELOW_PEAK, math.log2(top) + 2
    ok, bad = (coarse, fine) if coarse_is_ok else (fine, coarse)
    ok_allocation = allocate(coded, 2.0**ok, target, per_row)
    if not meets(ok_allocation):
        return ok_allocation
    bad_allocation = allocate(coded, 2.0**bad, target, per_row)
    if meets(bad_allocation):
        return bad_allocation
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (ok + bad)
        allocation = allocate(coded, 2.0**mid, target, per_row)
        if meets(allocation):
            ok, ok_allocation = mid, allocation
        else:
            bad = mid
    return ok_allocation


def rate_curve(tc: TensorCandidates, target: Target, per_row: bool) -> np.ndarray:
    """The tensor's probes: its estimated bits and squared error (`choose`, scalar
    rounding) at global steps Δ = 2^(CURVE_OCTAVES·i) for every integer i from where its
    step passes its max |w| (2 octaves above: nothing left to code) down to where it costs
    CURVE_MAX_BITS bits per weight (above a bits-per-weight target by CURVE_HEADROOM_BITS),
    cannot be coded, or lies OCTAVES_BELOW_PEAK below its peak. Each tensor's curve
    depends on that tensor alone, so they are measured side by side (in the analysis
    task); the global step is then solved on the curves (`solve_on_curves`). Returns
    (3, K): log2 Δ (ascending), bits, squared error."""
    top = math.log2(max(_peak_over_step(tc, target), 1e-300))
    cap = CURVE_MAX_BITS
    if target.kind == "bits_per_weight":
        cap = min(cap, target.value + CURVE_HEADROOM_BITS)
    numel = max(tc.info.numel, 1)
    points = []
    i = math.ceil((top + 2.0) / CURVE_OCTAVES)
    while True:
        g = i * CURVE_OCTAVES
        choice = choose(tc, tensor_step(tc, 2.0**g, target), per_row, trellis=False)
        if choice.candidate is None and points and g < top:
            break  # too fine to code: raw from here on
        points.append((g, choice.bits, choice.sse))
        if choice.bits >= cap * numel or g < top - OCTAVES_BELOW_PEAK:
            break
        i -= 1
    return np.array(points[::-1], dtype=np.float64).T.copy()


def probe_curve(tc: TensorCandidates, target: Target, per_row: bool) -> None:
    """Measure ``tc``'s `rate_curve` and the cap SNR_FLOOR_DB puts on its global step
    (`floor_cap`)."""
    tc.curve = rate_curve(tc, target, per_row)
    tc.cap = floor_cap(tc)


def floor_cap(tc: TensorCandidates, snr_floor: float | None = None) -> float | None:
    """The coarsest global log2 step at which ``tc``'s curve keeps its estimated SNR at
    least ``snr_floor`` dB (SNR_FLOOR_DB when None): every point of the curve at or below
    it keeps it, interpolated between points as `curve_at` does (the log of the squared
    error linear in log2 Δ). None where no floor is set or it binds nowhere on the curve;
    the finest point where the curve never keeps it."""
    snr_floor = SNR_FLOOR_DB if snr_floor is None else snr_floor
    if tc.curve is None or snr_floor is None or not tc.signal > 0:
        return None
    gs = tc.curve[0]
    # How far inside the floor each point lies (≥ 0: it keeps it), in the log of the error.
    inside = (math.log(tc.signal) - snr_floor / 10.0 * math.log(10.0)
              - np.log(np.maximum(tc.curve[2], 1e-300)))
    if np.all(inside >= 0):
        return None
    first = int(np.argmin(inside >= 0))  # the finest point outside
    if first == 0:
        return float(gs[0])
    lo, hi = inside[first - 1], inside[first]  # lo ≥ 0 > hi
    return float(gs[first - 1] + (gs[first] - gs[first - 1]) * lo / (lo - hi))


def lower_floor(coded: Sequence[TensorCandidates], fits: Callable[[], bool]) -> None:
    """Lower SNR_FLOOR_DB for ``coded`` (their caps, `floor_cap`) by the least amount, to
    FLOOR_BISECTIONS bisections, at which ``fits`` holds (the target can be met at all:
    at the coarsest global step, where every tensor sits at its floor or codes to
    nothing): where the floor asks more than the target gives, the tensors share it at
    one SNR. Without a floor that fits (``fits`` false at 0 dB), no caps."""
    floor = float(SNR_FLOOR_DB or 0.0)

    def lowered_by(drop: float) -> bool:
        for tc in coded:
            tc.cap = floor_cap(tc, floor - drop)
        return fits()

    fitting, failing = floor, 0.0  # lowered by this much: fits, does not
    if not lowered_by(fitting):
        for tc in coded:
            tc.cap = None
        return
    for _ in range(FLOOR_BISECTIONS):
        mid = 0.5 * (fitting + failing)
        if lowered_by(mid):
            fitting = mid
        else:
            failing = mid
    lowered_by(fitting)


def curve_at(curve: np.ndarray, g: float) -> tuple[float, float]:
    """(bits, squared error) of a tensor's `rate_curve` at log2 Δ = ``g``: linear in g
    between points (the squared error's log), constant beyond the coarsest point and
    extended along the last segment beyond the finest."""
    gs, bits, sse = curve
    if gs.size == 1 or g >= gs[-1]:
        return float(bits[-1]), float(sse[-1])
    i = 0 if g <= gs[0] else min(int(np.searchsorted(gs, g)) - 1, gs.size - 2)
    w = (g - gs[i]) / (gs[i + 1] - gs[i])
    b = bits[i] + w * (bits[i + 1] - bits[i])
    lo, hi = max(sse[i], 1e-300), max(sse[i + 1], 1e-300)
    return float(max(b, 0.0)), float(math.exp(math.log(lo) + w * (math.log(hi) - math.log(lo))))


def curve_allocation(coded: Sequence[TensorCandidates], g: float) -> Allocation:
    """The allocation the curves predict at global log2 Δ = ``g`` (estimates only: no
    candidate chosen; for `solve_on_curves`)."""
    allocation = Allocation(2.0**g)
    for tc in coded:
        bits, sse = curve_at(tc.curve, g if tc.cap is None else min(g, tc.cap))
        allocation.choices[tc.info.name] = Choice(None, None, bits, sse)
    return allocation


def solve_on_curves(coded: Sequence[TensorCandidates], excess: Callable[[Allocation], float],
                    per_row: bool, target: Target, coarse_is_ok: bool,
                    tolerance: float) -> Allocation:
    """The allocation at the global Δ where ``excess`` (≤ 0: the target holds; in the
    target's units, e.g. bits over the budget) crosses 0, on the side where it holds.

    The crossing is bisected on the tensors' curves (`rate_curve`: no tensor evaluated),
    then checked on the estimates themselves (`allocate`) and moved along the curves'
    slope until the estimate holds within ``tolerance`` of the crossing (at most
    SOLVE_CHECKS allocations). Once checks lie on both sides, the next is the middle of
    the two nearest the crossing (by ``excess``). If none lands inside, the best that
    holds is kept; for a size budget (``coarse_is_ok``) with it filled from the nearest
    check that missed (`fill_budget`), as the estimates jump there by more than the
    window. Where the curves mislead, it falls back to `bisect_step` on the estimates."""
    if any(tc.curve is None for tc in coded):
        return bisect_step(coded, lambda a: excess(a) <= 0, per_row, target, coarse_is_ok)
    top = max((_peak_over_step(tc, target) for tc in coded), default=1.0)
    top = top if top > 0 and math.isfinite(top) else 1.0
    fine, coarse = math.log2(top) - OCTAVES_BELOW_PEAK, math.log2(top) + 2
    ok, bad = (coarse, fine) if coarse_is_ok else (fine, coarse)

    def on_curves(g: float) -> float:
        return excess(curve_allocation(coded, g))

    if coarse_is_ok and on_curves(ok) > 0 and any(tc.cap is not None for tc in coded):
        lower_floor(coded, lambda: on_curves(ok) <= 0)  # the floor alone breaks the budget
    if on_curves(ok) > 0 or on_curves(bad) <= 0:
        return bisect_step(coded, lambda a: excess(a) <= 0, per_row, target, coarse_is_ok)
    for _ in range(CURVE_BISECTIONS):
        mid = 0.5 * (ok + bad)
        if on_curves(mid) <= 0:
            ok = mid
        else:
            bad = mid
    g = ok
    held = missed = None  # the checks nearest the crossing on each side: (g, allocation, e)
    for _ in range(SOLVE_CHECKS):
        allocation = allocate(coded, 2.0**g, target, per_row)
        e = excess(allocation)
        if -tolerance <= e <= 0:
            return allocation
        if e <= 0:
            held = (g, allocation, e) if held is None or e > held[2] else held
        else:
            missed = (g, allocation, e) if missed is None or e < missed[2] else missed
        if held is not None and missed is not None:
            # Checked on both sides and neither inside: the estimates jump there by more
            # than the window (a tensor's choice changing, e.g. its deadzone), so the
            # slope's steps would cross the jump back and forth. Halve the bracket.
            g = 0.5 * (held[0] + missed[0])
            continue
        # Move along the curves' slope by the estimate's miss (aiming inside the window).
        h = 1.0 / 64
        slope = (on_curves(g + h) - on_curves(g - h)) / (2 * h)
        if not (math.isfinite(slope) and slope != 0):
            break
        g -= (e + 0.5 * tolerance) / slope
    if held is None:
        return bisect_step(coded, lambda a: excess(a) <= 0, per_row, target, coarse_is_ok)
    if missed is None or not coarse_is_ok:
        return held[1]
    return fill_budget(coded, held[1], missed[1], excess, target)


def fill_budget(coded: Sequence[TensorCandidates], held: Allocation, missed: Allocation,
                excess: Callable[[Allocation], float], target: Target,
                bits: Callable[[str, Choice], float] | None = None) -> Allocation:
    """The budget below a jump in the estimates filled: ``held`` (a global step whose
    allocation keeps the size target, ``excess`` ≤ 0) with tensors' choices taken from
    ``missed`` (a finer step's, over the target), the most of the objective's error saved
    per bit first, each where the target still holds (a greedy knapsack over the
    tensors). At one global step every tensor trades bits for error at one slope, so
    between two close steps the moves cost about alike; the greedy then takes them until
    what is left is smaller than any move not taken. Never over the target: each move is
    checked on ``excess`` itself. A move that costs no bits and saves error comes first;
    one that adds error is never taken. ``bits``: a choice's bits (name, choice), if not
    its estimate (`compress`'s fill between two measured codings gives their real bytes)."""
    moves = []
    for tc in coded:
        name = tc.info.name
        a, b = held.choices[name], missed.choices[name]
        d_bits = b.bits - a.bits if bits is None else bits(name, b) - bits(name, a)
        saved = objective_error(tc, a, target) - objective_error(tc, b, target)
        if saved < 0 or (saved == 0 and d_bits >= 0):
            continue  # more error, or nothing gained
        value = math.inf if d_bits <= 0 else saved / d_bits
        moves.append((-value, d_bits, name))
    if not moves:
        return held
    filled = Allocation(held.step, dict(held.choices))
    for _, _, name in sorted(moves):
        kept = filled.choices[name]
        filled.choices[name] = missed.choices[name]
        if not excess(filled) <= 0:
            filled.choices[name] = kept
    return filled


def objective_error(tc: TensorCandidates, choice: Choice, target: Target) -> float:
    """The squared error of ``choice`` as the global step weighs it: the objective's
    (rows weighed) times the tensor's sensitivity (Δ_t = Δ/√s_t: `tensor_step`)."""
    error = choice.sse if choice.weighted is None else choice.weighted
    return error / tensor_step(tc, 1.0, target) ** 2


def _peak_over_step(tc: TensorCandidates, target: Target) -> float:
    """max |w| / the tensor's step at a global step of 1."""
    step = tensor_step(tc, 1.0, target)
    if tc.row_scale is None:
        return tc.peak / step
    rows = float(np.max(tc.candidates[0].row_peak / (step * tc.row_scale), initial=0.0))
    return max(rows, tc.peak / step) if ROW_STEPS_RULE == "operating" else rows


def single_tensor_choice(tc: TensorCandidates, target: Target, per_row: bool) -> Choice:
    """The cheapest candidate, at its largest step, meeting a per-tensor SNR or PSNR target
    (estimated); raw when none can."""
    if target.kind == "snr":
        allowed = tc.signal / 10.0 ** (target.value / 10.0)
    else:
        allowed = tc.info.numel * tc.peak**2 / 10.0 ** (target.value / 10.0)
    best = Choice(None, None, tc.raw_bits(), 0.0)
    top = math.log2(tc.peak) if tc.peak > 0 else 0.0
    for candidate in tc.candidates:
        for deadzone in DEADZONES:
            ok, bad = top - OCTAVES_BELOW_PEAK, top + 2
            found = None
            for _ in range(BISECTION_STEPS):
                mid = 0.5 * (ok + bad)
                bits, sse, steps, _ = evaluate(tc, candidate, 2.0**mid, per_row, deadzone)
                if math.isfinite(bits) and sse <= allowed:
                    ok, found = mid, Choice(candidate, steps, bits, sse, deadzone,
                                            factor_step=_factor_step(candidate, 2.0**mid))
                else:
                    bad = mid
            if found is not None and found.bits < best.bits:
                best = found
    return best
