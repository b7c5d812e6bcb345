"""Per-output-channel factorisations of conv kernels, for the ``factored+residual``
representation: a kernel W (out × in × kh × kw) whose every output channel is a sum of a
few outer products of input-channel weights and spatial kernels — a Gabor or other oriented
filter bank, a separable blur or edge filter scaled per input channel — predicted by

    W[o] ≈ Σ_{k<r} U[o,k] ⊗ K[o,k],   K[o,k] (kh × kw) = Σ_{j<s} P[o,k,j] Q[o,k,j]ᵀ

(s = 0: K[o,k] is stored whole as P[o,k]). Each output channel's W[o] seen as in × (kh·kw)
gives U (its r leading left singular vectors) and K (the right ones times the singular
values); each K[o,k] seen as kh × kw gives P (its s leading left singular vectors times
the singular values) and Q (the right ones). A windowed plane wave of any orientation is
such a K of rank 2 (an isotropic Gaussian times cos(αx + βy + φ) = cos αx cos(βy + φ)
− sin αx sin(βy + φ)).

The factors are quantised — not stored as floats — by the tensor coder itself
(`weightdna.codec.tensor`, scalar steps, entropy-coded): U and Q have orthonormal rows or
columns, so an error of K (or of P) is the same error of W, and P carries the scale: P (or
K) at the residual's step Δ, U at Δ / rms‖K[o,k]‖, Q at Δ / rms‖P[o,k,j]‖ (the step that
balances bits against the error each factor's symbols move, `factor_steps`). The residual
is coded as a prediction's is. Format: docs/FORMAT.md, ``factored+residual``.
"""

from __future__ import annotations

import math

import numpy as np

from weightdna.codec.fields import is_int
from weightdna.errors import CorruptFileError

FACTORED_KEYS = {"ranks", "u", "p", "q"}
FACTORS = ("u", "p", "q")
# Ranks offered: r across the input channels, s of each spatial window (0: whole).
RANKS = ((1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2))
# A factorisation is tried where, on a sample of output channels, it keeps all but
# FACTORED_RESIDUAL of their energy with at most FACTORED_RATIO numbers per weight:
# a Gabor bank's r = 1, s = 2 keeps all of it with 31 of 147; trained and iid kernels
# keep far less (or need more numbers than they have weights).
FACTORED_RESIDUAL = 1e-3
FACTORED_RATIO = 0.5
SAMPLED_CHANNELS = 64
MIN_ELEMENTS = 1024


def factor_shapes(shape: tuple[int, ...], r: int, s: int) -> dict[str, tuple[int, ...]]:
    """The shapes of the factors of a kernel of ``shape`` at ranks (r, s)."""
    out, cin, kh, kw = shape
    if s == 0:
        return {"u": (out, r, cin), "p": (out, r, kh, kw)}
    return {"u": (out, r, cin), "p": (out, r, s, kh), "q": (out, r, s, kw)}


def factor_count(shape: tuple[int, ...], r: int, s: int) -> int:
    """Numbers the factors hold."""
    return sum(math.prod(f) for f in factor_shapes(shape, r, s).values())


def valid_ranks(shape: tuple[int, ...], r: int, s: int) -> bool:
    """Whether (r, s) is a factorisation of a kernel of ``shape`` the format allows: r at
    most min(in, kh·kw), s at most min(kh, kw); never more factor numbers than weights
    but three times (each factor then decodes within the tensor's own memory bound)."""
    if len(shape) != 4 or not all(is_int(d) and d >= 1 for d in shape):
        return False
    _, cin, kh, kw = shape
    return (is_int(r) and is_int(s) and 1 <= r <= min(cin, kh * kw)
            and 0 <= s <= min(kh, kw))


def factorise(values: np.ndarray, r: int, s: int) -> dict[str, np.ndarray]:
    """The float64 factors (module docstring) of ``values`` (out × in × kh × kw)."""
    out, cin, kh, kw = values.shape
    left, sv, right = np.linalg.svd(values.reshape(out, cin, kh * kw), full_matrices=False)
    u = np.ascontiguousarray(left[:, :, :r].transpose(0, 2, 1))  # (out, r, in)
    kernels = (sv[:, :r, None] * right[:, :r]).reshape(out, r, kh, kw)
    if s == 0:
        return {"u": u, "p": kernels}
    kl, ks, kr = np.linalg.svd(kernels, full_matrices=False)
    p = (kl[..., :s] * ks[..., None, :s]).transpose(0, 1, 3, 2)  # (out, r, s, kh)
    return {"u": u, "p": np.ascontiguousarray(p), "q": np.ascontiguousarray(kr[..., :s, :])}


def factor_steps(factors: dict[str, np.ndarray], step: float) -> dict[str, float]:
    """Each factor's step for a residual step ``step`` (module docstring)."""
    p = factors["p"]
    steps = {"p": step}
    if "q" in factors:
        rows = np.sqrt(np.einsum("...i,...i->...", p, p))  # ‖P[o,k,j]‖
        steps["q"] = step / max(math.sqrt(float(np.mean(rows**2))), 1e-300)
        kernels = np.sqrt(np.sum(rows**2, axis=-1))
    else:
        kernels = np.sqrt(np.einsum("okij,okij->ok", p, p))
    steps["u"] = step / max(math.sqrt(float(np.mean(kernels**2))), 1e-300)
    return steps


def values(factors: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The prediction (float64, ``shape``) of the factors: decoder and encoder alike, by
    elementwise products and sums in a fixed order (k, then j, ascending) — the same
    float64 values on every machine."""
    u, p = (np.asarray(factors[k], dtype=np.float64) for k in ("u", "p"))
    out, r = u.shape[:2]
    _, cin, kh, kw = shape
    if "q" in factors:
        q = np.asarray(factors["q"], dtype=np.float64)
        kernels = np.zeros((out, r, kh, kw))
        for j in range(p.shape[2]):
            kernels += p[:, :, j, :, None] * q[:, :, j, None, :]
    else:
        kernels = p
    prediction = np.zeros((out, cin, kh, kw))
    for k in range(r):
        prediction += u[:, k, :, None, None] * kernels[:, k, None, :, :]
    return prediction


def captured(values_: np.ndarray, r: int, s: int) -> float:
    """The share of the energy of ``values_`` (out × in × kh × kw) its (r, s) factors keep
    unquantised."""
    total = float(np.sum(values_ * values_))
    if not total > 0:
        return 0.0
    error = values_ - values(factorise(values_, r, s), values_.shape)
    return 1.0 - float(np.sum(error * error)) / total


def worth_trying(values_: np.ndarray) -> tuple[int, int] | None:
    """The ranks of the factorisation to try on a kernel (the fewest numbers among those
    that pass FACTORED_RESIDUAL and FACTORED_RATIO on SAMPLED_CHANNELS spread output
    channels), or None."""
    shape = values_.shape
    if len(shape) != 4 or values_.size < MIN_ELEMENTS:
        return None
    picked = np.unique(np.linspace(0, shape[0] - 1, min(shape[0], SAMPLED_CHANNELS))
                       .astype(np.int64))
    sample = np.asarray(values_[picked], dtype=np.float64)
    fits = [(factor_count(shape, r, s), r, s) for r, s in RANKS
            if valid_ranks(shape, r, s)
            and factor_count(shape, r, s) <= FACTORED_RATIO * values_.size]
    for _, r, s in sorted(fits):
        if captured(sample, r, s) >= 1.0 - FACTORED_RESIDUAL:
            return r, s
    return None


def check_factored(params: object, shape: tuple[int, ...],
                   where: str) -> tuple[int, int, dict[str, tuple[dict, tuple[int, ...]]]]:
    """(r, s, {factor: (its quantized params, its shape)}) of a ``factored+residual``
    entry's factor params, checked but for the quantized params (the factor's decoder
    checks those)."""
    if not isinstance(params, dict) or set(params) != FACTORED_KEYS:
        raise CorruptFileError(f"{where}: factored params must have the keys "
                               f"{sorted(FACTORED_KEYS)}.")
    ranks = params["ranks"]
    if not (isinstance(ranks, list) and len(ranks) == 2 and valid_ranks(shape, *ranks)):
        raise CorruptFileError(f"{where}: ranks must be [r, s] with 1 ≤ r ≤ min(in, kh·kw) "
                               "and 0 ≤ s ≤ min(kh, kw), of a kernel out × in × kh × kw.")
    r, s = ranks
    shapes = factor_shapes(shape, r, s)
    factors = {}
    for key in FACTORS:
        sub = params[key]
        if key not in shapes:
            if sub is not None:
                raise CorruptFileError(f"{where}: a whole-window factorisation (s = 0) has "
                                       "no q factor (null).")
            continue
        if not isinstance(sub, dict) or sub.get("nonfinite") != 0:
            raise CorruptFileError(f"{where}: factor {key} must be quantized params with no "
                                   "non-finite elements.")
        factors[key] = (sub, shapes[key])
    return r, s, factors
