"""Data-free GPTQ calibration of an ONNX graph: H = XᵀX/N of each weight's inputs, recorded
by onnxruntime on synthetic inputs.

A weight is calibrated where GPTQ can serve it (`served`): it is read only as the weight
of a ``Conv`` (input 1, any rank, stride, pads, dilation, groups), of a ``Gemm`` (input 1
with ``transB`` = 1, or input 0 with ``transA`` = 0) or of a ``MatMul`` (input 0, a
matrix), so that its rows (of ``weight.reshape(out, -1)``, as the codec reads them) meet
its inputs. Everything else keeps the coding it gets without calibration: a ``MatMul``'s
right operand and a ``Gemm`` weight with the other transpose (stored (in, out): GPTQ works
along rows), ``ConvTranspose`` kernels, LSTM/GRU weights, weights read through another op
(a Transpose, a Slice) or inside a Loop/Scan body, and those the synthetic run never
reaches (the branch of an ``If`` for another sample rate).

The graph is rewritten once (`exposing_graph`): every served node's data input becomes an
extra graph output, bubbled out of ``If`` branches as extra branch outputs (the other
branch gives an empty tensor), and onnxruntime runs it with its graph optimisations off
(`weightdna.evaluate.onnx_sensitivity`'s session, so that no node is fused away). A
``Conv`` input is turned into its im2col rows with the columns in the weight's own
flattened order (c, k₁, k₂, …) (`conv_columns`); a grouped conv's groups are pooled as
rows, since all of its rows share one H in the codec. The moments are those of
`weightdna.evaluate.moments` (`Moments`), and the Hessians reach the codec as any
{name: H} calibration does (`compress_model`'s ``calibration``).

The inputs are `weightdna.evaluate.outputs.onnx_inputs`' (the output check's and the
synthetic sensitivities': standard normal floats, 48×192 strips for open image sides, runs
of ids, the ladder of guesses), ``samples`` of them; where the graph's image input goes
through a Conv into a BatchNorm, that input is redrawn so that the BatchNorm's batch
statistics are its running ones (`INPUTS`, `weightdna.evaluate.bn_inputs`).

An option (``--calibration synthetic``), not the default for ONNX files: on the panel's
unseen models it rescued rapidocr's recognizer at 3 bits per weight (3% → 64% of lines
read as the original reads them) and helped its detector there, but cost its angle
classifier (0.877 → 0.73 of its calls), Silero VAD (0.941 → 0.907) and magika (0.956 →
0.945) at 3, and tied at 2; inputs at a speech level for Silero or random bytes for magika
did no better (BENCHMARKS.md, "Data-free GPTQ for ONNX graphs"). Noise is not the data: GPTQ
moves the error into the directions the noise does not reach, and the data does. On the
BatchNorm-matched inputs, through the CLI's budget, it helps rapidocr's detector at 2 and 3
bits per weight and its angle classifier a little at 3, but its recognizer reads fewer
lines than without it (BENCHMARKS.md, "GPTQ on BatchNorm-matched inputs"): still an option.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from weightdna.evaluate.moments import Moments
from weightdna.evaluate.outputs import onnx_inputs

SAMPLES = 32  # synthetic inputs the Hessians are measured on
# Added to each H's diagonal, times its mean diagonal, before the codec's own damping: a
# column the synthetic inputs never reach (a ReLU channel dead on noise) is then rounded
# on its own rather than zeroed as an input the data never shows, and GPTQ cannot push the
# error into directions noise does not reach but data does. Measured (BENCHMARKS.md,
# "Data-free GPTQ for ONNX graphs"): 1.0 kept more than 0.01 (GPTQ's usual damping) on
# Silero VAD and magika at 2 and 3 bits per weight and on rapidocr's recognizer and angle
# classifier at 3; less on its detector (at 2: 0.802 against 0.862).
LOADING = 1.0
# A weight whose inputs gave fewer rows than this many per column of H is left to rounding
# (a squeeze-excite conv reads one pooled row per sample: H of rank at most the samples).
# 0: none is (measured on ocrcls only; BENCHMARKS.md, "Data-free GPTQ for ONNX graphs").
MIN_ROWS_PER_COLUMN = 0.0
# The inputs the Hessians are measured on where ``feeds`` is not given: "normal" (the output
# check's, `onnx_inputs`) or "batchnorm" (where the graph's image input goes through a Conv
# into a BatchNormalization, those inputs redrawn so that its batch statistics are its
# running ones, `weightdna.evaluate.bn_inputs.matched_feeds`; other graphs keep the output
# check's: the ZeroQ + GPTQ recipe). Through the CLI at 2-3 bits per weight "batchnorm" kept
# more than "normal" on rapidocr's three nets: the angle classifier's calls 70.1% → 75.3%
# (9 targets 2.9-3.1), the recognizer's lines 41.3% → 52.0% at 3, the detector's text pixels
# 85.9% → 88.9% at 2 and 93.7% → 95.1% at 3 (BENCHMARKS.md, "GPTQ on BatchNorm-matched
# inputs"). Not a default: the recognizer reads fewer lines with it than without GPTQ.
INPUTS = "batchnorm"
INPUT_KINDS = ("normal", "batchnorm")
ROWS = 8192  # im2col rows per moment update (bounds the float64 copy)

# What `onnx_hessians` leaves to the coding without calibration, and why.
LEFT_ALONE = {
    "transposed": "weights stored (in, out) (a MatMul's right operand, a Gemm weight with "
                  "the other transpose): GPTQ works along a weight's rows",
    "other": "weights read by other ops (LSTM, ConvTranspose, Slice, Transpose, ...) or "
             "inside a Loop/Scan body",
    "unreached": "weights the synthetic run never reaches (e.g. an If branch not taken)",
    "few": "weights whose inputs gave too few rows for their columns",
}


@dataclass(frozen=True)
class Use:
    """A node reading a weight as GPTQ can serve it: the op, which input, its attributes."""

    op: str
    index: int
    data: str  # the name of the input the weight's rows meet
    attributes: Mapping[str, Any] = field(default_factory=dict)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _use(node: Any, index: int, shape: Sequence[int]) -> Use | str:
    """How ``node`` reads the weight at its input ``index`` (of ``shape``): a `Use`, or the
    `LEFT_ALONE` kind it falls under."""
    attributes = _attributes(node)
    op = node.op_type
    if op == "Conv" and index == 1 and len(shape) >= 3:
        return Use(op, index, node.input[0], attributes)
    if op == "Gemm" and len(shape) == 2 and len(node.input) >= 2:
        if index == 1:
            return (Use(op, index, node.input[0], attributes)
                    if attributes.get("transB", 0) else "transposed")
        if index == 0:
            return (Use(op, index, node.input[1], attributes)
                    if not attributes.get("transA", 0) else "transposed")
    if op == "MatMul" and len(shape) == 2:
        return Use(op, index, node.input[1], attributes) if index == 0 else "transposed"
    return "other"


def served(model: Any, names: Sequence[str], shapes: Mapping[str, Sequence[int]]
           ) -> tuple[dict[str, list[Use]], dict[str, list[str]]]:
    """({weight: its `Use`s}, {`LEFT_ALONE` kind: weights}) over ``names``: a weight is
    served where every node that reads it reads it as a `Use`, none inside a Loop/Scan."""
    from weightdna.weights.onnx_format import scopes

    wanted = set(names)
    uses: dict[str, list[Use]] = {}
    refused: dict[str, str] = {}
    for graph, inside_loop in scopes(model.graph):
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name not in wanted:
                    continue
                use = "other" if inside_loop else _use(node, index, shapes[name])
                if isinstance(use, str):
                    refused.setdefault(name, use)
                else:
                    uses.setdefault(name, []).append(use)
    left: dict[str, list[str]] = {kind: [] for kind in LEFT_ALONE}
    for name in names:
        if name in refused:
            left[refused[name]].append(name)
            uses.pop(name, None)
        elif name not in uses:
            left["other"].append(name)
    return uses, left


def localised(model: Any, names: Sequence[str]) -> Any:
    """``model`` (changed in place and returned) with every node of a subgraph that reads one
    of the weights ``names`` reading its other inputs through an Identity made in that
    subgraph: a value from the outer scope read in an ``If`` branch is then recorded only
    when that branch runs (the taken branch's, not every branch's)."""
    from onnx import helper

    from weightdna.weights.onnx_format import scopes

    wanted = set(names)
    count = 0
    for graph, _ in list(scopes(model.graph))[1:]:
        nodes = []
        for node in graph.node:
            if wanted & set(node.input):
                for index, value in enumerate(node.input):
                    if value and value not in wanted:
                        local = f"{value}__weightdna_local_{count}"
                        count += 1
                        nodes.append(helper.make_node("Identity", [value], [local]))
                        node.input[index] = local
            nodes.append(node)
        if len(nodes) != len(graph.node):
            copies = [type(n)() for n in nodes]
            for copy, node in zip(copies, nodes, strict=True):
                copy.CopyFrom(node)
            del graph.node[:]
            graph.node.extend(copies)
    return model


def _exposed_name(name: str) -> str:
    return f"{name}__weightdna_exposed"


def _expose(graph: Any, wanted: Mapping[str, int], outer: bool) -> dict[str, str]:
    """{wanted value: the name that carries it in ``graph``'s own scope}: values made in
    ``graph`` by name, values made in an ``If``'s branches through an extra output of the
    ``If`` (each branch gives it, or an empty tensor of its type, ``wanted[value]``, where
    another branch makes it). ``outer``: ``graph`` is the main graph (its graph inputs
    and initializers count as made there)."""
    from onnx import helper

    found: dict[str, str] = {}
    made = {out for node in graph.node for out in node.output}
    if outer:
        made |= {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for name in wanted:
        if name in made:
            found[name] = name
    added = []
    for node in graph.node:
        if node.op_type != "If":
            continue
        branches = [a.g for a in node.attribute if a.name in ("then_branch", "else_branch")]
        inner = [_expose(branch, wanted, False) for branch in branches]
        carried = sorted({name for each in inner for name in each} - set(found))
        for name in carried:
            for branch, each in zip(branches, inner, strict=True):
                value = each.get(name)
                if value is None:
                    value = _exposed_name(name) + "_empty"
                    branch.node.append(helper.make_node(
                        "Constant", [], [value], value=helper.make_tensor(
                            value, wanted[name], [0], [])))
                branch.output.append(helper.make_tensor_value_info(value, wanted[name], None))
            out = _exposed_name(name) + f"_{len(added)}"
            node.output.append(out)
            added.append(out)
            found[name] = out
    return found


def exposing_graph(model: Any, values: Mapping[str, int]) -> tuple[Any, dict[str, str]]:
    """``model`` (changed in place) with each of ``values`` ({value name: its ONNX element
    type}) reachable as a graph output, and {value: its output's name}; values only made
    inside a Loop/Scan body are not."""
    from onnx import helper

    graph = model.graph
    found = _expose(graph, values, True)
    outputs = {o.name for o in graph.output}
    for name, out in found.items():
        if out not in outputs:
            graph.output.append(helper.make_tensor_value_info(out, values[name], None))
            outputs.add(out)
    return model, found


def conv_columns(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int] = (),
                 pads: Sequence[int] = (), dilations: Sequence[int] = (), groups: int = 1,
                 auto_pad: str = "NOTSET") -> np.ndarray:
    """The im2col rows of an ONNX ``Conv``'s input ``x`` (N, C, spatial…) for a kernel of
    spatial ``kernel``: (groups · N · positions, C/groups · ∏kernel), the columns in the
    order of a weight row of ``weight.reshape(out, -1)`` (channel, then each kernel axis);
    each group's rows one after another (all of a weight's rows share one H in the codec).
    ``pads``: ONNX's (begins…, ends…); ``auto_pad``: SAME_UPPER, SAME_LOWER, VALID or
    NOTSET."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.asarray(x)
    spatial = x.ndim - 2
    kernel = [int(k) for k in kernel]
    strides = [int(s) for s in strides] or [1] * spatial
    dilations = [int(d) for d in dilations] or [1] * spatial
    pads = [int(p) for p in pads] or [0] * (2 * spatial)
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * spatial)
        for axis in range(spatial):
            size = x.shape[2 + axis]
            extent = (kernel[axis] - 1) * dilations[axis] + 1
            total = max((math.ceil(size / strides[axis]) - 1) * strides[axis] + extent - size,
                        0)
            small = total // 2
            begin = small if auto_pad == "SAME_UPPER" else total - small
            pads[axis], pads[spatial + axis] = begin, total - begin
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[a], pads[spatial + a])
                                           for a in range(spatial)])
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    axes = tuple(range(2, 2 + spatial))
    windows = sliding_window_view(padded, extents, axis=axes)
    # (N, C, positions…, window…): positions by stride, window taps by dilation.
    windows = windows[(slice(None), slice(None))
                      + tuple(slice(None, None, s) for s in strides)
                      + tuple(slice(None, None, d) for d in dilations)]
    n, channels = x.shape[:2]
    per_group = channels // groups
    positions = windows.shape[2:2 + spatial]
    # → (groups, N, positions…, C/groups, kernel…)
    windows = windows.reshape((n, groups, per_group) + windows.shape[2:])
    order = (1, 0) + tuple(range(3, 3 + spatial)) + (2,) + tuple(
        range(3 + spatial, 3 + 2 * spatial))
    return windows.transpose(order).reshape(
        groups * n * math.prod(positions), per_group * math.prod(kernel))


def input_rows(use: Use, value: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The rows (samples × the weight's columns) that the weight of ``shape`` read by
    ``use`` meets, from the value of the use's data input."""
    value = np.asarray(value)
    attributes = use.attributes
    if use.op == "Conv":
        groups = int(attributes.get("group", 1))
        return conv_columns(value, shape[2:], attributes.get("strides", ()),
                            attributes.get("pads", ()), attributes.get("dilations", ()),
                            groups, attributes.get("auto_pad", "NOTSET"))
    if use.op == "Gemm":
        if use.index == 1:  # Y = A' Wᵀ: the rows of A' (M, K)
            return value.T if attributes.get("transA", 0) else value
        return value if attributes.get("transB", 0) else value.T  # Y = W B': B' columns
    # MatMul W @ x: x (…, in, n) or (in,)
    if value.ndim == 1:
        return value.reshape(1, -1)
    return np.swapaxes(value, -1, -2).reshape(-1, value.shape[-2])


@dataclass(frozen=True)
class OnnxCalibration:
    """`onnx_hessians`' answer: {weight: H}, the weights left alone by kind
    (`LEFT_ALONE`), how the inputs were made, why there is none, and the seconds taken."""

    hessians: dict[str, np.ndarray]
    left: dict[str, list[str]] = field(default_factory=dict)
    fed: str = ""
    why_not: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        """One line on what was calibrated and what was left to plain rounding."""
        said = [f"{len(v)} {LEFT_ALONE[k]}, e.g. {v[0]}" for k, v in self.left.items() if v]
        fed = f" ({self.fed})" if self.fed else ""
        line = (f"GPTQ Hessians of {len(self.hessians)} weights measured on synthetic "
                f"inputs{fed} in {self.seconds:.1f} s")
        return line + ("; left to plain rounding: " + "; ".join(said) if said else "")


def loaded(hessian: np.ndarray, loading: float = LOADING) -> np.ndarray:
    """``hessian`` + ``loading`` × its mean diagonal × I (unchanged if every input is 0)."""
    scale = float(np.mean(np.diag(hessian))) if hessian.size else 0.0
    if not scale > 0:
        return hessian
    out = np.array(hessian, dtype=np.float64)
    out[np.diag_indices_from(out)] += loading * scale
    return out


Feeds = Callable[[Any, Any, int, np.random.Generator, set[str]], Any]


def onnx_hessians(path: str | Path, samples: int = SAMPLES, seed: int = 0,
                  loading: float = LOADING, feeds: Feeds | None = None,
                  min_rows: float = MIN_ROWS_PER_COLUMN, inputs: str | None = None
                  ) -> OnnxCalibration:
    """{weight: H = XᵀX/N} of every weight of the ONNX file at ``path`` that GPTQ can serve
    (`served`; of `weightdna.evaluate.onnx_sensitivity.measured_names`), recorded on
    ``samples`` synthetic inputs, with ``loading`` on the diagonal (`loaded`). ``feeds``
    (session, model, samples, rng, skip) → an `weightdna.evaluate.outputs.OnnxInputs`:
    the inputs (default `onnx_inputs`, redrawn to the first BatchNorm's statistics where
    ``inputs`` (default `INPUTS`) is "batchnorm" and the graph has one); ``min_rows``:
    `MIN_ROWS_PER_COLUMN`. No Hessians,
    with the reason, where the graph does not run on them or no weight is served."""
    from weightdna.evaluate.onnx_sensitivity import _session, measured_names
    from weightdna.weights.onnx_format import load_model, serialise, weight_protos

    started = time.perf_counter()
    inputs_kind = INPUTS if inputs is None else inputs
    if inputs_kind not in INPUT_KINDS:
        raise ValueError(f"inputs must be one of {INPUT_KINDS}, not {inputs_kind!r}")
    names = measured_names(path)
    model = load_model(Path(path))
    norm = None
    if feeds is None and inputs_kind == "batchnorm":
        from weightdna.evaluate.bn_inputs import first_norm

        norm = first_norm(model)
    protos = weight_protos(model)
    shapes = {name: [int(d) for d in protos[name].dims] for name in names}
    types = {name: int(protos[name].data_type) for name in names}
    skip = set(protos)
    uses, left = served(localised(model, names), names, shapes)
    if not uses:
        return OnnxCalibration({}, left, why_not="no weight is read as GPTQ can serve it",
                               seconds=time.perf_counter() - started)
    data = {use.data: types[name] for name, each in uses.items() for use in each}
    del protos
    try:
        original = _session(serialise(model))
        rng = np.random.default_rng(seed)
        found = (feeds or onnx_inputs)(original, model, samples, rng, skip)
        if found is not None and norm is not None:
            from weightdna.evaluate.bn_inputs import matched_feeds

            matched = matched_feeds(norm, found.feeds, rng)
            if matched is not None:
                found = replace(found, feeds=matched[0], fed=matched[1].describe())
        del original
        exposed, carried = exposing_graph(model, data)
        session = _session(serialise(exposed))
    except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise their own types
        return OnnxCalibration({}, left, why_not="onnxruntime cannot run the graph "
                               f"({str(exc)[:200]})", seconds=time.perf_counter() - started)
    del model, exposed
    if found is None:
        return OnnxCalibration({}, left, why_not="the graph did not run on synthetic inputs",
                               seconds=time.perf_counter() - started)
    outputs = sorted({carried[d] for d in data if d in carried})
    moments = Moments()
    for batch in found.feeds:
        values = dict(zip(outputs, session.run(outputs, batch), strict=True))
        for name, each in uses.items():
            for use in each:
                value = values.get(carried.get(use.data, ""))
                if value is None or value.size == 0:
                    continue  # a branch not taken
                rows = input_rows(use, value, shapes[name])
                for start in range(0, rows.shape[0], ROWS):
                    moments.add(name, rows[start:start + ROWS])
    hessians = {}
    for name, h in moments.hessians().items():
        if moments.counts[name] < min_rows * h.shape[0]:
            left["few"].append(name)
        else:
            hessians[name] = loaded(h, loading)
    left["unreached"] += [name for name in uses
                          if name not in hessians and name not in left["few"]]
    return OnnxCalibration(hessians, left, found.fed, "" if hessians else
                           "the synthetic run reaches no weight GPTQ can serve",
                           time.perf_counter() - started)
