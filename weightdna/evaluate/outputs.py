"""Do the restored weights still compute what the original did? A check on synthetic inputs.

Weight SNR is a proxy; this runs the network. With no data of the user's, a model that can
be run is given a few synthetic inputs, and its outputs with the original and the
restored weights are compared (cosine of each input's flattened output, the worst one):

* an engine model (`weightdna train`, ``Model.save``): inputs uniform in [0, 1];
* a BERT model beside its config.json: random token sequences from its vocabulary, drawn
  as often as its order says they occur in text (`weightdna.bert.random_token_batch` with
  the token prior: uniform draws, mostly rare tokens, overstate the error of a file whose
  rare tokens' rows were given fewer bits, as the default does);
* an ONNX graph (with the optional onnxruntime): standard normal inputs for float inputs,
  runs of one small non-negative id for integer ones (below the rows of the table a Gather
  reads them from); symbolic dimensions 1, the batch SAMPLES.

`check_outputs` returns None for a model it cannot run. Where the original model gives the
same output for every synthetic input (a text detector shown 1×1 noise returns an all-zero
map), the inputs cannot tell a working restored model from a broken one: the check says so
(``informative`` False) and reports no divergence, rather than a cosine of 1 (zeros against
zeros) for a collapsed model or of 0 for a working one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.errors import InvalidInputError, ModelFileError

# Below this worst-case output cosine the restored network computes something else.
OUTPUT_COSINE_WARNING = 0.99
SAMPLES = 8


@dataclass(frozen=True)
class OutputCheck:
    """How the restored model's outputs compare with the original's on synthetic inputs."""

    kind: str  # "engine", "bert" or "onnx"
    samples: int
    worst_cosine: float
    mean_cosine: float
    informative: bool = True  # False: the original's outputs are the same for every input

    @property
    def diverged(self) -> bool:
        return self.informative and not self.worst_cosine >= OUTPUT_COSINE_WARNING

    def describe(self) -> str:
        if not self.informative:
            return (f"outputs on {self.samples} synthetic inputs ({self.kind}): the original "
                    "model gives the same output for every one, so they cannot tell whether "
                    "the restored model still works; judge it on real inputs")
        return (f"outputs on {self.samples} synthetic inputs ({self.kind}): cosine to the "
                f"original's mean {self.mean_cosine:.4f}, worst {self.worst_cosine:.4f}")


def same_for_every_input(outputs: np.ndarray, tolerance: float = 1e-6) -> bool:
    """Whether the rows (first axis) of ``outputs`` are all equal, within ``tolerance`` of
    its largest |value| (all zeros included); non-finite outputs are not."""
    rows = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    if not np.isfinite(rows).all():
        return False
    return bool(np.abs(rows - rows[0]).max(initial=0.0)
                <= tolerance * np.abs(rows).max(initial=0.0))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each pair of rows (first axis) of ``a`` and ``b``, each flattened; 1
    where the rows are equal (zeros included), 0 where one is zero."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    same = np.all(a == b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(same, 1.0, np.where(norms > 0, dots / norms, 0.0))


def check_outputs(path: str | Path, restored: Mapping[str, Any], samples: int = SAMPLES,
                  seed: int = 0) -> OutputCheck | None:
    """Compare the outputs of the model at ``path`` with its weights replaced by
    ``restored`` ({name: tensor}), on ``samples`` synthetic inputs; None when the model is
    of no kind this module can run."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    for kind, run in (("engine", _engine), ("bert", _bert), ("onnx", _onnx)):
        outputs = run(path, restored, samples, rng)
        if outputs is not None:
            cosines = row_cosines(*outputs)
            return OutputCheck(kind, samples, float(cosines.min()), float(cosines.mean()),
                               informative=not same_for_every_input(outputs[0]))
    return None


def _engine(path: Path, restored: Mapping[str, Any], samples: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    from weightdna.evaluate.accuracy import with_weights
    from weightdna.evaluate.distill import input_shape
    from weightdna.nn.model import load_model

    if path.is_dir():
        return None
    try:
        model = load_model(path)
    except ModelFileError:
        return None
    try:
        shape = input_shape(model)  # one input's shape, as the distillation makes them
    except InvalidInputError:
        return None
    inputs = rng.uniform(0.0, 1.0, size=(samples, *shape))
    return model.predict(inputs), with_weights(model, restored).predict(inputs)


def _bert(path: Path, restored: Mapping[str, Any], samples: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    from weightdna.bert import BertConfig, BertEncoder, random_token_batch
    from weightdna.weights import load_weights

    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file() or path.suffix == ".onnx":
        return None
    try:
        config = BertConfig.from_json(folder / "config.json")
    except (KeyError, ValueError, TypeError, OSError):
        return None
    ids, mask = random_token_batch(folder, config.vocab_size, samples,
                                   min(32, config.max_position_embeddings), rng, prior=True)
    outputs = []
    # One model in memory at a time: ``restored`` may decode as it is read.
    for state in (lambda: load_weights(path).state_dict(), lambda: dict(restored)):
        try:
            encoder = BertEncoder(state(), config)
        except (KeyError, ValueError, TypeError, ModelFileError):
            return None  # not a BERT the engine's forward knows
        with torch.no_grad():
            outputs.append(encoder.encode(ids, mask).numpy())
        del encoder
    return outputs[0], outputs[1]


def onnx_with_initializers(path: str | Path, restored: Mapping[str, Any] | None) -> bytes:
    """The ONNX graph at ``path`` serialised with its weights (initializers and Constant
    nodes' tensors) replaced by ``restored`` ({name: tensor}) where it names them."""
    from weightdna.weights.onnx_format import fill_weights, load_model, serialise

    model = load_model(Path(path))
    fill_weights(model, restored or {})
    return serialise(model)


# Integer inputs (token or byte ids) come in runs of one id of up to this many positions:
# iid ids make a classifier give its prior class for every input (magika at 1 bit/weight:
# worst cosine 0.9997 on iid ids, 0.174 on runs, where 34% of real files change label).
ID_RUN = 32
ID_RANGE = 100  # ids in [0, ID_RANGE), or [0, rows) of the table a Gather reads them from


def onnx_feeds(session: Any, samples: int, rng: np.random.Generator,
               skip: set[str] = frozenset(), ids: Mapping[str, int] | None = None
               ) -> dict[str, np.ndarray] | None:
    """Seeded inputs for an onnxruntime session, from its input specs: standard normal for
    float inputs; for integer ones, runs of one id (1 to ID_RUN positions along the last
    axis) below ``ids[name]`` (`gathered_rows`) or ID_RANGE. Symbolic dimensions 1, a
    symbolic first one ``samples``. None when an input is of another type."""
    feeds = {}
    for spec in session.get_inputs():
        if spec.name in skip:
            continue
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        if shape and not (isinstance(spec.shape[0], int) and spec.shape[0] > 0):
            shape[0] = samples
        if "float" in spec.type:
            feeds[spec.name] = rng.standard_normal(shape).astype(
                np.float16 if "float16" in spec.type else np.float32)
        elif "int" in spec.type:
            high = max(1, min((ids or {}).get(spec.name, ID_RANGE), ID_RANGE))
            feeds[spec.name] = _id_runs(shape, high, rng).astype(
                np.int32 if "int32" in spec.type else np.int64)
        else:
            return None
    return feeds


def _id_runs(shape: list[int], high: int, rng: np.random.Generator) -> np.ndarray:
    """Integers in [0, high) of ``shape``, constant over runs of 1 to ID_RUN positions
    along the last axis."""
    if not shape:
        return rng.integers(0, high, size=())
    length = shape[-1]
    lines = int(np.prod(shape[:-1], dtype=np.int64))
    out = np.empty((lines, length), dtype=np.int64)
    for line in out:
        start = 0
        while start < length:
            stop = start + int(rng.integers(1, ID_RUN + 1))
            line[start:stop] = rng.integers(0, high)
            start = stop
    return out.reshape(shape)


def gathered_rows(path: str | Path) -> dict[str, int]:
    """{graph input: the rows of the weight a Gather looks it up in} (directly or through a
    Cast), so that ids fed to it stay in range (a BERT's token_type_ids: 2)."""
    from weightdna.weights.onnx_format import all_nodes, load_model, weight_protos

    model = load_model(Path(path))
    weights = weight_protos(model)
    source = {i.name: i.name for i in model.graph.input}
    rows: dict[str, int] = {}
    for node in all_nodes(model.graph):
        if node.op_type == "Cast" and node.input and node.input[0] in source:
            source[node.output[0]] = source[node.input[0]]
        elif (node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in source
              and node.input[0] in weights):
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = list(weights[node.input[0]].dims)
            if -len(dims) <= axis < len(dims):
                name = source[node.input[1]]
                rows[name] = min(rows.get(name, dims[axis]), dims[axis])
    return rows


def _onnx(path: Path, restored: Mapping[str, Any], samples: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    if path.suffix != ".onnx" or not path.is_file():
        return None
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a graph that fails here is reported as unchecked, not
    # by onnxruntime's own error lines on stderr
    try:
        sessions = [onnxruntime.InferenceSession(onnx_with_initializers(path, state),
                                                 sess_options=options,
                                                 providers=["CPUExecutionProvider"])
                    for state in (None, restored)]
        feeds = onnx_feeds(sessions[0], samples, rng, skip=set(restored),
                           ids=gathered_rows(path))
        if feeds is None:
            return None
        first, second = (s.run(None, feeds)[0] for s in sessions)
    except Exception:  # noqa: BLE001 - onnxruntime raises its own types; any failure: can't run
        return None
    return np.asarray(first), np.asarray(second)
