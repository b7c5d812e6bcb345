"""Data-free per-column factors of a BERT model's linear weights (format version 9).

A linear layer's output error is Σ_j e_j x_j: an error in input column j counts as much as
E[x_j²] of that input. The rate control weighs tensors and rows, not columns, so each
linear weight W is coded as W·diag(s) and decoded divided by s
(`weightdna.codec.compress.compress_model`'s ``column_factors``, c_j = 1/s_j stored with
the tensor), s_j = (E[x_j²] / mean_j E[x²])^(α/2), E[x²] over the real tokens of random
token sequences drawn by `weightdna.bert.token_prior` (no data): an AWQ-like, diagonal-
Hessian column weighting. log2 s_j is rounded to 1/COLUMN_OCTAVE_STEPS of an octave and
clipped to ±COLUMN_MAX_OCTAVES, which is what the file stores (as float32 factors).

The default for a BERT model under the data-free default (`columns_mode`): the synthetic
sensitivities, a whole-model target, no calibration and no Ray. Measured on
all-MiniLM-L6-v2 (BENCHMARKS.md, "Word-embedding rows by their absolute error, and column
factors by default"; `bench/minilm_rows.py`), files with these factors at α = 0.375 and
quarter octaves against the same default without them, mean cosine of the 540 bundled
sentences 0.93475 → 0.94144, 0.98766 → 0.98832 and 0.99688 → 0.99711 at 2, 3 and 4 bits
per weight, the 5th percentile up at each. (Before the embedding's rows counted their
absolute error, the factors gained at 2 and 3 bits per weight but not at 4, and were an
option only.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weightdna.bert import BertConfig, random_token_batch
from weightdna.evaluate.sensitivity import runs_as_bert

COLUMN_ALPHA = 0.375
COLUMN_OCTAVE_STEPS = 4
COLUMN_MAX_OCTAVES = 4
COLUMN_SEQUENCES = 128
COLUMN_LENGTH = 24
COLUMN_SEED = 1


def input_second_moments(path: str | Path, sequences: int = COLUMN_SEQUENCES,
                         centred: bool = False, seed: int = COLUMN_SEED
                         ) -> dict[str, np.ndarray]:
    """{weight name: E[x_j²] of its layer's inputs} (``centred``: Var[x_j]) for every linear
    weight of the BERT model at ``path`` (a file or folder, config.json and vocab.txt
    beside it), over the real tokens of ``sequences`` random sequences drawn by the prior:
    the diagonal of `weightdna.evaluate.calibration.bert_hessians` on those tokens."""
    from weightdna.evaluate.calibration import bert_moments
    from weightdna.weights import load_weights

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = BertConfig.from_json(folder / "config.json")
    tokens = random_token_batch(folder, config.vocab_size, sequences,
                                min(COLUMN_LENGTH, config.max_position_embeddings),
                                np.random.default_rng(seed), prior=True)
    moments = bert_moments(load_weights(path).state_dict(), folder, tokens, diagonal=True)
    return moments.variances() if centred else moments.hessians()


def column_exponents(moments: np.ndarray, alpha: float = COLUMN_ALPHA,
                     per_octave: int = COLUMN_OCTAVE_STEPS,
                     max_octaves: float = COLUMN_MAX_OCTAVES) -> np.ndarray:
    """k_j (int): log2 s_j = (alpha/2)·log2(h_j / mean h) in steps of 1/``per_octave``,
    clipped to ±``max_octaves`` (h floored at 10⁻³ of its mean)."""
    h = np.asarray(moments, dtype=np.float64)
    h = np.maximum(h, 1e-3 * h.mean())
    limit = int(max_octaves * per_octave)
    log2s = (alpha / 2) * np.log2(h / h.mean())
    return np.clip(np.rint(log2s * per_octave), -limit, limit).astype(np.int64)


def bert_column_factors(path: str | Path, alpha: float = COLUMN_ALPHA,
                        per_octave: int = COLUMN_OCTAVE_STEPS) -> dict[str, np.ndarray]:
    """{linear weight name: c_j = 2^(−k_j / per_octave)} (`column_exponents` of its inputs'
    `input_second_moments`): `compress_model`'s ``column_factors`` for the BERT model at
    ``path``."""
    return {name: np.exp2(-column_exponents(h, alpha, per_octave) / per_octave)
            for name, h in input_second_moments(path).items()}


COLUMN_MODES = ("none", "synthetic")


def _why_not(path: str | Path, names: list[str], target: object, ray: object,
             calibration: object) -> str | None:
    """Why per-column factors do not apply to the model at ``path`` under this request
    (what to do, for an error), or None where they do."""
    if not runs_as_bert(path, names):
        return ("--columns synthetic needs a BERT model (its config.json and vocab.txt "
                "beside the weights); use --columns none.")
    if not getattr(target, "whole_model", False) or ray is not False \
            or calibration not in (None, "none"):
        return ("--columns synthetic applies to whole-model --bits-per-weight, --snr and "
                "--psnr targets, without --ray or --calibration.")
    return None


def columns_mode(requested: str | None, sensitivity: str, path: str | Path,
                 names: list[str], target: object, ray: object = False,
                 calibration: object = None) -> str:
    """``compress --columns``'s mode: ``requested`` if given; else "synthetic" where the
    data-free default runs (``sensitivity`` "synthetic": a BERT model under a whole-model
    target) and the factors apply (no Ray, no calibration), and "none" otherwise."""
    if requested is not None:
        return requested
    if sensitivity != "synthetic" or _why_not(path, names, target, ray, calibration):
        return "none"
    return "synthetic"


def column_factors_for(mode: str, path: str | Path, names: list[str], target: object,
                       ray: object = False, calibration: object = None
                       ) -> dict[str, np.ndarray] | None:
    """``compress --columns MODE``'s factors for the model at ``path`` (tensor ``names``)
    under ``target`` (a `weightdna.codec.ratecontrol.Target`): None for "none";
    "synthetic": `bert_column_factors`, for a BERT model under a whole-model target without
    Ray or calibration, else an InvalidInputError saying what to do."""
    from weightdna.errors import InvalidInputError

    if mode not in COLUMN_MODES:
        raise InvalidInputError(f"unknown columns {mode!r}; use one of "
                                f"{', '.join(COLUMN_MODES)}.")
    if mode == "none":
        return None
    why = _why_not(path, names, target, ray, calibration)
    if why is not None:
        raise InvalidInputError(why)
    return bert_column_factors(path)
