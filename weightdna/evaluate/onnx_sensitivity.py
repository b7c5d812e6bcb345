"""Data-free output sensitivities of an ONNX graph, run by onnxruntime.

The graph is rewritten once so that every weight measured is also a graph input
(`measurable_graph`: an initializer listed as an input, which onnxruntime lets a feed
override; a `Constant` node's tensor moved to such an initializer, read by subgraphs from
the outer scope), and one session, with onnxruntime's graph optimisations off so that no
weight is folded into another, serves every perturbation: the perturbed tensor is fed by
name. The inputs are the output check's (`weightdna.evaluate.outputs.onnx_inputs`:
standard normal floats, open image sides 48×192, runs of ids, the ladder of guesses), the
outputs the graph's first, flattened per sample;
`weightdna.evaluate.sensitivity.measure_sensitivity` does the rest, as for a BERT model.

Where the graph does not run on synthetic inputs, or the original gives the same output
for every one of them (rapidocr's text detector on noise: an all-zero map), the inputs
say nothing about which weights matter: there are no sensitivities (`OnnxSensitivity`'s
``measured`` None, with the reason).

An option (``--sensitivity synthetic``), not the default: on magika and Silero VAD it kept
fewer decisions than none at 2 and 3 bits per weight (BENCHMARKS.md, "Data-free
sensitivities for ONNX graphs"). Weights the synthetic run never reads (the branch of an
``If`` for another sample rate) measure 0 and get the least sensitivity measured
(`weightdna.evaluate.sensitivity.for_every_tensor`): that branch is then starved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightdna.evaluate.outputs import SAMPLES, OnnxInputs, onnx_inputs, same_for_every_input
from weightdna.evaluate.sensitivity import DEFAULT_SNR_DB, Forward, measure_sensitivity
from weightdna.evaluate.sentences import Progress

# NumPy types onnxruntime takes as feeds (bfloat16 weights are left unmeasured).
MEASURED_TYPES = ("float32", "float16", "float64")


@dataclass(frozen=True)
class OnnxSensitivity:
    """`onnx_sensitivity`'s answer: {tensor: s_t} or None, why it is None, how the inputs
    were made, and the seconds it took."""

    measured: dict[str, float] | None
    why_not: str = ""
    fed: str = ""
    seconds: float = 0.0


def measurable_graph(model: Any, names: Sequence[str]) -> Any:
    """``model`` (a ModelProto, changed in place and returned) with each weight of
    ``names`` an overridable input of the main graph: a main-graph initializer is listed
    as an input too; a `Constant` node's tensor (anywhere) becomes such an initializer
    named as the node's output, and the node is removed (a subgraph reads it from the
    outer scope)."""
    from onnx import helper

    from weightdna.weights.onnx_format import scopes

    wanted = set(names)
    graph = model.graph
    inputs = {i.name for i in graph.input}
    moved = []
    for sub, _ in scopes(graph):
        keep = []
        for node in sub.node:
            value = next((a.t for a in node.attribute
                          if a.name == "value" and a.HasField("t")), None)
            if (node.op_type == "Constant" and len(node.output) == 1
                    and node.output[0] in wanted and value is not None):
                tensor = type(value)()
                tensor.CopyFrom(value)
                tensor.name = node.output[0]
                moved.append(tensor)
            else:
                keep.append(node)
        if len(keep) != len(sub.node):
            del sub.node[:]
            sub.node.extend(keep)
    graph.initializer.extend(moved)
    for init in graph.initializer:
        if init.name in wanted and init.name not in inputs:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type,
                                                             list(init.dims)))
            inputs.add(init.name)
    return model


def measured_names(path: str | Path) -> list[str]:
    """The weights of the ONNX file at ``path`` whose sensitivity is measured: those a
    DNA may fit (floating point, not a statistic, constant or buffer: their role codes
    them exactly) of a type onnxruntime takes as a feed."""
    from weightdna.weights import load_weights

    return [i.name for i in load_weights(path).infos
            if i.fittable and i.dtype in MEASURED_TYPES]


def _session(graph: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    # Off: a weight folded into another (a BatchNorm into its conv, a constant subgraph
    # precomputed) would no longer be read from its feed.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(graph, sess_options=options,
                                        providers=["CPUExecutionProvider"])


def onnx_forward(session: Any, inputs: OnnxInputs, outputs: str = "first") -> Forward:
    """The graph's first output on ``inputs``'s feeds, (samples, features), with the weight
    ``name`` fed as ``value`` (every other weight its own). ``outputs`` "all": every
    numeric output with a row per sample, each divided by its root mean square on the
    unperturbed run, side by side."""
    names = [o.name for o in session.get_outputs()]
    wanted = names[:1] if outputs == "first" else names
    one_at_a_time = len(inputs.feeds) > 1
    samples = len(inputs.feeds) if one_at_a_time else None
    scales: dict[str, float] = {}

    def rows(out: np.ndarray) -> np.ndarray | None:
        if one_at_a_time:
            return out.reshape(out.shape[0], -1)
        if out.ndim and out.shape[0] > 1:
            return out.reshape(out.shape[0], -1)
        return out.reshape(1, -1)

    def forward(name: str, value: np.ndarray) -> np.ndarray:
        extra = {name: np.asarray(value)} if name else {}
        runs = [session.run(wanted, {**feeds, **extra}) for feeds in inputs.feeds]
        parts = []
        for i, output in enumerate(wanted):
            each = [np.asarray(run[i]) for run in runs]
            if each[0].dtype.kind not in "biuf":
                continue
            block = rows(np.stack(each) if one_at_a_time else each[0]).astype(np.float64)
            if outputs == "first":
                return block
            if samples is None and parts and block.shape[0] != parts[0].shape[0]:
                continue  # no row per sample
            if output not in scales:
                scales[output] = float(np.sqrt(np.mean(block * block))) or 1.0
            parts.append(block / scales[output])
        return np.concatenate(parts, axis=1)

    return forward


def onnx_sensitivity(path: str | Path, samples: int = SAMPLES, snr_db: float = DEFAULT_SNR_DB,
                     step: float | None = None, draws: int = 1, seed: int = 0,
                     names: Sequence[str] | None = None, progress: Progress | None = None,
                     outputs: str = "first") -> OnnxSensitivity:
    """s_t (`weightdna.evaluate.sensitivity`) of each weight of the ONNX file at ``path``
    (``names``, default `measured_names`) on ``samples`` synthetic inputs
    (`onnx_inputs`), or None with the reason where the graph does not run on them or its
    outputs are the same for every one."""
    from onnx import numpy_helper

    from weightdna.weights.onnx_format import load_model, serialise, weight_protos

    started = time.perf_counter()
    names = list(measured_names(path) if names is None else names)
    model = load_model(Path(path))
    protos, wanted = weight_protos(model), set(names)
    state = {name: numpy_helper.to_array(proto)
             for name, proto in protos.items() if name in wanted}
    # The weights' names, fed by no input made up: `measurable_graph` moves a Constant's
    # tensor to an initializer of the same name, so they stay the same set.
    skip = set(protos) | wanted
    del protos
    try:
        session = _session(serialise(measurable_graph(model, names)))
        found = onnx_inputs(session, model, samples, np.random.default_rng(seed), skip=skip)
    except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise their own types
        return OnnxSensitivity(None, f"onnxruntime cannot run the graph ({str(exc)[:200]})",
                               seconds=time.perf_counter() - started)
    del model
    if found is None:
        return OnnxSensitivity(None, "the graph did not run on synthetic inputs made from "
                               "its input specs, nor on the ladder's guesses",
                               seconds=time.perf_counter() - started)
    if not np.issubdtype(found.outputs.dtype, np.number) \
            or same_for_every_input(np.atleast_1d(found.outputs), scale=found.scale):
        return OnnxSensitivity(None, "the original gives the same output for every "
                               "synthetic input, so they cannot tell which weights matter",
                               found.fed, time.perf_counter() - started)
    measured = measure_sensitivity(onnx_forward(session, found, outputs), state, names,
                                   snr_db, step, draws, seed, progress)
    return OnnxSensitivity(measured, fed=found.fed, seconds=time.perf_counter() - started)

