"""Function-preserving permutations of hidden units, and a canonical order that smooths weights.

Reordering the hidden units of a layer — its output rows and bias, and the matching input
columns of the layer that reads them — does not change what the network computes. The
order is free, so we may pick one under which neighbouring units look alike (NeRN orders
kernels by similarity for the same reason), which makes the weights a smoother signal over
their coordinates.

A permutation ``p`` of n units means: the unit at new position k is old unit ``p[k]``,
i.e. ``new = old[p]`` along every axis the units live on; ``inverse_permutation(p)`` undoes
it exactly (indexing moves values, it never rounds them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from weightdna.bert import BertConfig
from weightdna.errors import InvalidInputError

# Engine layers that act on each unit (or channel) separately, so they commute with a
# permutation of units. Softmax normalises over the unit axis but is permutation-equivariant.
_UNITWISE = frozenset(
    {
        "relu",
        "leakyrelu",
        "sigmoid",
        "tanh",
        "sine",
        "gelu",
        "softmax",
        "identity",
        "dropout",
        "maxpool2d",
        "avgpool2d",
    }
)
_PRODUCERS = frozenset({"dense", "conv2d"})


@dataclass(frozen=True)
class TensorAxis:
    """An axis of one tensor that a permutation of units reorders.

    block: how many consecutive entries belong to one unit — the head width for attention
    heads, H·W for a conv channel seen through Flatten by a Dense layer, else 1.
    """

    name: str
    axis: int
    block: int = 1


@dataclass(frozen=True)
class UnitGroup:
    """A set of interchangeable units and every tensor axis they live on.

    incoming / outgoing: the weight axes (among ``axes``) that hold what a unit reads and
    what reads it; their slices describe the unit when ordering by similarity.
    """

    name: str
    size: int
    axes: tuple[TensorAxis, ...]
    incoming: tuple[TensorAxis, ...]
    outgoing: tuple[TensorAxis, ...]


# ---------------------------------------------------------------------------------------
# Finding the units


def _layer_kinds(architecture: Any) -> list[str]:
    layers = getattr(architecture, "layers", architecture)
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise InvalidInputError(
            "architecture must be 'bert', a BertConfig, an engine Model, or a sequence of "
            f"engine layers or layer names; got {type(architecture).__name__}"
        )
    kinds = []
    for layer in layers:
        if isinstance(layer, str):
            kinds.append(layer.lower())
        elif isinstance(layer, Mapping):  # an entry of Model.architecture()
            kinds.append(str(layer.get("type", "")).lower())
        else:
            kinds.append(type(layer).__name__.lower())
    return kinds


def engine_unit_groups(state_dict: Mapping[str, Any], architecture: Any) -> list[UnitGroup]:
    """Hidden units of an engine MLP/CNN (state-dict names ``layers.{i}.weight``/``bias``).

    architecture: the engine ``Model``, its layers, ``Model.architecture()``, or the layers'
    class names in order (``["Dense", "ReLU", "Dense"]``). The outputs of each Dense/Conv2D
    whose values reach the next Dense/Conv2D only through unit-wise layers (activations,
    dropout, pooling, Flatten) form a group; any other layer in between leaves those units
    in place.
    """
    kinds = _layer_kinds(architecture)
    groups: list[UnitGroup] = []
    producer: int | None = None  # index of the last Dense/Conv2D whose units are open
    flattened = False
    for i, kind in enumerate(kinds):
        if kind in _PRODUCERS:
            weight = f"layers.{i}.weight"
            if weight not in state_dict:
                raise InvalidInputError(f"architecture has a {kind} at {i} but no {weight}")
            ndim = len(state_dict[weight].shape)
            if ndim != (2 if kind == "dense" else 4):
                raise InvalidInputError(
                    f"{weight} has {ndim} dimensions, which a {kind} layer cannot have; the "
                    "architecture does not match the weights"
                )
            if producer is not None:
                groups.append(_engine_group(state_dict, producer, i, kinds, flattened))
            producer, flattened = i, False
        elif kind == "flatten":
            flattened = True
        elif kind not in _UNITWISE:
            producer = None  # an unknown layer may mix units: leave them alone
    return groups


def _engine_group(
    state_dict: Mapping[str, Any], src: int, dst: int, kinds: list[str], flattened: bool
) -> UnitGroup:
    out_weight = state_dict[f"layers.{src}.weight"]
    in_weight = state_dict[f"layers.{dst}.weight"]
    units = out_weight.shape[0]
    fan_in = in_weight.shape[1]
    if kinds[src] == "conv2d" and kinds[dst] == "dense":
        # Flatten of (C, H, W) puts channel c at columns c·H·W … (c+1)·H·W − 1.
        if not flattened or fan_in % units:
            raise InvalidInputError(
                f"layers.{dst} (Dense) reads {fan_in} inputs, which is not a Flatten of the "
                f"{units} channels of layers.{src}; the architecture does not match the weights"
            )
        block = fan_in // units
    elif fan_in != units:
        raise InvalidInputError(
            f"layers.{dst} reads {fan_in} inputs but layers.{src} gives {units}; the "
            "architecture does not match the weights"
        )
    else:
        block = 1
    produced = TensorAxis(f"layers.{src}.weight", 0)
    consumed = TensorAxis(f"layers.{dst}.weight", 1, block)
    axes = [produced, consumed]
    if f"layers.{src}.bias" in state_dict:
        axes.append(TensorAxis(f"layers.{src}.bias", 0))
    return UnitGroup(f"layers.{src}", units, tuple(axes), (produced,), (consumed,))


def _bert_prefix(state_dict: Mapping[str, Any]) -> str:
    for name in state_dict:
        match = re.match(r"(.*?)encoder\.layer\.\d+\.", name)
        if match:
            return match.group(1)
    raise InvalidInputError("no tensor named encoder.layer.{i}.…: this is not a BERT state dict")


def bert_unit_groups(state_dict: Mapping[str, Any], num_heads: int) -> list[UnitGroup]:
    """Feed-forward units and attention heads of every layer of a BERT state dict.

    Names are Hugging Face ``BertModel``'s, optionally behind a prefix such as ``bert.``.
    """
    prefix = _bert_prefix(state_dict)
    layers = sorted(
        {
            int(m.group(1))
            for n in state_dict
            if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", n))
        }
    )
    groups = []
    for i in layers:
        p = f"{prefix}encoder.layer.{i}."
        inner = TensorAxis(p + "intermediate.dense.weight", 0)
        outer = TensorAxis(p + "output.dense.weight", 1)
        groups.append(
            UnitGroup(
                p + "intermediate",
                state_dict[inner.name].shape[0],
                (inner, TensorAxis(p + "intermediate.dense.bias", 0), outer),
                (inner,),
                (outer,),
            )
        )
        width = state_dict[p + "attention.self.query.weight"].shape[0]
        if width % num_heads:
            raise InvalidInputError(
                f"{p}attention.self.query has {width} rows, not a multiple of "
                f"num_heads={num_heads}; check the model's num_attention_heads"
            )
        head_dim = width // num_heads
        qkv = [
            TensorAxis(f"{p}attention.self.{t}.{kind}", 0, head_dim)
            for t in ("query", "key", "value")
            for kind in ("weight", "bias")
        ]
        mixed = TensorAxis(p + "attention.output.dense.weight", 1, head_dim)
        groups.append(
            UnitGroup(
                p + "attention.heads",
                num_heads,
                (*qkv, mixed),
                tuple(a for a in qkv if a.name.endswith("weight")),
                (mixed,),
            )
        )
    return groups


def unit_groups(
    state_dict: Mapping[str, Any], architecture: Any, num_heads: int | None = None
) -> list[UnitGroup]:
    """The permutable unit groups of a model.

    architecture: "bert" (give num_heads) or a BertConfig for a Hugging Face BERT state
    dict; an engine Model, its layers or their class names for an engine state dict.
    """
    if isinstance(architecture, BertConfig):
        return bert_unit_groups(state_dict, architecture.num_attention_heads)
    if isinstance(architecture, str):
        if architecture != "bert":
            raise InvalidInputError(
                f"unknown architecture {architecture!r}; use 'bert', a BertConfig or an "
                "engine Model"
            )
        if num_heads is None:
            raise InvalidInputError(
                "a BERT state dict does not record its number of attention heads: pass "
                "num_heads= (12 for all-MiniLM-L6-v2) or a BertConfig as architecture"
            )
        return bert_unit_groups(state_dict, num_heads)
    return engine_unit_groups(state_dict, architecture)


# ---------------------------------------------------------------------------------------
# Applying permutations


def _take(tensor: Any, perm: np.ndarray, axis: TensorAxis) -> Any:
    shape = tuple(tensor.shape)
    if shape[axis.axis] != len(perm) * axis.block:
        raise InvalidInputError(
            f"{axis.name} has {shape[axis.axis]} entries along axis {axis.axis}, but the "
            f"permutation covers {len(perm)} units of {axis.block}"
        )
    split = shape[: axis.axis] + (len(perm), axis.block) + shape[axis.axis + 1 :]
    if isinstance(tensor, torch.Tensor):
        index = torch.as_tensor(perm, dtype=torch.long, device=tensor.device)
        return tensor.reshape(split).index_select(axis.axis, index).reshape(shape)
    return np.take(np.asarray(tensor).reshape(split), perm, axis=axis.axis).reshape(shape)


def permute(
    state_dict: Mapping[str, Any],
    groups: Sequence[UnitGroup],
    permutations: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Apply ``permutations`` (group name -> index array) to every tensor their groups touch.

    Returns a new dict; tensors no permutation touches are the same objects as before.
    NumPy arrays stay NumPy arrays and torch tensors stay torch tensors.
    """
    by_name = {g.name: g for g in groups}
    unknown = set(permutations) - set(by_name)
    if unknown:
        raise InvalidInputError(f"permutations for unknown unit groups: {sorted(unknown)}")
    out = dict(state_dict)
    for name, perm in permutations.items():
        group = by_name[name]
        perm = _check_permutation(perm, group)
        for axis in group.axes:
            out[axis.name] = _take(out[axis.name], perm, axis)
    return out


def _check_permutation(perm: Any, group: UnitGroup) -> np.ndarray:
    perm = np.asarray(perm)
    if perm.shape != (group.size,) or not np.array_equal(np.sort(perm), np.arange(group.size)):
        raise InvalidInputError(
            f"the permutation for {group.name} must hold each of 0..{group.size - 1} once"
        )
    return perm.astype(np.int64)


def inverse_permutation(perm: Any) -> np.ndarray:
    """The permutation that undoes ``perm``: ``old = new[inverse_permutation(perm)]``."""
    return np.argsort(np.asarray(perm), kind="stable")


def invert(permutations: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of every permutation in a group-name -> permutation mapping."""
    return {name: inverse_permutation(p) for name, p in permutations.items()}


def random_permutations(
    groups: Sequence[UnitGroup], seed: int | np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """A uniformly random permutation for every group."""
    rng = np.random.default_rng(seed)
    return {g.name: rng.permutation(g.size) for g in groups}


# ---------------------------------------------------------------------------------------
# Ordering by similarity


def _as_numpy(tensor: Any) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().cpu().to(torch.float64).numpy()
    return np.asarray(tensor, dtype=np.float64)


def _slices(state_dict: Mapping[str, Any], axes: Sequence[TensorAxis], size: int) -> np.ndarray:
    parts = []
    for axis in axes:
        x = _as_numpy(state_dict[axis.name])
        split = x.shape[: axis.axis] + (size, axis.block) + x.shape[axis.axis + 1 :]
        parts.append(np.moveaxis(x.reshape(split), axis.axis, 0).reshape(size, -1))
    return np.concatenate(parts, axis=1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


FEATURES = ("incoming", "outgoing", "both")


def unit_vectors(
    state_dict: Mapping[str, Any], group: UnitGroup, features: str = "incoming"
) -> np.ndarray:
    """One row per unit of ``group``: the weights it reads, is read by, or both (float64).

    features: "incoming" (rows of the producing weight: a Dense row, a conv kernel, a
    head's query/key/value rows), "outgoing" (the consuming weight's columns), or "both",
    each side scaled to unit norm so neither dominates the cosine.
    """
    if features not in FEATURES:
        raise InvalidInputError(f"features must be one of {FEATURES}, got {features!r}")
    if features == "incoming":
        return _slices(state_dict, group.incoming, group.size)
    if features == "outgoing":
        return _slices(state_dict, group.outgoing, group.size)
    return np.concatenate(
        [
            _unit_rows(_slices(state_dict, group.incoming, group.size)),
            _unit_rows(_slices(state_dict, group.outgoing, group.size)),
        ],
        axis=1,
    )


def nearest_neighbour_order(vectors: Any, start: int | None = None) -> np.ndarray:
    """Greedy nearest-neighbour chain by cosine similarity over the rows of ``vectors``.

    start: the first unit; by default the row with the largest norm (ties: the lowest index).
    Each next unit is the unvisited one most similar to the current; O(n²) work, one
    n×n similarity matrix.
    """
    x = _as_numpy(vectors)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    x = x.reshape(n, -1)
    norms = np.linalg.norm(x, axis=1)
    if start is None:
        start = int(np.argmax(norms))
    if not 0 <= start < n:
        raise InvalidInputError(f"start must be in 0..{n - 1}, got {start}")
    similarity = _unit_rows(x) @ _unit_rows(x).T
    # Visited units get −∞ added to every row read; a contiguous add per step is much
    # faster than blanking a strided column of the similarity matrix.
    visited = np.zeros(n)
    order = np.empty(n, dtype=np.int64)
    current = start
    for k in range(n):
        order[k] = current
        visited[current] = -np.inf
        current = int(np.argmax(similarity[current] + visited))
    return order


def neighbour_correlation(matrix: Any, axis: int = 0) -> float:
    """Mean Pearson correlation between adjacent slices along ``axis`` (rows for axis 0).

    Each slice is flattened; a constant slice counts as correlation 0 with its neighbours.
    """
    x = _as_numpy(matrix)
    if x.ndim == 0 or x.shape[axis] < 2:
        raise InvalidInputError(
            f"neighbour_correlation needs at least two slices along axis {axis}, "
            f"got shape {x.shape}"
        )
    x = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1)
    x = x / np.where(norms > 0, norms, 1.0)[:, None]
    return float(np.mean(np.sum(x[:-1] * x[1:], axis=1)))


def canonicalize(
    state_dict: Mapping[str, Any],
    architecture: Any = "bert",
    *,
    num_heads: int | None = None,
    features: str = "incoming",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reorder every unit group by a similarity chain; the network computes the same function.

    Returns the reordered state dict and the permutation applied to each group;
    ``restore_order`` with those permutations gives back the original tensors exactly.
    architecture and num_heads as for ``unit_groups``; features as for ``unit_vectors``
    ("incoming" smooths the producing rows, "both" trades some of that for smooth
    consuming columns). Each chain starts at the unit whose incoming weights have the
    largest norm.
    """
    groups = unit_groups(state_dict, architecture, num_heads)
    # Other groups only permute entries within a unit's vectors, the same way for every
    # unit, which leaves cosine similarity unchanged: all orders can be computed from the
    # original state dict.
    permutations = {}
    for g in groups:
        start = int(np.argmax(np.linalg.norm(unit_vectors(state_dict, g), axis=1)))
        vectors = unit_vectors(state_dict, g, features)
        permutations[g.name] = nearest_neighbour_order(vectors, start=start)
    return permute(state_dict, groups, permutations), permutations


def restore_order(
    state_dict: Mapping[str, Any],
    architecture: Any,
    permutations: Mapping[str, np.ndarray],
    *,
    num_heads: int | None = None,
) -> dict[str, Any]:
    """Undo ``canonicalize`` (or any ``permute``): put every unit back where it was."""
    groups = unit_groups(state_dict, architecture, num_heads)
    return permute(state_dict, groups, invert(permutations))
