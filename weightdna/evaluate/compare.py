"""Compare any model with its restored weights: the outputs of two callables on the same
inputs, and the two kinds of model every framework can give — a Hugging Face folder (any
`transformers` model: last hidden states, and a classification head's choices) and an ONNX
file (every output, run by onnxruntime).

`compare_outputs` is the one measure: for each output, the cosine of each sample's
original and restored values (rows: the first axis, flattened; where each sample has one
value, a probability, the one cosine of the column of all of them), the relative error
‖restored − original‖ / ‖original‖ over all of them, and, for logits (an output called
``logits``, or any 2-d output of an ONNX model), how often both argmaxes agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.errors import InvalidInputError, MissingDependencyError, ModelFileError
from weightdna.evaluate.outputs import output_cosines, row_cosines

Outputs = Mapping[str, Any]
SUPPORTED = ("an engine model file (`weightdna train`), a Hugging Face model folder (with "
             "its config.json), an ONNX file, or 'minilm'")


def _as_outputs(value: Any) -> dict[str, np.ndarray]:
    """A callable's result as {name: array}: a mapping as it is, a sequence by position."""
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = ((f"output{i}", v) for i, v in enumerate(value))
    else:
        items = (("output", value),)
    result = {}
    for name, v in items:
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().to(torch.float64).numpy()
        array = np.asarray(v, dtype=np.float64)
        result[str(name)] = array.reshape(1, -1) if array.ndim == 0 else array
    return result


def compare_outputs(original: Callable[[Any], Any], restored: Callable[[Any], Any],
                    inputs: Iterable[Any], logits: Sequence[str] = ("logits",)) -> dict:
    """Run both callables on every input and compare what they return.

    Each callable takes one input (a batch) and returns an array or tensor, a sequence of
    them, or a mapping of names to them; rows (the first axis) are samples. logits: the
    outputs whose argmax (last axis) is a choice, compared for agreement.
    Returns {"outputs": {name: {"samples", "mean_cosine", "min_cosine", "relative_error"
    [, "argmax_agreement"]}}, "worst_cosine"}.
    """
    cosines: dict[str, list[np.ndarray]] = {}
    errors: dict[str, list[float]] = {}
    energy: dict[str, list[float]] = {}
    agree: dict[str, list[np.ndarray]] = {}
    single: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for item in inputs:
        first, second = _as_outputs(original(item)), _as_outputs(restored(item))
        if set(first) != set(second):
            raise InvalidInputError(f"the two models return different outputs: "
                                    f"{sorted(first)} and {sorted(second)}.")
        for name, a in first.items():
            b = second[name]
            if a.shape != b.shape:
                raise InvalidInputError(f"output {name!r} is {a.shape} from the original and "
                                        f"{b.shape} from the restored model.")
            cosines.setdefault(name, []).append(row_cosines(a, b))
            if a.size == a.shape[0]:  # one value per sample: kept for `output_cosines`
                single.setdefault(name, []).append((a.reshape(-1), b.reshape(-1)))
            errors.setdefault(name, []).append(float(((b - a) ** 2).sum()))
            energy.setdefault(name, []).append(float((a ** 2).sum()))
            if name in logits and a.ndim >= 2 and a.shape[-1] > 1:
                agree.setdefault(name, []).append(
                    (a.argmax(-1) == b.argmax(-1)).reshape(-1))
    if not cosines:
        raise InvalidInputError("no inputs to compare the models on.")
    outputs = {}
    for name, parts in cosines.items():
        values = np.concatenate(parts)
        count = int(values.size)
        if len(single.get(name, ())) == len(parts) and values.size > 1:
            # One value per sample (a probability), whose per-sample cosine is only its
            # sign: the one cosine of every sample's value (`output_cosines`).
            values = output_cosines(np.concatenate([a for a, _ in single[name]]),
                                    np.concatenate([b for _, b in single[name]]))
        signal = sum(energy[name])
        figures = {"samples": count, "mean_cosine": float(values.mean()),
                   "min_cosine": float(values.min()),
                   "relative_error": math.sqrt(sum(errors[name]) / signal) if signal > 0
                   else (0.0 if sum(errors[name]) == 0 else math.inf)}
        if name in agree:
            figures["argmax_agreement"] = float(np.concatenate(agree[name]).mean())
        outputs[name] = figures
    return {"outputs": outputs,
            "worst_cosine": min(o["min_cosine"] for o in outputs.values())}


# ---- ONNX ----------------------------------------------------------------------------------


def _session(model: bytes | Path) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("evaluating an ONNX model needs the optional package "
                                     "onnxruntime: pip install onnxruntime") from None
    source = model if isinstance(model, bytes) else str(model)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # synthetic inputs it fails on are tried, then skipped
    try:
        return onnxruntime.InferenceSession(source, sess_options=options,
                                            providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own types
        what = "the model with the restored weights" if isinstance(model, bytes) else model
        raise ModelFileError(f"onnxruntime cannot run {what} "
                             f"({str(exc).splitlines()[0]}).") from None


def evaluate_onnx(original: str | Path, restored: str | Path, inputs: str | Path | None = None,
                  samples: int = 8, seed: int = 0) -> dict:
    """Every output of the ONNX model ``original`` and of ``restored`` (an ONNX file, or
    restored weights — safetensors, .dna, a folder — put into the original's graph) on
    ``inputs`` (an .npz of arrays by input name) or on ``samples`` seeded synthetic inputs
    the original runs on (`outputs.onnx_inputs`: from the graph's input specs, else one at a
    time with guessed lengths and compared values; how, under "fed")."""
    from weightdna.evaluate.outputs import onnx_inputs, onnx_with_initializers
    from weightdna.weights import load_weights

    original = Path(original)
    first = _session(original)
    weights = {info.name for info in load_weights(original).infos}
    restored = Path(restored)
    if restored.suffix == ".onnx" and restored.is_file():
        second = _session(restored)
    else:
        state = restored_state(restored)
        missing = weights - set(state)
        if missing:  # the graph would keep its own: the comparison would be of nothing
            raise InvalidInputError(f"{restored} lacks weights of {original}'s graph (e.g. "
                                    f"{sorted(missing)[0]!r}); give the weights restored "
                                    "from that model.")
        second = _session(onnx_with_initializers(original, state))
    if inputs is not None:
        try:
            with np.load(inputs, allow_pickle=False) as data:
                feeds = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read the inputs {inputs} ({exc}); give an .npz "
                                    "of arrays named as the model's inputs.") from None
        wanted = {spec.name for spec in first.get_inputs()}
        if set(feeds) != wanted:
            raise InvalidInputError(f"{inputs} holds {sorted(feeds)}; the model's inputs are "
                                    f"{sorted(wanted)}.")
        batches, fed = [feeds], ""
    else:
        found = onnx_inputs(first, original, samples, np.random.default_rng(seed),
                            skip=weights)
        if found is None:
            raise InvalidInputError(
                f"{original} did not run on synthetic inputs made from its input specs, nor "
                "on a few guesses of lengths and of the values it compares scalar inputs "
                "with; give --inputs X.npz.")
        batches, fed = found.feeds, found.fed
    names = [o.name for o in first.get_outputs()]
    two_d = [o.name for o in first.get_outputs() if len(o.shape or ()) == 2]

    def run(session: Any) -> Callable[[dict], dict]:
        return lambda batch: dict(zip(names, session.run(names, batch), strict=True))

    result = compare_outputs(run(first), run(second), batches, logits=two_d)
    return {"task": "onnx", **({"fed": fed} if fed else {}), **result}


def restored_state(path: Path) -> dict[str, torch.Tensor]:
    """The restored weights at ``path`` by name: a .dna file decoded, else any weights file
    or folder `load_weights` reads."""
    from weightdna.weights import load_weights

    if path.suffix == ".dna":
        from weightdna.codec.container import read_dna_file

        dna = read_dna_file(path)
        return {name: dna.tensor(name) for name in dna.names}
    return load_weights(path).state_dict()


# ---- Hugging Face ----------------------------------------------------------------------------


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("running a Hugging Face model (to evaluate it, or to "
                                     "calibrate one that is not a BERT) needs the optional "
                                     "package transformers: pip install transformers") from None
    return transformers


def load_hf_model(folder: Path, restored: Path | None = None) -> Any:
    """The model of a Hugging Face ``folder`` with its head (the class its config names,
    else AutoModel), in eval mode; with ``restored`` weights (a folder, a .dna file or any
    weights file, the checkpoint's tensor names) in place of its own."""
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(str(folder))
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        cls = transformers.AutoModel
    source = restored if restored is not None and restored.is_dir() else folder
    try:
        model = cls.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"transformers cannot load {source}: "
                             f"{str(exc).splitlines()[0]}") from None
    if restored is not None and not restored.is_dir():
        _load_checkpoint(model, restored_state(restored), folder, restored)
    return model.eval()


def aliases(name: str, prefix: str) -> tuple[str, str, str]:
    """The names a tensor may go by in a transformers model and in its checkpoint, which
    differ by the model's ``base_model_prefix`` (a ``BertModel`` loaded from a
    ``BertForSequenceClassification`` checkpoint reads ``bert.encoder…`` as ``encoder…``,
    and the other way round): the name itself, with the prefix, and without it."""
    return name, f"{prefix}.{name}", name.removeprefix(f"{prefix}.")


def _load_checkpoint(model: Any, state: Mapping[str, torch.Tensor], folder: Path,
                     restored: Path) -> None:
    """Put ``state`` (named as the folder's checkpoint) into ``model``: every tensor of the
    original checkpoint must find its parameter, under its own name or the model's prefix."""
    from weightdna.weights import load_weights

    own = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "")
    expected = set(load_weights(folder).names)
    loaded = {}
    for name, value in state.items():
        for key in aliases(name, prefix):
            if key in own and tuple(own[key].shape) == tuple(value.shape):
                loaded[key] = value.to(own[key].dtype)
                break
    missing = expected - set(state)
    if missing or not loaded:
        raise InvalidInputError(f"{restored} lacks tensors of {folder}'s checkpoint (e.g. "
                                f"{sorted(missing)[:1] or sorted(expected)[:1]}); give the "
                                "weights restored from that model.")
    model.load_state_dict(loaded, strict=False)


def load_hf_tokenizer(folder: Path) -> Any:
    """The Hugging Face folder's own tokenizer (transformers.AutoTokenizer, its local files
    only), padding with its end or unknown token when it names no padding token."""
    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder),
                                                               local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{folder} has no tokenizer transformers can load "
                             f"({str(exc).splitlines()[0]}); put the model's tokenizer "
                             "files (tokenizer.json or vocab files) in the folder.") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def evaluate_hf(original: str | Path, restored: str | Path, texts: Sequence[str],
                batch_size: int = 16) -> dict:
    """The Hugging Face model in the folder ``original`` and the same model with ``restored``
    weights (a folder, a .dna file or a weights file) on ``texts``, tokenized by the
    folder's own tokenizer: the last hidden state of every non-padding token, and the
    logits of a classification head, compared by `compare_outputs`."""
    _transformers()
    original = Path(original)
    if not (original / "config.json").is_file():
        raise InvalidInputError(f"{original} is not a Hugging Face model folder (no "
                                "config.json).")
    tokenizer = load_hf_tokenizer(original)
    models = [load_hf_model(original), load_hf_model(original, Path(restored))]
    batches = [tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                         max_length=128, return_tensors="pt")
               for i in range(0, len(texts), batch_size)]

    def run(model: Any) -> Callable[[Any], dict]:
        def forward(batch: Any) -> dict:
            with torch.no_grad():
                out = model(**batch, output_hidden_states=True)
            keep = batch["attention_mask"].bool()
            result = {"last_hidden_state": out.hidden_states[-1][keep]}
            value = getattr(out, "logits", None)
            if value is not None:
                result["logits"] = value[keep] if value.ndim == 3 else value
            return result

        return forward

    return {"task": "hf", "model": type(models[0]).__name__, "texts": len(texts),
            **compare_outputs(run(models[0]), run(models[1]), batches)}
