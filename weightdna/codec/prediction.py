"""Predictions a residual is coded against: truncated-SVD factors, or a SIREN (the DNA).

A `Prediction` holds the header params and byte sections of its predictor and the values
the decoder will compute from them. Encoder and decoder compute those values with the
same function (`lowrank_values`, `siren_values`), from the stored 16-bit parameters, in
float64, so the residual the encoder codes is the residual the decoder adds back to.
Formats: docs/FORMAT.md, ``lowrank+residual`` and ``dna+residual``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from weightdna.codec.fields import is_finite_number, is_int
from weightdna.coords import axis_coordinate, matrix_shape
from weightdna.errors import CorruptFileError, InvalidInputError

FLOAT16_MAX = 65504.0
MAX_DNA_WIDTH = 1024
MAX_DNA_DEPTH = 16
MAX_OMEGA0 = 1e4
# Evaluating a DNA costs, per element, its parameters in multiply-adds, a sine per unit
# of every sine layer, and a fixed overhead (coordinates, copies). Measured on the
# development machine (float64 torch, 2 shared cores; `tests/test_codec_hostile.py` times
# it): about 7·10^9 multiply-adds/s, and a sine costs as much as ~128 of them, the overhead
# ~512. A file may ask for at most MAX_DNA_WORK units: about 3-6 s there, whatever the
# network's shape. The encoder's default DNA (width 32, depth 2: 1185 parameters, ~9.9k
# units per element) fits on tensors of up to 3.4M elements — BERT-base's largest matrices
# (2.4M) included — and the encoder never writes a DNA beyond the limit. 2^40 (the old
# limit) let a 2 MB file decode for 17-113 s (issue 12).
DNA_SINE_COST = 128
SIREN_CHUNK_FLOATS = 1 << 21
DNA_ELEMENT_COST = 512
MAX_DNA_WORK = 1 << 35
DNA_KEYS = {"architecture", "inputs", "width", "depth", "omega0", "hidden_omega0", "offset",
            "scale", "dtype"}
LOWRANK_KEYS = {"rank", "dtype"}
# A DNA candidate is a quick fit: it must pay for itself against plain quantisation, and
# most tensors have no smooth structure for it to find (SPEC).
DEFAULT_DNA_FIT = {"width": 32, "depth": 2, "steps": 200, "batch_size": 4096, "lr": 1e-3}


# How the decoder computes a representation built on this module (separable, factored,
# reference): each registered by the module that builds it, which imports this one, so that
# this one imports none of them.
DECODERS: dict[str, Callable[[Prediction], np.ndarray]] = {}


@dataclass(frozen=True)
class Prediction:
    """A predictor of one tensor: its header params, its sections, and what it predicts."""

    representation: str  # "lowrank+residual", "dna+residual", "separable+residual",
    # "factored+residual" or "reference+residual"
    params: dict
    sections: dict[str, bytes]
    shape: tuple[int, ...]
    # A reference's: the referenced tensor as the decoder restores it (the encoder: as it
    # coded it; its estimates: the original).
    referenced: torch.Tensor | None = None

    @property
    def values(self) -> np.ndarray:
        """float64, the tensor's shape: exactly what the decoder computes, by the decoder's
        own code. Computed on each call, not kept: a rate control holding the predictions of
        a whole model would otherwise hold twice the model in float64."""
        where = f"a {self.representation} prediction"
        if self.representation == "lowrank+residual":
            return decode_lowrank(self.params, self.sections, self.shape, where)
        decode = DECODERS.get(self.representation)
        if decode is not None:
            return decode(self)
        if self.representation == "dna+residual":
            return decode_dna(self.params, self.sections, self.shape, where)
        raise ValueError(f"{where} has no decoder")  # a builder that gave none: a bug

    def row_blocks(self, rows_per_block: int) -> Iterator[tuple[int, np.ndarray]]:
        """The prediction a block of rows at a time: (first row, float64 rows of the tensor
        seen as a matrix, first axis × the rest), each a new array the caller may overwrite.
        A low-rank one is computed block by block (each row of A·B is its own product: the
        same values as `values`), so a large tensor's prediction is never held whole; a DNA
        or a separable one is computed whole (one block) as the decoder does."""
        if self.representation != "lowrank+residual":
            values = self.values
            yield 0, values.reshape(matrix_shape(self.shape))
            return
        a, b = _lowrank_factors(self.params["rank"], self.sections, self.shape)
        b = b.astype(np.float64)
        step = max(1, rows_per_block)
        for start in range(0, a.shape[0], step):
            yield start, a[start : start + step].astype(np.float64) @ b

    @property
    def side_bytes(self) -> int:
        """Bytes the predictor's own sections take."""
        return sum(len(b) for b in self.sections.values())


def _float16_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f2").tobytes()


# --- low rank --------------------------------------------------------------------------


def _gram(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """MᵀM or MMᵀ, whichever is smaller, of the tensor seen as a matrix M (float64)."""
    m, n = matrix_shape(values.shape)
    matrix = values.reshape(m, n)
    return (matrix.T @ matrix, True) if n <= m else (matrix @ matrix.T, False)


def singular_values(values: np.ndarray) -> np.ndarray:
    """Singular values of the tensor seen as a matrix, largest first (from its Gram matrix:
    many times faster than an SVD of a tall matrix, and precise enough for choosing a rank)."""
    gram, _ = _gram(values)
    return np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[::-1], 0.0))


def lowrank_values(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A·B in float64 from the stored float16 factors, in the tensor's shape."""
    return (a.astype(np.float64) @ b.astype(np.float64)).reshape(shape)


def lowrank_prediction(values: np.ndarray, rank: int) -> Prediction:
    """The best rank-``rank`` approximation (truncated SVD), its factors stored in float16.

    The singular values are split evenly (A = U√s, B = √s Vᵀ) so that both factors have
    similar magnitudes and neither under- nor overflows float16. The leading singular
    vectors come from the eigenvectors of the smaller Gram matrix.
    """
    m, n = matrix_shape(values.shape)
    if not 1 <= rank <= min(m, n):
        raise InvalidInputError(f"rank must lie in 1..{min(m, n)}, not {rank}.")
    gram, right = _gram(values)
    eigenvalues, vectors = np.linalg.eigh(gram)
    s = np.sqrt(np.maximum(eigenvalues[::-1][:rank], 0.0))
    vectors = vectors[:, ::-1][:, :rank]
    if s[-1] <= 0:
        raise InvalidInputError(f"the tensor's rank is below {rank}.")
    matrix = values.reshape(m, n)
    root = np.sqrt(s)
    if right:  # vectors = V_k: A = M V_k / √s, B = √s V_kᵀ
        a, b = (matrix @ vectors) / root, root[:, None] * vectors.T
    else:  # vectors = U_k: A = U_k √s, B = U_kᵀ M / √s
        a, b = vectors * root, (vectors.T @ matrix) / root[:, None]
    if max(np.abs(a).max(initial=0), np.abs(b).max(initial=0)) >= FLOAT16_MAX:
        raise InvalidInputError("the low-rank factors overflow float16.")
    a16, b16 = a.astype(np.float16), b.astype(np.float16)
    return Prediction(
        "lowrank+residual",
        {"rank": rank, "dtype": "float16"},
        {"factors": _float16_bytes(a16) + _float16_bytes(b16)},
        tuple(values.shape),
    )


def decode_lowrank(params: object, sections: dict[str, bytes], shape: tuple[int, ...],
                   where: str) -> np.ndarray:
    """The prediction a ``lowrank+residual`` entry's factors give (validated first)."""
    if not isinstance(params, dict) or set(params) != LOWRANK_KEYS or params["dtype"] != "float16":
        raise CorruptFileError(f"{where}: low-rank params must be {{'rank': int, "
                               "'dtype': 'float16'}.")
    rank = params["rank"]
    m, n = matrix_shape(shape)
    if not (is_int(rank) and 1 <= rank <= min(m, n)):
        raise CorruptFileError(f"{where}: rank {rank!r} must be an integer in 1..{min(m, n)}.")
    blob = sections["factors"]
    if len(blob) != 2 * rank * (m + n):
        raise CorruptFileError(f"{where}: the factors section holds {len(blob)} bytes, "
                               f"expected {2 * rank * (m + n)}.")
    a, b = _lowrank_factors(rank, sections, shape)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise CorruptFileError(f"{where}: the low-rank factors hold NaN or Inf.")
    return lowrank_values(a, b, shape)


def _lowrank_factors(rank: int, sections: dict[str, bytes],
                     shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The float16 factors A (m × rank) and B (rank × n) of a ``factors`` section."""
    m, n = matrix_shape(shape)
    factors = np.frombuffer(sections["factors"], dtype="<f2")
    return factors[: m * rank].reshape(m, rank), factors[m * rank :].reshape(rank, n)


# --- DNA: a SIREN over the tensor's (row, column) coordinates ----------------------------


def siren_parameter_count(width: int, depth: int, inputs: int = 2) -> int:
    """Weights and biases of a SIREN with ``depth`` sine layers of ``width`` and one output."""
    return (inputs + 1) * width + (depth - 1) * (width + 1) * width + width + 1


def dna_work(width: int, depth: int, numel: int) -> int:
    """The cost of evaluating a SIREN of this shape on ``numel`` elements (MAX_DNA_WORK)."""
    per_element = siren_parameter_count(width, depth) + DNA_SINE_COST * width * depth
    return numel * (per_element + DNA_ELEMENT_COST)


def _chunk_rows(width: int) -> int:
    """Elements evaluated at a time: ~16 MiB of activations per layer (the chunks are part
    of the format's arithmetic: encoder and decoder must evaluate the same products)."""
    return max(1, SIREN_CHUNK_FLOATS // width)


def dna_workspace(width: int, depth: int, numel: int) -> int:
    """An upper bound on the bytes a DNA's evaluation holds beside its float64 output: the
    network (float16 and float64 copies), a chunk's coordinates (float64 pairs and their
    indices) and activations (a layer's input, its pre-activation and its sine)."""
    rows = min(numel, _chunk_rows(width))
    return 10 * siren_parameter_count(width, depth) + rows * (64 + 3 * 8 * width)


def tensor_xy(shape: tuple[int, ...], start: int = 0, stop: int | None = None) -> torch.Tensor:
    """The (x, y) coordinates of weightdna.coords for elements [start, stop) (C order; all by
    default), float64: the rows of the product of the row and column coordinates."""
    m, n = matrix_shape(shape)
    stop = m * n if stop is None else stop
    index = np.arange(start, stop, dtype=np.int64)
    x = axis_coordinate(np.arange(m), m)[index // n] if n else np.zeros(0)
    y = axis_coordinate(np.arange(n), n)[index % n] if n else np.zeros(0)
    return torch.from_numpy(np.stack([x, y], axis=1).reshape(-1, 2))


def _build_siren(network: dict, blob: bytes) -> torch.nn.Module:
    """The SIREN a header's ``network`` params and float16 parameter bytes describe, float64."""
    from weightdna.dna import Siren  # the DNA engineer's network; its init is overwritten

    with torch.random.fork_rng(devices=[]):  # the init's draws leave the caller's RNG as it was
        # Built with ω₀ = 1, then given the file's: the initialisation (overwritten below)
        # divides by ω₀, and a valid but tiny one (1e-300) would overflow its bounds.
        siren = Siren(2, network["width"], network["depth"], 1, 1.0, 1.0).double()
    for i, layer in enumerate(siren.layers):
        layer.omega0 = float(network["omega0"] if i == 0 else network["hidden_omega0"])
    flat = torch.from_numpy(np.frombuffer(blob, dtype="<f2").astype(np.float64))
    start = 0
    with torch.no_grad():
        for p in siren.parameters():  # order: each sine layer's W, b; then output W, b
            p.copy_(flat[start : start + p.numel()].reshape(p.shape))
            start += p.numel()
    return siren.eval()


def siren_values(network: dict, blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """offset + scale · SIREN(x, y) at every element, float64, in the tensor's shape. The
    coordinates are made a chunk at a time (all of them would take 16 bytes per element)."""
    siren = _build_siren(network, blob)
    numel = math.prod(matrix_shape(shape))
    out = np.empty(numel, dtype=np.float64)
    chunk = _chunk_rows(network["width"])
    with torch.no_grad():
        for start in range(0, numel, chunk):
            stop = min(numel, start + chunk)
            out[start:stop] = siren(tensor_xy(shape, start, stop)).reshape(-1).numpy()
    out *= network["scale"]
    out += network["offset"]
    return out.reshape(shape)


def dna_prediction(values: np.ndarray, config: object = None) -> Prediction:
    """Fit a SIREN to ``values`` ((w − mean) / std at the (x, y) coordinates) and store it
    in float16. ``config``: a weightdna.dna.FitConfig (architecture "siren")."""
    from weightdna.dna import FitConfig, fit_dna, normalisation_constants

    config = config or FitConfig(**DEFAULT_DNA_FIT)
    if config.architecture != "siren":
        raise InvalidInputError("a dna+residual tensor holds a SIREN; use architecture siren.")
    if (siren_parameter_count(config.width, config.depth) > values.size  # the reader's limits
            or dna_work(config.width, config.depth, values.size) > MAX_DNA_WORK):
        raise InvalidInputError(f"a DNA of width {config.width} and depth {config.depth} on "
                                f"{values.size} elements is too costly to decode.")
    offset, scale = normalisation_constants(values, "standard")
    result = fit_dna(tensor_xy(values.shape).float(), (values.reshape(-1) - offset) / scale,
                     config)
    params = [p.detach().double().reshape(-1).numpy() for p in result.network.parameters()]
    flat = np.concatenate(params)
    if np.abs(flat).max(initial=0) >= FLOAT16_MAX:
        raise InvalidInputError("the fitted SIREN's parameters overflow float16.")
    blob = _float16_bytes(flat.astype(np.float16))
    network = {
        "architecture": "siren",
        "inputs": ["x", "y"],
        "width": config.width,
        "depth": config.depth,
        "omega0": float(config.omega0),
        "hidden_omega0": float(config.omega0 if config.hidden_omega0 is None
                               else config.hidden_omega0),
        "offset": offset,
        "scale": scale,
        "dtype": "float16",
    }
    return Prediction("dna+residual", network, {"network": blob}, tuple(values.shape))


def _positive_int(value: object, top: int) -> bool:
    return is_int(value) and 1 <= value <= top


def decode_dna(params: object, sections: dict[str, bytes], shape: tuple[int, ...],
               where: str, memory: float = math.inf) -> np.ndarray:
    """The prediction a ``dna+residual`` entry's SIREN gives (validated first); ``memory``:
    the bytes its evaluation may hold beside the prediction (`dna_workspace`)."""
    if not isinstance(params, dict) or set(params) != DNA_KEYS:
        raise CorruptFileError(f"{where}: DNA params must have the keys {sorted(DNA_KEYS)}.")
    if (params["architecture"] != "siren" or params["inputs"] != ["x", "y"]
            or params["dtype"] != "float16"):
        raise CorruptFileError(f"{where}: this reader knows only a float16 SIREN over (x, y).")
    width, depth = params["width"], params["depth"]
    if not (_positive_int(width, MAX_DNA_WIDTH) and _positive_int(depth, MAX_DNA_DEPTH)):
        raise CorruptFileError(f"{where}: DNA width must be 1..{MAX_DNA_WIDTH} and depth "
                               f"1..{MAX_DNA_DEPTH}.")
    omegas = (params["omega0"], params["hidden_omega0"])
    if not all(is_finite_number(w) and 0 < w <= MAX_OMEGA0 for w in omegas):
        raise CorruptFileError(f"{where}: ω₀ must be finite, > 0 and ≤ {MAX_OMEGA0}.")
    offset, scale = params["offset"], params["scale"]
    if not (is_finite_number(offset) and is_finite_number(scale) and scale > 0):
        raise CorruptFileError(f"{where}: the DNA's offset and scale must be finite, scale > 0.")
    count = siren_parameter_count(width, depth)
    numel = math.prod(shape)
    if count > max(numel, 1) or dna_work(width, depth, numel) > MAX_DNA_WORK:
        raise CorruptFileError(f"{where}: a DNA of {count} parameters for {numel} elements "
                               "is larger than its tensor or too costly to evaluate "
                               f"(limit {MAX_DNA_WORK:.3g} units, docs/FORMAT.md).")
    if dna_workspace(width, depth, numel) > memory:
        raise CorruptFileError(f"{where}: evaluating a DNA of width {width} needs "
                               f"{dna_workspace(width, depth, numel)} bytes beside the tensor, "
                               "over the memory limit; raise max_memory if the file is trusted.")
    blob = sections["network"]
    if len(blob) != 2 * count:
        raise CorruptFileError(f"{where}: the network section holds {len(blob)} bytes, "
                               f"expected {2 * count}.")
    if not np.isfinite(np.frombuffer(blob, dtype="<f2")).all():
        raise CorruptFileError(f"{where}: the DNA's parameters hold NaN or Inf.")
    values = siren_values(params, blob, shape)
    if not np.isfinite(values).all():
        raise CorruptFileError(f"{where}: the DNA's prediction overflows.")
    return values
