"""How much each tensor's error moves a model's outputs: the per-tensor weight of a rate
allocator.

For one tensor at a time, a small perturbation e (Gaussian noise at a relative SNR, or
rounding to a uniform step) is added while every other tensor keeps its value, and

    s_t = mean over calibration inputs of ‖y(w + e) − y(w)‖²  /  Σ e²

is the output's squared change per unit of the tensor's summed squared error. To first
order the outputs move by Σ_t s_t · SSE_t, which is what `weightdna.codec.compress_model`
minimises when given ``sensitivity=s`` (its step for tensor t is Δ / √s_t). For MiniLM's
unit-norm embeddings ‖ŷ − y‖² = 2 (1 − cos), so s_t · SSE_t / 2 predicts the loss of mean
cosine. Multiply s_t by the tensor's size for the change per unit of weight MSE.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.bert import (
    EMBEDDING_TENSORS,
    LAYER_TENSORS,
    BertConfig,
    BertEncoder,
    load_tokenizer,
    mean_pool,
    random_token_batch,
    read_vocabulary,
    token_prior,
)
from weightdna.codec.options import SENSITIVITY_MODES
from weightdna.data import load_digits
from weightdna.errors import InvalidInputError, WeightDNAError
from weightdna.evaluate.accuracy import as_array, takes_images
from weightdna.evaluate.sentences import Progress, load_sentences
from weightdna.nn.model import Model
from weightdna.train import single_blas_thread
from weightdna.weights import minilm_path

DEFAULT_SNR_DB = 30.0
DIGITS_CALIBRATION = 256  # training images (never the test images)
SENTENCE_CALIBRATION = 64  # every k-th sentence of the bundled set
# Data-free: random token sequences (`weightdna.bert.random_token_batch`). On MiniLM at 3
# bits/weight 32 and 64 of them gave the mean cosine of 64 bundled sentences (0.9819,
# 0.9815 and 0.9819, against 0.9764 without sensitivities; BENCHMARKS.md, "Function on
# the model panel"); the cost grows with their number.
SYNTHETIC_SEQUENCES = 32
SYNTHETIC_LENGTH = 24
# Data-free, a BERT model's random tokens are drawn as often as `weightdna.bert.token_prior`
# guesses they occur in text, and its word embedding's rows are weighed by that prior to
# this power (`token_row_weights`). MiniLM at 3 bits/weight: 0.9819 (uniform tokens, no
# row weights) → 0.9828 (tokens by the prior) → 0.9844 (and rows by prior^0.65; 0.75, 0.85
# and 1 gave 0.9844, 0.9842 and 0.9818; 0.75 lowered the 5th percentile of the sentences'
# cosines, 0.9745 → 0.9728, 0.65 kept it, 0.9744); at 2: 0.8960 → 0.9173 (BENCHMARKS.md,
# "A token prior from the vocabulary's order"). Under 1: on held-out text a rare token's
# error hurt about 10× more per occurrence than a frequent one's (`bench/probes.py
# tokens`). A row's absolute error counts, not its error relative to the row's own mean
# square (`weightdna.codec.ratecontrol.apply_objective`): 0.9861 → 0.9877 at 3 bits/weight
# with the bias correction (`bench/minilm_rows.py`).
SYNTHETIC_PRIOR = True
ROW_PRIOR_EXPONENT = 0.65
# Data-free, each row of a BERT model's linear weights is weighed by how much an error in
# its output moves the sentence embedding (`output_row_weights`): Σ over the real tokens of
# OUTPUT_ROW_SEQUENCES random sequences (drawn by the prior) of g_r² ‖x‖², g_r = ∂(v·e)/∂y_r
# for OUTPUT_ROW_DRAWS random directions v of the unit embedding e, y = Wx + b the layer's
# output; to the power OUTPUT_ROW_EXPONENT. Noise of the same energy on the quarter of a
# matrix's rows with the largest weights moved MiniLM's embeddings of the 540 bundled
# sentences 3.3-7.4x as much as on the quarter with the least (the weights' ratio: 4.4-18x,
# hence a power under 1). MiniLM at 3 bits per weight through the CLI: BENCHMARKS.md,
# "Output-side row weights".
OUTPUT_ROW_SEQUENCES = 64
OUTPUT_ROW_DRAWS = 4
OUTPUT_ROW_EXPONENT = 0.5
OUTPUT_ROW_SEED = 3

# forward(name, value): the outputs (samples, features) with tensor ``name`` set to value;
# an empty name gives the unperturbed outputs.
Forward = Callable[[str, np.ndarray], np.ndarray]


def perturbation(
    values: np.ndarray, rng: np.random.Generator, snr_db: float, step: float | None
) -> np.ndarray:
    """e: rounding error at ``step`` when given, else Gaussian noise at ``snr_db`` below
    the tensor's mean square.

    A tensor that rounding leaves unchanged (every element on the grid, e.g. all zero)
    gets noise of the rounding error's high-rate power, step²/12, so it is still measured.
    """
    values = values.astype(np.float64)
    if step is not None:
        error = step * np.rint(values / step) - values
        if np.any(error):
            return error
        return rng.normal(0.0, step / np.sqrt(12.0), size=values.shape)
    power = float(np.mean(values * values)) or 1.0  # an all-zero tensor: unit scale
    sigma = np.sqrt(power * 10.0 ** (-snr_db / 10.0))
    return rng.normal(0.0, sigma, size=values.shape)


def measure_sensitivity(
    forward: Forward,
    state: Mapping[str, np.ndarray],
    names: Sequence[str],
    snr_db: float = DEFAULT_SNR_DB,
    step: float | None = None,
    draws: int = 2,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, float]:
    """s_t for each of ``names`` (see the module's docstring), averaged over ``draws``."""
    if step is not None and not step > 0:
        raise InvalidInputError(f"the quantisation step must be > 0, got {step}")
    if draws < 1:
        raise InvalidInputError(f"draws must be >= 1, got {draws}")
    report = progress or (lambda stage, done, total: None)
    rng = np.random.default_rng(seed)
    reference = forward("", np.empty(0))
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        report("sensitivity", i, len(names))
        values = np.asarray(state[name])
        ratios = []
        for _ in range(1 if step is not None else draws):
            error = perturbation(values, rng, snr_db, step)
            sse = float(np.sum(error * error))
            moved = forward(name, (values + error).astype(values.dtype)) - reference
            ratios.append(float(np.mean(np.sum(moved.astype(np.float64) ** 2, axis=1))) / sse)
        out[name] = float(np.mean(ratios))
    report("sensitivity", len(names), len(names))
    return out


def _engine_forward(model: Model, inputs: np.ndarray) -> Forward:
    params = model.state_dict()

    def forward(name: str, value: np.ndarray) -> np.ndarray:
        if not name:
            return model.predict(inputs)
        kept = params[name].copy()
        np.copyto(params[name], value)
        try:
            return model.predict(inputs)
        finally:
            np.copyto(params[name], kept)

    return forward


def _bert_forward(encoder: BertEncoder, token_ids: np.ndarray, mask: np.ndarray,
                  prefix: str) -> Forward:
    """Outputs of a BERT encoder, rerun only from the layer a tensor belongs to."""
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    mask_t = torch.as_tensor(mask, dtype=torch.long)
    layers = encoder.config.num_hidden_layers

    def run_from(first: int, hidden: torch.Tensor) -> np.ndarray:
        for i in range(first, layers):
            hidden = encoder.layer(i, hidden, mask_t)
        pooled = torch.nn.functional.normalize(mean_pool(hidden, mask_t), p=2, dim=1)
        return pooled.numpy()

    with torch.no_grad():
        inputs = [encoder.embed(ids)]  # inputs[i]: what layer i reads
        for i in range(layers - 1):
            inputs.append(encoder.layer(i, inputs[-1], mask_t))

    def forward(name: str, value: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            if not name:
                return run_from(0, inputs[0])
            key = name[len(prefix):]
            kept = encoder.tensors[key]
            encoder.tensors[key] = torch.as_tensor(value).to(kept.dtype)
            try:
                if key.startswith("encoder.layer."):
                    first = int(key.split(".")[2])
                    return run_from(first, inputs[first])
                return run_from(0, encoder.embed(ids))
            finally:
                encoder.tensors[key] = kept

    return forward


def _bert_prefix(state_dict: Mapping[str, Any]) -> str:
    anchor = EMBEDDING_TENSORS[0]
    for name in state_dict:
        if name.endswith(anchor):
            return name[: -len(anchor)]
    raise InvalidInputError(
        "neither an engine Model nor a BERT state dict (no tensor named "
        f"{anchor!r}); sensitivity needs one of them"
    )


def sensitivity(
    model: Model | Mapping[str, Any],
    calibration: np.ndarray | Sequence[str] | None = None,
    *,
    snr_db: float = DEFAULT_SNR_DB,
    step: float | None = None,
    draws: int = 2,
    seed: int = 0,
    folder: str | Path | None = None,
    synthetic: bool = False,
    prior: bool | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Per tensor, the outputs' squared change per unit of its summed squared error.

    model: an engine digits ``Model`` (calibration: its input images, default 256 digits
    training images; outputs: logits), or a BERT state dict such as MiniLM's (calibration:
    sentences, default 64 of the bundled set; outputs: unit-norm sentence embeddings;
    folder: its config and tokenizer, default the installed all-MiniLM-L6-v2). Only the
    tensors the forward reads are measured. ``step``: perturb by rounding to this step
    instead of by noise at ``snr_db``. ``synthetic``: no data: a BERT model reads
    SYNTHETIC_SEQUENCES random token sequences instead of sentences, an engine model
    inputs distilled from itself (`weightdna.evaluate.distill`; uniform-noise images
    measured worse than no sensitivities on the digits). ``prior``: a BERT model's random
    tokens are drawn as often as `weightdna.bert.token_prior` guesses they occur in text
    (True), or uniformly (False); None: SYNTHETIC_PRIOR.
    """
    if synthetic and calibration is not None:
        raise InvalidInputError("synthetic sensitivities take no calibration data.")
    if isinstance(model, Model):
        inputs = calibration
        if synthetic:
            from weightdna.evaluate.distill import distilled_inputs

            inputs = distilled_inputs(model, seed=seed)
        elif inputs is None:
            X_train = load_digits(seed=seed, image=takes_images(model))[0]
            inputs = X_train[:DIGITS_CALIBRATION]
        state = model.state_dict()
        with single_blas_thread():
            return measure_sensitivity(_engine_forward(model, np.asarray(inputs)), state,
                                       list(state), snr_db, step, draws, seed, progress)
    prefix = _bert_prefix(model)
    folder = Path(folder) if folder is not None else minilm_path()
    config = BertConfig.from_json(folder / "config.json")
    encoder = BertEncoder(model, config)
    if synthetic:
        token_ids, mask = random_token_batch(
            folder, config.vocab_size, SYNTHETIC_SEQUENCES,
            min(SYNTHETIC_LENGTH, config.max_position_embeddings), np.random.default_rng(seed),
            prior=SYNTHETIC_PRIOR if prior is None else prior)
    else:
        sentences = (list(calibration) if calibration is not None
                     else _calibration_sentences())
        token_ids, mask = load_tokenizer(folder)(sentences)
    names = [prefix + key for key in encoder.tensors]
    state = {name: as_array(model[name]) for name in names}
    return measure_sensitivity(_bert_forward(encoder, token_ids, mask, prefix), state, names,
                               snr_db, step, draws, seed, progress)


def runs_as_bert(path: str | Path, names: Sequence[str]) -> bool:
    """Whether `sensitivity` can run the model at ``path`` (tensor ``names``) as a BERT:
    BERT's tensor names (the word embedding and every tensor of the first layer, under one
    prefix), and a config.json beside it of model_type "bert" that reads as one. Reads no
    weights."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    anchor = EMBEDDING_TENSORS[0]
    prefixes = {name[: -len(anchor)] for name in names if name.endswith(anchor)}
    present = set(names)
    if not any(all(f"{p}encoder.layer.0.{t}" in present for t in LAYER_TENSORS)
               for p in prefixes):
        return False
    try:
        config = json.loads((folder / "config.json").read_text())
        BertConfig.from_dict(config)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, WeightDNAError):
        return False
    return isinstance(config, dict) and config.get("model_type", "bert") == "bert"


def sensitivity_mode(requested: str | None, path: str | Path, names: Sequence[str],
                     target: Any) -> str:
    """What measures the sensitivities of the model at ``path`` (tensor ``names``) for a
    `weightdna.codec.ratecontrol.Target`: ``requested`` if given ("none", "auto": the
    calibration data of the model's kind, "synthetic": no data), else "synthetic" for a
    BERT model (`runs_as_bert`) under a whole-model target (measured to help: MiniLM's
    mean cosine 0.818 → 0.896 at 2 bits/weight, 0.917 with the token prior of
    `row_weights_for`, which goes with it, as does the bias correction of
    `weightdna.evaluate.correction.bias_correction_for`: 0.928) and "none" for anything
    else (an engine model's default is GPTQ on inputs distilled from it,
    `weightdna.evaluate.calibration.calibration_mode`: with its sensitivities on the same
    inputs too, the digits MLP lost 0.50 points at 3 bits per weight over ten seeds,
    without them 0.25; an ONNX graph's, `weightdna.evaluate.onnx_sensitivity`, on the output
    check's synthetic inputs, kept fewer of magika's and Silero VAD's decisions than none at
    2 and 3 bits per weight in most variants measured: BENCHMARKS.md, "Data-free
    sensitivities for ONNX graphs")."""
    if requested is not None and requested not in SENSITIVITY_MODES:
        raise InvalidInputError(f"unknown sensitivity {requested!r}; use one of "
                                f"{', '.join(SENSITIVITY_MODES)}.")
    if requested is None:
        return "synthetic" if target.whole_model and runs_as_bert(path, names) else "none"
    if requested != "none" and not target.whole_model:
        raise InvalidInputError("--sensitivity applies to whole-model --bits-per-weight, "
                                "--snr and --psnr targets.")
    return requested


def token_row_weights(path: str | Path, names: Sequence[str],
                      exponent: float = ROW_PRIOR_EXPONENT) -> dict[str, np.ndarray]:
    """{the word embedding's name: `weightdna.bert.token_prior` of the vocab.txt beside the
    BERT model at ``path`` (tensor ``names``), to the power ``exponent``}: how much each
    row's error counts (`weightdna.codec.compress.compress_model`'s ``row_weights``). {}
    where there is no vocab.txt, or its length is not the embedding's number of rows (the
    rows would not be the tokens). Reads no weights."""
    from weightdna.weights import load_weights

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    anchor = EMBEDDING_TENSORS[0]
    embedding = next((name for name in names if name.endswith(anchor)), None)
    if embedding is None:
        return {}
    rows = load_weights(path).info(embedding).shape[0]
    words = read_vocabulary(folder)
    if len(words) != rows:
        return {}
    return {embedding: token_prior(words) ** float(exponent)}


class _RecordingEncoder(BertEncoder):
    """A BERT encoder that keeps each linear layer's output (its gradient retained) and its
    inputs' squared norms per token, by weight name, for `output_row_weights`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        y = super()._linear(x, name)
        if y.requires_grad:
            y.retain_grad()
            self.recorded[f"{name}.weight"] = (y, x.detach().square().sum(-1))
        return y


def output_row_weights(path: str | Path, names: Sequence[str],
                       exponent: float = OUTPUT_ROW_EXPONENT,
                       sequences: int = OUTPUT_ROW_SEQUENCES, draws: int = OUTPUT_ROW_DRAWS,
                       seed: int = OUTPUT_ROW_SEED) -> dict[str, np.ndarray]:
    """{each linear weight of the BERT model at ``path`` (tensor ``names``): one weight per
    row (output feature) r}, Σ over the real tokens of ``sequences`` random sequences
    (`weightdna.bert.random_token_batch`, drawn by the prior) and ``draws`` random
    directions v of g_r² ‖x‖², g_r = ∂(v·e)/∂y_r (e: the unit sentence embedding, y = Wx + b:
    the layer's output for the token, x its input), to the power ``exponent``, floored at
    10⁻³ of its mean: how much an error in row r moves the embedding, as a Gauss-Newton
    diagonal (`compress_model`'s ``row_weights``: a row's absolute error counts that many
    times; no data). A weight the forward never reads (a pooler) gets none."""
    from weightdna.weights import load_weights

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = BertConfig.from_json(folder / "config.json")
    state = load_weights(path).state_dict()
    prefix = _bert_prefix(state)
    encoder = _RecordingEncoder(state, config)
    ids, mask = random_token_batch(folder, config.vocab_size, sequences,
                                   min(SYNTHETIC_LENGTH, config.max_position_embeddings),
                                   np.random.default_rng(seed), prior=True)
    ids, mask = torch.as_tensor(ids), torch.as_tensor(mask)
    real = mask.to(encoder.dtype)
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, np.ndarray] = {}
    for _ in range(draws):
        encoder.recorded.clear()
        hidden = encoder.embed(ids).detach().requires_grad_(True)
        for i in range(config.num_hidden_layers):
            hidden = encoder.layer(i, hidden, mask)
        embedding = torch.nn.functional.normalize(mean_pool(hidden, mask), p=2, dim=1)
        direction = torch.randn(embedding.shape, generator=generator, dtype=embedding.dtype)
        (direction * embedding).sum().backward()
        for name, (output, inputs) in encoder.recorded.items():
            moved = (output.grad.square() * (inputs * real)[..., None]).sum(dim=(0, 1))
            sums[name] = sums.get(name, 0.0) + moved.double().numpy()
    present = set(names)
    weights = {}
    for name, total in sums.items():
        if prefix + name in present:
            total = np.maximum(total, 1e-3 * float(total.mean())) if total.mean() > 0 else total
            if np.all(total > 0) and np.all(np.isfinite(total)):
                weights[prefix + name] = total ** float(exponent)
    return weights


def row_weights_for(mode: str, path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The row weights that go with sensitivity ``mode`` (`sensitivity_mode`) for the model at
    ``path``: with "synthetic" a BERT model's word embedding by `token_row_weights` and its
    linear weights by `output_row_weights` (each measured to help: BENCHMARKS.md); else
    none."""
    if mode != "synthetic" or not runs_as_bert(path, names):
        return {}
    return {**token_row_weights(path, names), **output_row_weights(path, names)}


def is_engine_file(path: str | Path) -> bool:
    """Whether ``path`` is a file of the engine's models (`Model.save`: a safetensors file
    whose metadata holds the engine's architecture) whose first layer is Dense or Conv2D,
    which `weightdna.evaluate.distill` can distil inputs for. Reads the file's header only
    (its metadata), then the model only if the architecture is there."""
    from weightdna.evaluate.distill import input_shape
    from weightdna.nn.model import ARCHITECTURE_KEY, load_model

    path = Path(path)
    if not path.is_file() or path.suffix != ".safetensors":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            if ARCHITECTURE_KEY not in (handle.metadata() or {}):
                return False
        input_shape(load_model(path))
    except Exception:  # noqa: BLE001 - unreadable here: not a model distillation can run
        return False
    return True


def for_every_tensor(measured: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """A sensitivity for each of ``names``, as a rate allocator needs one (> 0) per tensor.

    A tensor measured at 0 (an attention key bias) counts as the least sensitive measured
    one. A tensor the forward never reads (a BERT pooler, which sentence embeddings skip
    but a classifier on top reads) counts as the median measured one, not the least: with
    the least, MiniLM's pooler was rounded to 0 at 3 bits per weight. A tensor whose
    perturbation made the outputs non-finite (PP-OCR's recognizer's exponent 2 of a Pow:
    a negative base to the power 2.01 is NaN) counts as the most sensitive measured one.
    1.0 if none is above 0."""
    positive = sorted(v for v in measured.values() if np.isfinite(v) and v > 0)
    floor = positive[0] if positive else 1.0
    top = positive[-1] if positive else 1.0
    unread = float(np.median(positive)) if positive else 1.0
    return {name: (max(measured[name], floor) if np.isfinite(measured[name]) else top)
            if name in measured else unread for name in names}


def _calibration_sentences() -> list[str]:
    sentences = load_sentences()
    stride = max(len(sentences) // SENTENCE_CALIBRATION, 1)
    return sentences[::stride][:SENTENCE_CALIBRATION]
