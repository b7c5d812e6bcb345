"""Output-aware choice of quantisation symbols (GPTQ/OPTQ, Frantar et al. 2022).

For a linear map y = W x with calibration inputs X (N × in), the symbols q of each row are
chosen on the codec's uniform grid (ŵ = q·step, one step or one per row) so that the
outputs' error ‖(W − Ŵ) X‖² is small, rather than the weights' ‖W − Ŵ‖². Columns are
quantised one at a time; each column's rounding error is fed forward into the columns not
yet quantised through the inverse of H = XᵀX/N (plus damping), in the Cholesky form of the
paper. Only the encoder's choice of symbols changes: the decoder and the format do not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from weightdna.codec.quantize import MAX_SYMBOL, round_symbols
from weightdna.errors import InvalidInputError

DEFAULT_DAMP = 0.01  # λ = DEFAULT_DAMP × mean(diag H) added to H's diagonal
BLOCK_COLUMNS = 128  # columns per lazy-update block


class Calibration(Protocol):
    """Hessians that follow the coding ("sequential" GPTQ): the H of a tensor is measured
    on inputs computed with the tensors coded before it at their restored values, so that
    each layer's symbols also correct what the earlier layers' errors did to its inputs."""

    names: Collection[str]  # the tensors it calibrates

    def hessian(self, name: str, restored: Mapping[str, torch.Tensor]) -> np.ndarray:
        """H of ``name`` given ``restored``: the restored values of tensors coded so far
        (any subset of the model; a tensor not in it keeps its original value)."""
        ...


@dataclass(frozen=True)
class GPTQPlan:
    """What the column loop needs from H, computed once per tensor: the column order, the
    upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) in that order, and the dead columns (no
    calibration input reaches them: their weights do not move the outputs)."""

    order: np.ndarray
    factor: np.ndarray
    dead: np.ndarray

    @property
    def columns(self) -> int:
        """Columns of the weight matrix the plan is for."""
        return int(self.order.size)


def prepare(hessian: np.ndarray, damp: float = DEFAULT_DAMP, act_order: bool = True) -> GPTQPlan:
    """The plan of ``hessian`` (in × in, symmetric positive semi-definite).

    ``damp``: relative diagonal loading, which makes a singular H invertible.
    ``act_order``: quantise the columns of largest H_ii first (the paper's "act-order"); the
    step stays one per tensor or per row, so any order is free.
    """
    h = np.array(hessian, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise InvalidInputError(f"the Hessian must be a square matrix, not of shape {h.shape}.")
    if not np.all(np.isfinite(h)):
        raise InvalidInputError("the Hessian holds NaN or infinite values.")
    if not damp > 0:
        raise InvalidInputError(f"damp must be > 0, not {damp}.")
    h = 0.5 * (h + h.T)
    diag = np.diag(h).copy()
    dead = ~(diag > 0)
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    alive = diag[~dead]
    scale = float(alive.mean()) if alive.size else 1.0
    h[np.diag_indices_from(h)] += damp * scale
    h[dead, dead] = scale  # decoupled: a dead column's error feeds nothing forward
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(h.shape[0])
    h = h[np.ix_(order, order)]
    for extra in (0.0, 0.1, 1.0, 10.0):  # more loading if round-off breaks definiteness
        try:
            loaded = h + extra * scale * np.eye(h.shape[0])
            lower = np.linalg.cholesky(loaded)
            inverse = np.linalg.inv(lower)  # H⁻¹ = L⁻ᵀ L⁻¹
            factor = np.linalg.cholesky(inverse.T @ inverse).T  # upper: H⁻¹ = UᵀU
            if np.all(np.isfinite(factor)):
                break
        except np.linalg.LinAlgError:
            continue
    else:
        raise InvalidInputError("the Hessian could not be factorised even after damping.")
    return GPTQPlan(order=order, factor=factor, dead=dead[order])


def _round(scaled: np.ndarray, deadzone: float) -> np.ndarray:
    """`weightdna.codec.quantize.round_symbols`, kept within the alphabet."""
    return np.clip(round_symbols(scaled, deadzone), -MAX_SYMBOL, MAX_SYMBOL)


def gptq_symbols(
    rows: np.ndarray,
    hessian: np.ndarray | GPTQPlan,
    steps: float | np.ndarray,
    deadzone: float = 0.0,
    *,
    damp: float = DEFAULT_DAMP,
    act_order: bool = True,
    block: int = BLOCK_COLUMNS,
    zero_dead: bool = True,
) -> np.ndarray:
    """Integer symbols (int32, the shape of ``rows``) of ``rows`` (out × in) on the grid
    ŵ = q·step, chosen so that ‖(W − Ŵ) X‖² is small for the inputs X with XᵀX/N = H.

    ``hessian``: H (in × in), or a `prepare`d plan (reused across row blocks).
    ``steps``: one step, or one per row. ``deadzone``: as `quantize`'s, applied to each
    column after the error of earlier columns has been fed into it. Dead columns
    (H_ii = 0: no calibration input reaches them, such as the always-blank pixels of the
    digits images) get symbol 0, as in the paper: they move no output and cost fewer bits
    (on the digits models at 2 bits/weight this is worth about 0.1 accuracy points over
    seeds; BENCHMARKS.md, "Downstream fidelity"). ``zero_dead=False`` rounds them
    on their own instead, neither taking nor giving feedback, for inputs the calibration
    never showed; so is a matrix no input reaches at all. Every |q| is at most MAX_SYMBOL.
    """
    if not 0.0 <= deadzone < 0.5:
        raise InvalidInputError(f"deadzone must lie in [0, 0.5), not {deadzone}.")
    w = np.array(rows, dtype=np.float64)
    if w.ndim != 2:
        raise InvalidInputError(f"GPTQ takes a matrix (out × in), not shape {w.shape}.")
    plan = hessian if isinstance(hessian, GPTQPlan) else prepare(hessian, damp, act_order)
    if plan.columns != w.shape[1]:
        raise InvalidInputError(
            f"the Hessian is for {plan.columns} columns, the weight has {w.shape[1]}."
        )
    step = np.asarray(steps, dtype=np.float64)
    if not (np.all(np.isfinite(step)) and np.all(step > 0)):
        raise InvalidInputError("every quantisation step must be finite and positive.")
    if step.ndim == 1:
        if step.shape != (w.shape[0],):
            raise InvalidInputError(f"{step.size} steps for {w.shape[0]} rows.")
        step = step.reshape(-1, 1)
    elif step.ndim != 0:
        raise InvalidInputError("steps must be a number or one per row.")
    # Work in units of the step: the grid is the integers, and the error feedback (linear)
    # is the same in either unit.
    scaled = w[:, plan.order] / step
    if zero_dead and not plan.dead.all():
        scaled[:, plan.dead] = 0.0
    symbols = np.zeros_like(scaled)
    u = plan.factor
    columns = scaled.shape[1]
    for start in range(0, columns, block):
        stop = min(start + block, columns)
        part = scaled[:, start:stop]  # a view: updated in place
        errors = np.empty_like(part)
        for i in range(stop - start):
            j = start + i
            q = _round(part[:, i], deadzone)
            symbols[:, j] = q
            err = (part[:, i] - q) / u[j, j]
            errors[:, i] = err
            if i + 1 < stop - start:
                part[:, i + 1 :] -= np.outer(err, u[j, j + 1 : stop])
        if stop < columns:
            scaled[:, stop:] -= errors @ u[start:stop, stop:]
    out = np.empty_like(symbols)
    out[:, plan.order] = symbols
    return out.astype(np.int32)


def output_error(weights: np.ndarray, restored: np.ndarray, hessian: np.ndarray) -> float:
    """tr((W − Ŵ) H (W − Ŵ)ᵀ): the outputs' summed squared error per calibration input."""
    delta = np.asarray(weights, dtype=np.float64) - np.asarray(restored, dtype=np.float64)
    return float(np.einsum("ij,jk,ik->", delta, np.asarray(hessian, np.float64), delta))
