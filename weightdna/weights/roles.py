"""What each tensor is: its role, and its place in the model's stack of layers.

Roles come from the file's structure where it has one (an ONNX graph: which operator input
a tensor feeds, `weightdna.weights.load`), else from the name and the shape (rules below,
first match wins), and can be overridden by the caller. The codec decides by role how a
tensor is stored (`weightdna.codec.roles`): only weight matrices, kernels and embeddings
are quantised at the target's rate. The layer is read from the name's structure, never
from the order of names in a file.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from weightdna.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

ROLES = ("matrix", "conv", "bias", "norm", "embedding", "statistic", "constant", "other",
         "buffer")
# Roles whose tensors are kept exactly and never fitted: state and constants, not weights.
# ``statistic``: a normalisation's running mean or variance (values from 1e-6 to 1e8 in one
# model; an absolute step zeroes the small ones). ``constant``: shapes, scales, indices.
KEPT_ROLES = frozenset({"buffer", "statistic", "constant"})

# Last name segments of tensors that are state, not learned weights.
BUFFER_LEAVES = frozenset(
    {
        "position_ids",
        "token_type_ids",
        "num_batches_tracked",
        "inv_freq",
        "masked_bias",
    }
)
STATISTIC_LEAVES = frozenset({"running_mean", "running_var", "moving_mean", "moving_variance"})
_NORM_MODULE = re.compile(r"norm|^ln(_?\w*)?$|^bn\d*$|^gn\d*$", re.IGNORECASE)
_EMBEDDING = re.compile(r"emb|^wte$|^wpe$", re.IGNORECASE)
_SEPARATORS = re.compile(r"([./])")


def split_layer(name: str) -> tuple[int | None, str]:
    """The layer index of ``name`` in its stack, and its kind (the name with that index as ``*``).

    The first path segment that is a whole number is the index in the outermost stack:
    ``encoder.layer.3.attention.self.query.weight`` is layer 3 of kind
    ``encoder.layer.*.attention.self.query.weight``. A name with no such segment has no
    layer and its kind is the name itself.
    """
    parts = _SEPARATORS.split(name)  # separators kept at the odd positions
    for k in range(0, len(parts), 2):
        if parts[k].isascii() and parts[k].isdigit():
            return int(parts[k]), "".join(parts[:k] + ["*"] + parts[k + 1 :])
    return None, name


def stack_of(kind: str) -> str | None:
    """The stack a kind belongs to (``encoder.layer`` for ``encoder.layer.*.x``), or None."""
    parts = _SEPARATORS.split(kind)
    if "*" not in parts[::2]:
        return None
    return "".join(parts[: max(parts.index("*") - 1, 0)])


def infer_role(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> str:
    """The role a tensor plays, from its name, shape and dtype."""
    parts = _SEPARATORS.split(name)[::2]
    leaf = parts[-1]
    module = parts[-2] if len(parts) > 1 else ""
    ndim = len(shape)
    if not dtype.is_floating_point or leaf in BUFFER_LEAVES:
        return "buffer"
    if leaf in STATISTIC_LEAVES:
        return "statistic"
    if ndim == 1 and _NORM_MODULE.search(module):
        return "norm"
    if ndim == 1 and leaf == "bias":
        return "bias"
    if 3 <= ndim <= 5 and leaf == "weight":
        return "conv"
    if ndim >= 2 and any(_EMBEDDING.search(p) for p in parts):
        return "embedding"
    if ndim == 2 and min(shape) > 1:  # (1, n): a vector kept 2-d (an exporter's gain)
        return "matrix"
    return "other"


# ONNX operators: the role of an initializer by the input it feeds (op type → {index: role}).
_SHAPE_INPUTS = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4),
                 "Pad": (1, 2), "ConstantOfShape": (0,), "Range": (0, 1, 2), "Squeeze": (1,),
                 "Unsqueeze": (1,), "Split": (1,), "TopK": (1,), "Resize": (1, 2, 3),
                 "Upsample": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,),
                 "CumSum": (1,), "OneHot": (1, 2), "Clip": (1, 2)}
ONNX_INPUT_ROLES: dict[str, dict[int, str]] = {
    "Conv": {1: "conv", 2: "bias"},
    "ConvTranspose": {1: "conv", 2: "bias"},
    "Gemm": {1: "matrix", 2: "bias"},
    "MatMul": {0: "matrix", 1: "matrix"},
    "BatchNormalization": {1: "norm", 2: "norm", 3: "statistic", 4: "statistic"},
    "InstanceNormalization": {1: "norm", 2: "norm"},
    "LayerNormalization": {1: "norm", 2: "norm"},
    "GroupNormalization": {1: "norm", 2: "norm"},
    "Gather": {0: "embedding"},
    "LSTM": {1: "matrix", 2: "matrix", 3: "bias"},
    "GRU": {1: "matrix", 2: "matrix", 3: "bias"},
    "RNN": {1: "matrix", 2: "matrix", 3: "bias"},
    **{op: dict.fromkeys(inputs, "constant") for op, inputs in _SHAPE_INPUTS.items()},
}
# Where one tensor feeds several inputs, the role that keeps it most exactly wins.
_ROLE_PRIORITY = ("constant", "statistic", "norm", "bias", "conv", "matrix", "embedding")


def graph_roles(nodes: Iterable[tuple[str, Sequence[str], Sequence[str]]],
                shapes: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """Roles of a graph's initializers from the operator inputs they feed, through
    Identity nodes (exporters put one between a shared initializer and its readers).

    ``nodes``: (op type, input names, output names) of every node; ``shapes``: the
    initializers' shapes. A matrix or embedding role needs 2 dimensions and a kernel 3 to
    5; a 1-d tensor fed to a matrix product is left to the name rules."""
    nodes = list(nodes)
    alias = {outputs[0]: inputs[0] for op, inputs, outputs in nodes
             if op == "Identity" and inputs and outputs}
    found: dict[str, str] = {}
    for op, inputs, _ in nodes:
        for index, role in ONNX_INPUT_ROLES.get(op, {}).items():
            if index >= len(inputs):
                continue
            name = inputs[index]
            for _ in range(len(alias)):  # at most that many hops (a cycle ends here)
                if name in shapes or name not in alias:
                    break
                name = alias[name]
            if name not in shapes:
                continue
            ndim = len(shapes[name])
            if (role in ("matrix", "embedding") and ndim != 2 and op not in ("LSTM", "GRU",
                                                                             "RNN")
                    or role == "conv" and not 3 <= ndim <= 5):
                continue
            old = found.get(name)
            if old is None or _ROLE_PRIORITY.index(role) < _ROLE_PRIORITY.index(old):
                found[name] = role
    return found


def resolve_roles(
    inferred: Mapping[str, str], dtypes: Mapping[str, torch.dtype], overrides: Mapping[str, str]
) -> dict[str, str]:
    """Apply ``overrides`` ({name or glob pattern: role}) to the inferred roles."""
    roles = dict(inferred)
    for pattern, role in overrides.items():
        if role not in ROLES:
            raise InvalidInputError(
                f"unknown role {role!r} for {pattern!r}; choose one of {', '.join(ROLES)}."
            )
        names = _matching(pattern, roles)
        if not names:
            raise InvalidInputError(
                f"role override {pattern!r} matches no tensor; check the name "
                "(`weightdna weights MODEL` lists them)."
            )
        for name in names:
            if role not in KEPT_ROLES and not dtypes[name].is_floating_point:
                raise InvalidInputError(
                    f"{name} has dtype {str(dtypes[name]).removeprefix('torch.')}: integer "
                    f"and boolean tensors are kept exactly and cannot take the role {role!r}."
                )
            roles[name] = role
    return roles


def _matching(pattern: str, names: Iterable[str]) -> list[str]:
    names = list(names)
    if pattern in names:
        return [pattern]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def sole_batchnorm(readers: Sequence[tuple[str, Sequence[str]]], value: str) -> bool:
    """Whether ``readers`` (each node that reads ``value``, as (op, inputs)) are one
    BatchNormalization alone, reading ``value`` as its input 0 with its 5 inputs."""
    return (len(readers) == 1 and readers[0][0] == "BatchNormalization"
            and len(readers[0][1]) >= 5 and readers[0][1][0] == value)


def graph_batchnorms(nodes: Iterable[tuple[str, Sequence[str], Sequence[str]]],
                     shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[str, str]]:
    """{kernel: (gain, running variance)} of each Conv whose output only a
    BatchNormalization reads (its input 0), from a graph's nodes as `graph_roles` takes
    them: the weights that tell how much each output channel's error counts
    (`weightdna.codec.ratecontrol.batchnorm_row_weights`). Through Identity nodes, as
    `graph_roles`; a kernel whose channels are not the BatchNorm's is left out."""
    nodes = list(nodes)
    alias = {outputs[0]: inputs[0] for op, inputs, outputs in nodes
             if op == "Identity" and inputs and outputs}

    def weight(name: str) -> str | None:
        for _ in range(len(alias) + 1):
            if name in shapes:
                return name
            if name not in alias:
                return None
            name = alias[name]
        return None

    readers: dict[str, list[tuple[str, Sequence[str]]]] = {}
    for op, inputs, _ in nodes:
        for name in inputs:
            readers.setdefault(name, []).append((op, inputs))
    found: dict[str, tuple[str, str]] = {}
    for op, inputs, outputs in nodes:
        if op != "Conv" or len(inputs) < 2 or not outputs:
            continue
        read = readers.get(outputs[0], [])
        if not sole_batchnorm(read, outputs[0]):
            continue
        kernel, gain, variance = (weight(n) for n in (inputs[1], read[0][1][1], read[0][1][4]))
        if kernel is None or gain is None or variance is None:
            continue
        channels = (shapes[kernel][0],) if shapes[kernel] else ()
        if shapes[gain] == channels and shapes[variance] == channels:
            found[kernel] = (gain, variance)
    return found


def name_batchnorms(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[str, str]]:
    """`graph_batchnorms` for a state dict, by PyTorch's names: a kernel ``P.weight``
    (3 to 5 dimensions) and the BatchNorm ``Q.weight``/``Q.running_var`` of as many
    channels, Q the module registered after P in a Sequential (P's last part an integer
    k, Q's k + 1: ``features.0.weight`` → ``features.1``) or named for it (``conv`` →
    ``bn``: ``layer1.0.conv2.weight`` → ``layer1.0.bn2``)."""
    found: dict[str, tuple[str, str]] = {}
    for name, shape in shapes.items():
        if not name.endswith(".weight") or not 3 <= len(shape) <= 5:
            continue
        head, _, last = name[: -len(".weight")].rpartition(".")
        prefix = f"{head}." if head else ""
        if last.isdigit():
            candidates = [f"{prefix}{int(last) + 1}"]
        else:
            candidates = [prefix + last.replace("conv", bn) for bn in ("bn", "norm")
                          if "conv" in last]
        for bn in candidates:
            gain, variance = f"{bn}.weight", f"{bn}.running_var"
            if shapes.get(gain) == shape[:1] and shapes.get(variance) == shape[:1]:
                found[name] = (gain, variance)
                break
    return found


_LSTM_WEIGHT = re.compile(r"weight_(ih|hh)((_l\d+)?(_reverse)?)$")


def lstm_gates(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """{gate matrix: H} of each LSTM's input and recurrent weights by PyTorch's names
    (``P.weight_ih``/``P.weight_hh``, ``_lK`` and ``_reverse`` suffixes as `torch.nn.LSTM`
    writes them): rows in four gates of H, input, forget, cell and output, the recurrent
    matrix (4H, H) and the input one (4H, any), both present. A GRU's (3H, H) is not
    matched; nor an ONNX LSTM operator's own W and R (its gates in another order)."""
    found: dict[str, int] = {}
    for name, shape in shapes.items():
        match = _LSTM_WEIGHT.search(name)
        if match is None or match.group(1) != "hh" or len(shape) != 2:
            continue
        hidden = shape[1]
        head = name[: match.start()]
        ih = f"{head}weight_ih{match.group(2)}"
        ih_shape = shapes.get(ih)
        if (hidden > 0 and shape[0] == 4 * hidden and ih_shape is not None
                and len(ih_shape) == 2 and ih_shape[0] == 4 * hidden):
            found[name] = found[ih] = hidden
    return found
