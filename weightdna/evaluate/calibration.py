"""Calibration statistics of a model's linear maps: H = XᵀX / N for each weight matrix.

For a weight W (rows = outputs) applied as y = W x, H is the second moment of its inputs
x over calibration data; ‖(W − Ŵ) X‖² / N = tr((W − Ŵ) H (W − Ŵ)ᵀ), which the output-aware
quantiser `weightdna.codec.gptq` minimises. The calibration data are those of
`weightdna.evaluate.sensitivity`: digits training images for the engine's models (never
the test images), the bundled sentences (or texts of the user's) for a BERT model such as
all-MiniLM-L6-v2, run by our own BERT forward, and for any other Hugging Face transformer,
run by transformers itself with forward hooks on its ``torch.nn.Linear`` layers
(`hf_hessians`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.bert import BertConfig, BertEncoder, load_tokenizer
from weightdna.data import load_digits
from weightdna.errors import InvalidInputError, MissingDependencyError, ModelFileError
from weightdna.evaluate.accuracy import as_array, takes_images
from weightdna.evaluate.moments import Moments
from weightdna.evaluate.sensitivity import (
    _bert_prefix,
    _calibration_sentences,
    for_every_tensor,
    is_engine_file,
    runs_as_bert,
    sensitivity,
)
from weightdna.evaluate.sentences import Progress, load_sentences
from weightdna.nn.conv import Conv2D
from weightdna.nn.layers import Dense
from weightdna.nn.model import Model, load_model
from weightdna.train import single_blas_thread
from weightdna.weights import load_weights, minilm_path

BATCH = 512  # calibration samples per forward batch
TEXT_BATCH = 16  # texts per forward batch of a Hugging Face model
MAX_TOKENS = 512  # a text's tokens beyond this (or the model's own limit) are cut


def _conv_columns(layer: Conv2D) -> np.ndarray:
    """The last forward's im2col patches with columns in the torch weight's (c, u, v) order
    (the engine gathers them as (u, v, c)), so that a row of weight.reshape(out, -1) meets
    its inputs."""
    kh, kw = layer.kernel_size
    columns = layer.columns
    return columns.reshape(-1, kh, kw, layer.in_channels).transpose(0, 3, 1, 2).reshape(
        columns.shape[0], -1)


def engine_hessians(model: Model, inputs: np.ndarray,
                    last: int | None = None) -> dict[str, np.ndarray]:
    """{``layers.{i}.weight``: H} of every Dense and Conv2D layer over ``inputs``; with
    ``last``, of that layer only (the forward stops there)."""
    moments = Moments()
    inputs = np.asarray(inputs)
    layers = model.layers if last is None else model.layers[: last + 1]
    with single_blas_thread():
        for start in range(0, len(inputs), BATCH):
            x = inputs[start : start + BATCH]
            for i, layer in enumerate(layers):
                wanted = last is None or i == last
                if wanted and isinstance(layer, Dense):
                    moments.add(f"layers.{i}.weight", x)
                if i == len(layers) - 1 and not isinstance(layer, Conv2D):
                    break
                x = layer.forward(x, training=False)
                if wanted and isinstance(layer, Conv2D):
                    moments.add(f"layers.{i}.weight", _conv_columns(layer))
    for layer in model.layers:  # drop what the forward kept for a backward
        if isinstance(layer, Conv2D):
            layer.columns = None
    return moments.hessians()


class SequentialHessians:
    """A `weightdna.codec.gptq.Calibration` of an engine model: the H of layer i is measured
    on the inputs that layer sees when layers 0..i−1 hold their restored (coded) values, so
    that GPTQ on layer i also makes up for the earlier layers' errors (the paper's
    sequential order)."""

    def __init__(self, model: Model, inputs: np.ndarray) -> None:
        self.model = copy.deepcopy(model)
        self.original = {n: v.copy() for n, v in self.model.state_dict().items()}
        self.inputs = np.asarray(inputs)
        self.names = [f"layers.{i}.weight" for i, layer in enumerate(model.layers)
                      if isinstance(layer, Dense | Conv2D)]

    def hessian(self, name: str, restored: Mapping[str, Any]) -> np.ndarray:
        index = int(name.split(".")[1])
        state = self.model.state_dict()
        for key, value in state.items():
            earlier = key in restored and int(key.split(".")[1]) < index
            np.copyto(value, as_array(restored[key]) if earlier else self.original[key])
        return engine_hessians(self.model, self.inputs, last=index)[name]


def bert_hessians(state_dict: Mapping[str, Any], sentences: Sequence[str],
                  folder: str | Path,
                  tokens: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> dict[str, np.ndarray]:
    """{name: H} of every Linear weight of a BERT state dict (names as in the state dict),
    over the real (unpadded) tokens of ``sentences``, or of ``tokens`` (token ids,
    attention mask; e.g. `weightdna.bert.random_token_batch`) when given."""
    folder = Path(folder)
    if tokens is None:
        tokens = load_tokenizer(folder)(list(sentences))
    return bert_moments(state_dict, folder, tokens).hessians()


def bert_moments(state_dict: Mapping[str, Any], folder: str | Path,
                 tokens: tuple[np.ndarray, np.ndarray], diagonal: bool = False) -> Moments:
    """The input moments (`Moments`, ``diagonal`` or the full XᵀX) of every Linear weight
    of a BERT state dict over the real tokens of ``tokens`` (token ids, attention mask),
    run by our BERT forward (`bert_hessians`; the per-column second moments of
    `weightdna.evaluate.columns.input_second_moments`)."""
    folder = Path(folder)
    prefix = _bert_prefix(state_dict)
    encoder = BertEncoder(state_dict, BertConfig.from_json(folder / "config.json"))
    token_ids, mask = tokens
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    mask_t = torch.as_tensor(mask, dtype=torch.long)
    moments = Moments(diagonal)
    linear = encoder._linear
    keep = mask_t.bool()

    def recording(x: torch.Tensor, name: str) -> torch.Tensor:
        rows = x[keep[: x.shape[0], : x.shape[1]]] if x.dim() == 3 else x
        moments.add(f"{prefix}{name}.weight", rows.double().numpy())
        return linear(x, name)

    encoder._linear = recording  # every Linear of the forward reports its input
    with torch.no_grad():
        for start in range(0, ids.shape[0], 64):
            batch = slice(start, start + 64)
            keep = mask_t[batch].bool()
            hidden = encoder.embed(ids[batch])
            for i in range(encoder.config.num_hidden_layers):
                hidden = encoder.layer(i, hidden, mask_t[batch])
    return moments


def hessians(
    model: Model | Mapping[str, Any],
    calibration: np.ndarray | Sequence[str] | None = None,
    *,
    seed: int = 0,
    folder: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """{weight name: H = XᵀX/N} of the model's linear maps, for
    ``compress_model(..., calibration=...)``.

    model: an engine digits ``Model`` (calibration: its input images, default every digits
    training image of the split ``seed``), or a BERT state dict such as MiniLM's
    (calibration: sentences, default the 64 of the bundled set that `sensitivity` uses;
    folder: its config and tokenizer, default the installed all-MiniLM-L6-v2). Conv2D
    weights get H over their im2col patches, columns in the weight's (in, kh, kw) order.
    """
    if isinstance(model, Model):
        inputs = calibration
        if inputs is None:
            inputs = load_digits(seed=seed, image=takes_images(model))[0]
        return engine_hessians(model, np.asarray(inputs))
    folder = Path(folder) if folder is not None else minilm_path()
    sentences = list(calibration) if calibration is not None else _calibration_sentences()
    return bert_hessians(model, sentences, folder)


def reads_digits(model: Model) -> bool:
    """Whether the engine model takes the digits: 64 flat pixels, or 1×8×8 images."""
    first = model.layers[0] if model.layers else None
    if isinstance(first, Conv2D):
        return first.in_channels == 1
    return isinstance(first, Dense) and first.in_features == 64


@dataclass(frozen=True)
class HuggingFaceModel:
    """A transformers model other than the BERT our own forward runs: its weights (``path``,
    the folder or a weights file in it) and the folder with its config.json and
    tokenizer."""

    path: Path
    folder: Path


def calibration_subject(path: str | Path, flag: str = "--calibration"
                        ) -> Model | tuple[dict[str, Any], Path] | HuggingFaceModel:
    """What calibrating the model at ``path`` runs: an engine digits ``Model`` (a file of
    `weightdna train mlp|cnn` or Model.save; its data: the digits training images), a
    BERT state dict with its folder (`runs_as_bert`: a Hugging Face BERT folder, or a
    weights file beside its config.json and tokenizer; our own BERT forward runs it), or a
    `HuggingFaceModel` (any other folder with a config.json: transformers runs it; its
    data for both: the bundled sentences or texts of the user's). Any other model raises
    InvalidInputError naming ``flag``: there is no calibration data for it."""
    path = Path(path)
    try:
        model = load_model(path)
    except ModelFileError:
        model = None
    if model is not None:
        if not reads_digits(model):
            raise InvalidInputError(
                f"{path} is an engine model that does not read the 8×8 digits: there is no "
                f"calibration data for it; compress it without {flag}.")
        return model
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file():
        weights = load_weights(path)
        if runs_as_bert(path, weights.names):
            return weights.state_dict(), folder
        return HuggingFaceModel(path, folder)
    raise InvalidInputError(
        f"no calibration data for {path}: calibration knows engine digits models (written by "
        "`weightdna train mlp|cnn`) and Hugging Face model folders with their config.json "
        f"and tokenizer (calibrated on texts); compress it without {flag}.")


def calibration_texts(calibration: str | Path | Sequence[str] | None) -> list[str] | None:
    """The texts of a ``--calibration`` value: None for "auto" or None (each model's
    default data), the non-empty lines of a text file, or the texts given."""
    if calibration is None or (isinstance(calibration, str) and calibration == "auto"):
        return None
    if isinstance(calibration, str | Path):
        try:
            return load_sentences(calibration)
        except InvalidInputError as exc:
            raise InvalidInputError(f"--calibration {calibration}: {exc}; give a UTF-8 text "
                                    "file of one calibration text per line, or auto.") from None
    texts = [str(t) for t in calibration]
    if not texts:
        raise InvalidInputError("no calibration texts given.")
    return texts


def _module_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    value = args[0] if args else kwargs.get("input")
    return value if isinstance(value, torch.Tensor) else None


# What hf_hessians leaves to plain rounding, and why.
LEFT_TO_ROUNDING = {
    "conv1d": "Conv1D layers (GPT-2 style: the weight is stored (in, out), so the inputs meet "
              "its columns, while GPTQ works along a weight's rows)",
    "tied": "Linear layers whose weight is tied to another tensor (e.g. an LM head sharing "
            "the word embedding: the same numbers also serve as the embedding)",
    "unstored": "Linear layers the checkpoint does not store or the forward never reaches",
}


def hf_hessians(model: HuggingFaceModel, texts: Sequence[str] | None = None,
                warn: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """{checkpoint weight name: H} of every ``torch.nn.Linear`` of a transformers model,
    over the real (unpadded) tokens of ``texts`` (default: the 64 bundled sentences
    `sensitivity` uses) tokenized by the folder's own tokenizer, collected by forward
    hooks on the model transformers loads (`weightdna.evaluate.compare.load_hf_model`).

    Module names become the checkpoint's tensor names with the model's
    ``base_model_prefix`` or without it (`compare.aliases`). What is left to plain
    rounding (LEFT_TO_ROUNDING) is named through ``warn``; if that is every weight, the
    calibration is refused."""
    from weightdna.evaluate.compare import aliases, load_hf_model, load_hf_tokenizer

    texts = list(texts) if texts is not None else _calibration_sentences()
    tokenizer = load_hf_tokenizer(model.folder)
    network = load_hf_model(model.folder, None if model.path.is_dir() else model.path)
    weights = load_weights(model.path)
    stored = {name: tuple(weights.info(name).shape) for name in weights.names}
    prefix = getattr(network, "base_model_prefix", "") or ""
    owners: dict[int, int] = {}
    for _, parameter in network.named_parameters(remove_duplicate=False):
        owners[id(parameter)] = owners.get(id(parameter), 0) + 1
    skipped: dict[str, list[str]] = {kind: [] for kind in LEFT_TO_ROUNDING}
    targets: dict[str, tuple[torch.nn.Module, str]] = {}
    for module_name, module in network.named_modules():
        if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
            skipped["conv1d"].append(f"{module_name}.weight")
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        key = next((k for k in aliases(f"{module_name}.weight", prefix) if k in stored), None)
        if owners.get(id(module.weight), 0) > 1:
            skipped["tied"].append(key or f"{module_name}.weight")
        elif key is None or stored[key] != tuple(module.weight.shape):
            skipped["unstored"].append(f"{module_name}.weight")
        else:
            targets[module_name] = (module, key)
    moments = Moments()
    keep = torch.ones(0, dtype=torch.bool)

    def recorder(key: str) -> Callable[[torch.nn.Module, tuple, dict], None]:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            x = _module_input(args, kwargs)
            if x is None:
                return
            if x.dim() == 3 and tuple(x.shape[:2]) == tuple(keep.shape):
                x = x[keep]  # the real tokens only, as the BERT path takes them
            elif x.dim() == 2 and x.shape[0] == keep.numel() and keep.shape[1] > 1:
                x = x[keep.reshape(-1)]  # tokens flattened to rows
            moments.add(key, x.detach().to(torch.float64).reshape(-1, x.shape[-1]).numpy())

        return hook

    limits = [MAX_TOKENS, getattr(tokenizer, "model_max_length", MAX_TOKENS)]
    limits += [getattr(network.config, n, None) or MAX_TOKENS
               for n in ("max_position_embeddings", "n_positions")]
    max_length = int(min(limits))
    accepted = set(inspect.signature(network.forward).parameters)
    handles = [module.register_forward_pre_hook(recorder(key), with_kwargs=True)
               for module, key in targets.values()]
    try:
        with torch.no_grad():
            for start in range(0, len(texts), TEXT_BATCH):
                batch = tokenizer(texts[start:start + TEXT_BATCH], padding=True,
                                  truncation=True, max_length=max_length, return_tensors="pt")
                batch = {k: v for k, v in batch.items() if k in accepted}
                keep = batch["attention_mask"].bool()
                try:
                    network(**batch)
                except (TypeError, ValueError, RuntimeError, IndexError) as exc:
                    raise InvalidInputError(
                        f"transformers cannot run {model.folder} ({type(network).__name__}) "
                        f"on text alone ({str(exc).splitlines()[0]}); compress it without "
                        "--calibration.") from None
    finally:
        for handle in handles:
            handle.remove()
    result = moments.hessians()
    skipped["unstored"] += [key for _, key in targets.values() if key not in result]
    said = [f"{len(names)} {LEFT_TO_ROUNDING[kind]}, e.g. {names[0]}"
            for kind, names in skipped.items() if names]
    if not result:
        raise InvalidInputError(
            f"--calibration finds no weight of {model.folder} ({type(network).__name__}) to "
            f"calibrate: {'; '.join(said) or 'it has no torch.nn.Linear layer'}; compress it "
            "without --calibration.")
    if said and warn is not None:
        warn("--calibration leaves to plain rounding " + "; ".join(said) + ".")
    return result


def hessians_for_file(path: str | Path,
                      calibration: str | Path | Sequence[str] | None = "auto",
                      warn: Callable[[str], None] | None = None,
                      ) -> dict[str, np.ndarray] | SequentialHessians:
    """The calibration of the model stored at ``path`` (`calibration_subject`) on
    ``calibration``: "auto" (the data of the model's kind), a text file of one text per
    line, or the texts themselves. An engine digits model runs sequentially on the digits
    training images (`SequentialHessians`; texts are refused); a BERT model on the texts
    (default: the bundled sentences) through our own forward (`bert_hessians`); any other
    Hugging Face model on them through transformers (`hf_hessians`, which names what it
    leaves to rounding through ``warn``)."""
    texts = calibration_texts(calibration)
    subject = calibration_subject(path)
    if isinstance(subject, Model):
        if texts is not None:
            raise InvalidInputError(
                f"{path} is an engine digits model: it is calibrated on the digits training "
                "images, not on texts; use --calibration auto.")
        return SequentialHessians(subject, load_digits(image=takes_images(subject))[0])
    if isinstance(subject, HuggingFaceModel):
        return hf_hessians(subject, texts, warn)
    state, folder = subject
    return hessians(state, texts, folder=folder)


def calibration_mode(path: str | Path, target: Any) -> str:
    """The calibration a compress request gets when it names none: "synthetic" (inputs
    distilled from the model itself, `weightdna.evaluate.distill`) for an engine model
    that reads the digits (`is_engine_file`, `reads_digits`: the distillation's prior of
    inputs in [0, 1] is theirs) under a whole-model bits-per-weight target: measured to
    keep the digits CNN working at 2 bits per weight (BENCHMARKS.md, "Function on the
    model panel"); "none" for anything else."""
    if not (target.whole_model and target.kind == "bits_per_weight" and is_engine_file(path)):
        return "none"
    return "synthetic" if reads_digits(load_model(path)) else "none"


def calibration_for(path: str | Path, calibration: str | Path | Sequence[str] | None,
                    target: Any, warn: Callable[[str], None] | None = None,
                    ) -> dict[str, np.ndarray] | SequentialHessians | None:
    """What a compress request's ``calibration`` gives under its
    `weightdna.codec.ratecontrol.Target`: None, the default, is `calibration_mode`'s;
    "none": no calibration; "synthetic": an engine model's inputs distilled from itself,
    no data; else as `hessians_for_file`. Refused under a max-abs-error or lossless
    target before any model is run."""
    if calibration is None:
        calibration = calibration_mode(path, target)
    if isinstance(calibration, str) and calibration == "none":
        return None
    if not target.rate_distortion:
        raise InvalidInputError("calibration (--calibration) applies to bits-per-weight, SNR "
                                "and PSNR targets.")
    if isinstance(calibration, str) and calibration == "synthetic":
        from weightdna.evaluate.distill import distilled_for_file

        if is_onnx_file(path):
            return onnx_calibration_for(path, warn)
        if not is_engine_file(path):
            raise InvalidInputError(
                f"--calibration synthetic distils inputs from an engine model (a file of "
                f"`weightdna train mlp|cnn`) or runs an ONNX graph on synthetic inputs; "
                f"{path} is neither: use --calibration auto, a text file, or none.")
        return SequentialHessians(load_model(path), distilled_for_file(path))
    return hessians_for_file(path, calibration, warn)


def onnx_calibration_for(path: str | Path, warn: Callable[[str], None] | None = None
                         ) -> dict[str, np.ndarray]:
    """The data-free GPTQ Hessians of the ONNX graph at ``path``
    (`weightdna.evaluate.onnx_calibration.onnx_hessians`): what was measured and what is
    left to plain rounding said through ``warn``; refused where none could be measured.
    An option, not `calibration_mode`'s default for ONNX files: it helped rapidocr's
    recognizer and detector but cost its angle classifier and, at 3 bits per weight,
    Silero VAD and magika (BENCHMARKS.md, "Data-free GPTQ for ONNX graphs"); on inputs
    matched to a first BatchNorm (`onnx_calibration.INPUTS`) it helps the detector and
    the angle classifier but costs the recognizer against no calibration (BENCHMARKS.md,
    "GPTQ on BatchNorm-matched inputs")."""
    require_onnxruntime("calibration")
    from weightdna.evaluate.onnx_calibration import onnx_hessians

    result = onnx_hessians(path)
    if not result.hessians:
        raise InvalidInputError(
            f"--calibration synthetic measures no Hessian for {path}: {result.why_not}; "
            "compress it with --calibration none.")
    if warn is not None:
        warn(result.describe() + ".")
    return result.hessians


def sensitivity_for_file(path: str | Path, synthetic: bool = False,
                         progress: Progress | None = None,
                         note: Callable[[str], None] | None = None) -> dict[str, float] | None:
    """Per-tensor output sensitivities (`weightdna.evaluate.sensitivity`) of the model at
    ``path`` on the data of its kind (`calibration_subject`), or with ``synthetic`` on
    random token sequences (BERT models), inputs distilled from an engine model, or the
    output check's synthetic inputs for an ONNX graph
    (`weightdna.evaluate.onnx_sensitivity`). Tensors the forward never reads (a pooler,
    say) get the median measured value (`for_every_tensor`). None where an ONNX graph
    gives none (it does not run on synthetic inputs, or its outputs are the same for
    every one): why, and how long measuring took, through ``note``."""
    if is_onnx_file(path):
        return _onnx_sensitivity_for_file(path, synthetic, progress, note)
    subject = calibration_subject(path, "--sensitivity")
    if isinstance(subject, HuggingFaceModel):
        raise InvalidInputError(
            "--sensitivity auto and synthetic run BERT models (model_type bert) and engine "
            f"digits models; {subject.folder} is another transformers model: compress it with "
            "--sensitivity none (its default), with --calibration auto if you like.")
    if isinstance(subject, Model):
        if synthetic:
            from weightdna.evaluate.distill import distilled_for_file

            measured = sensitivity(subject, distilled_for_file(path), progress=progress)
        else:
            measured = sensitivity(subject, progress=progress)
        names = list(subject.state_dict())
    else:
        state, folder = subject
        measured = sensitivity(state, folder=folder, draws=1, synthetic=synthetic,
                               progress=progress)
        names = list(state)
    return for_every_tensor(measured, names)


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX file (by its name)."""
    path = Path(path)
    return path.suffix == ".onnx" and path.is_file()


def require_onnxruntime(option: str) -> None:
    """Raise MissingDependencyError, naming ``--OPTION synthetic`` and its way out, where
    the optional package onnxruntime (which runs an ONNX graph on synthetic inputs) cannot
    be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"--{option} synthetic runs an ONNX graph with the optional package "
            f"onnxruntime: pip install onnxruntime, or compress with --{option} none."
        ) from None


def _onnx_sensitivity_for_file(path: str | Path, synthetic: bool, progress: Progress | None,
                               note: Callable[[str], None] | None) -> dict[str, float] | None:
    if not synthetic:
        raise InvalidInputError(
            f"--sensitivity auto measures on the calibration data of the model's kind; there "
            f"is none for an ONNX graph ({path}): use --sensitivity synthetic (the output "
            "check's synthetic inputs, no data) or none.")
    require_onnxruntime("sensitivity")
    from weightdna.evaluate.onnx_sensitivity import onnx_sensitivity

    result = onnx_sensitivity(path, progress=progress)
    if result.measured is None:
        if note is not None:
            note(f"no output sensitivities: {result.why_not}; the --objective alone decides "
                 f"(measuring took {result.seconds:.1f} s)")
        return None
    if note is not None:
        fed = f", {result.fed}" if result.fed else ""
        note(f"output sensitivities of {len(result.measured)} tensors measured on synthetic "
             f"inputs{fed} in {result.seconds:.1f} s")
    return for_every_tensor(result.measured, load_weights(path).names)
