"""Data-free bias correction of an ONNX graph whose weights were coded lossily.

The ONNX counterpart of `weightdna.evaluate.correction` (a BERT model's): coding error
shifts the mean of every layer's outputs, and each bias that exists is moved by that
shift,

    b' = b + E[y] − E[ŷ],

per output channel, y the original graph's output of the layer and ŷ the coded graph's,
both run by onnxruntime on the output check's synthetic inputs
(`weightdna.evaluate.outputs.onnx_inputs`, as `weightdna.evaluate.onnx_sensitivity` and
`weightdna.evaluate.onnx_calibration` use them), except that where the graph's image
input goes through a Conv into a BatchNormalization it is drawn so that this BatchNorm's
batch statistics are its running ones (`INPUTS`, `weightdna.evaluate.bn_inputs`). The
layers are corrected stage by stage
(`Site.level`: one more than the most corrected layers on any path into it), each stage
measured with the corrections before it applied, so a correction also absorbs the error
left upstream. Nagel et al. 2019 ("Data-Free Quantization") correct b − ΔW·E[x]; measuring
the output's shift needs no im2col (padding edges, groups, strides are the graph's own) and
takes the upstream error in too.

A bias is corrected where it is the bias initializer of a ``Conv`` (input 2: per channel,
axis 1), the shift B of a ``BatchNormalization`` (the same; PaddleOCR's convs have no bias
and a BatchNormalization after each), of a ``Gemm`` (input C) or of an ``Add`` after a
``MatMul``, ``Gemm`` or ``Conv`` (the bias broadcast onto the output from its last
axes), is read by that node alone (a
bias shared by several nodes is left as coded), outside any Loop/Scan body (run many times
a step), and coded by role (`weightdna.codec.roles.coding`: "bounded" or "relative"). An
``If`` branch the synthetic run does not take (Silero VAD's 8 kHz one) is left as coded.
No input is added to the graph the codec stores: the corrected biases are coded again by
their role (`weightdna.codec.compress.compress_model`'s ``adjust``). A shift larger than
half its bias (`MAX_SHIFT`) is not made: noise far from the data's scale measures those.

The default for an ONNX graph under a whole-model target
(`weightdna.evaluate.correction.bias_correction_for`) where its inputs are matched to a
first BatchNorm (``matched_only``): it took rapidocr's recognizer at 3 bits per weight
from 3% to 64% of lines read as the original reads them (character error rate 29% → 2.7%;
at 2.95: 2% → 49%; BENCHMARKS.md, "Data-free bias correction for ONNX graphs"). A graph
whose inputs cannot be matched gets no correction by default (`UNMATCHED`): the output
check's standard-normal inputs are of no known scale, and on Silero VAD the shifts
measured on them that passed `MAX_SHIFT` (its first encoder conv's, above all) took its
speech decisions kept from 95% to 82% at 4 bits per weight; magika and the panel's ONNX
CNN tied without it (BENCHMARKS.md, "No default bias correction on unmatched inputs").
``--bias-correction synthetic`` still corrects any graph on whatever inputs it has.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.weights.onnx_format import all_nodes, subgraphs

SAMPLES = 32  # synthetic inputs the means are measured on (as onnx_calibration's Hessians)
# Values requested from one run of the original graph (bounds the outputs held at once).
VALUES_PER_RUN = 16
# A correction whose root mean square is over this share of the source bias's is not made
# (nor seen by the stages after it): on synthetic inputs far from the data's scale (Silero
# VAD's standard-normal audio, tens of times louder than speech) the measured shifts came
# out 0.3–75× each bias's size, and applying them all broke the model (every chunk "no
# speech"); on rapidocr's detector at 2 bits per weight applying all 55 kept 0.863 of its
# text pixels, only the 30 up to 0.5 of their bias 0.882 (the default 0.825; one target of a
# judge that swings 3-4 points between targets 0.05 apart). BENCHMARKS.md,
# "Data-free bias correction for ONNX graphs".
MAX_SHIFT = 0.5
# The inputs the shifts are measured on: "normal" (the output check's, `onnx_inputs`) or
# "batchnorm" (where the graph's image input goes through a Conv into a BatchNormalization,
# drawn so that its batch statistics match its running ones: `weightdna.evaluate.bn_inputs`;
# other graphs keep the output check's). "batchnorm" took rapidocr's angle classifier at
# 2.9-3.1 bits per weight from 80.4% to 84.1% of its calls kept (paired +3.7 ± 0.9 over 14
# targets, better at 13), its recognizer's lines read 66.1% → 69.1% and its detector
# 92.5% → 93.1% (BENCHMARKS.md, "BatchNorm-matched inputs for the ONNX bias correction").
INPUTS = "batchnorm"
INPUT_KINDS = ("normal", "batchnorm")
# Why the default (`weightdna.evaluate.correction.bias_correction_for`) corrects no bias of
# a graph whose inputs cannot be matched to it: the output check's standard-normal inputs
# are of no known scale, and the shifts measured on them are not the data's. On Silero
# VAD (audio, tens of times louder than speech) the corrections that passed `MAX_SHIFT`
# took its speech decisions kept from 96.2% to 72.5% at 4 bits per weight and 98.9% to
# 82.4% at 6 (the panel, mean of 3 targets; the CLI's defaults: 95.1% → 82.0%, 99.1% →
# 79.8%; BENCHMARKS.md, "No default bias correction on unmatched inputs").
UNMATCHED = ("no bias corrected by default: the graph's input does not go through a Conv "
             "into a BatchNormalization that synthetic inputs can be matched to, so they "
             "are of no known scale; --bias-correction synthetic corrects on them anyway")
# Ops whose output an ``Add`` of a bias initializer follows (a layer's bias kept apart).
LAYER_OPS = ("MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class Site:
    """A bias the correction moves: its weight's ``bias``, the ``value`` whose mean it moves
    (the node's output), how it meets that value (``conv``: one per channel of axis 1;
    ``broadcast``: onto the output's last axes, as an ``Add`` or ``Gemm`` broadcasts it)
    and its ``level`` (1 + the most sites on any path into it)."""

    bias: str
    value: str
    how: str
    level: int


def sites(model: Any, biases: Iterable[str]) -> list[Site]:
    """The `Site`s of ``model`` (a ModelProto) among the weights ``biases``, in the graph's
    order (subgraphs where their node is)."""
    wanted = set(biases)
    counts: dict[str, int] = {}  # a subgraph reading an outer value reads it again
    makers: dict[str, str] = {}
    for node in all_nodes(model.graph):
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
        for name in node.output:
            makers[name] = node.op_type
    outputs = {o.name for o in model.graph.output}
    found: list[Site] = []

    def usable(name: str) -> bool:
        return name in wanted and counts.get(name, 0) == 1 and name not in outputs

    def site(node: Any) -> tuple[str, str] | None:
        op, inputs = node.op_type, list(node.input)
        if len(node.output) != 1:
            return None
        if op == "Conv" and len(inputs) >= 3 and usable(inputs[2]):
            return inputs[2], "conv"
        if op == "BatchNormalization" and len(inputs) >= 5 and usable(inputs[2]):
            return inputs[2], "conv"  # its shift B (a conv without a bias before it)
        if op == "Gemm" and len(inputs) >= 3 and usable(inputs[2]):
            return inputs[2], "broadcast"
        if op == "Add" and len(inputs) == 2:
            for bias, other in (inputs, inputs[::-1]):
                if usable(bias) and makers.get(other) in LAYER_OPS and other not in wanted:
                    return bias, "broadcast"
        return None

    def walk(graph: Any, depth: dict[str, int], in_loop: bool) -> None:
        for node in graph.node:
            subs = list(subgraphs(node))
            if subs:
                inner = dict(depth)
                for sub in subs:
                    walk(sub, inner, in_loop or node.op_type != "If")
                # Values made inside count for what the node gives out (an upper bound).
                level = max([inner.get(v, 0) for v in inner if v not in depth]
                            + [depth.get(v, 0) for v in node.input if v], default=0)
                for out in node.output:
                    depth[out] = level
                continue
            here = None if in_loop else site(node)
            level = max((depth.get(v, 0) for v in node.input
                         if v and (here is None or v != here[0])), default=0)
            if here is not None:
                level += 1
                found.append(Site(here[0], node.output[0], here[1], level))
            for out in node.output:
                depth[out] = level

    walk(model.graph, {}, False)
    return found


def channel_sums(value: np.ndarray, shape: Sequence[int], how: str
                 ) -> tuple[np.ndarray, int] | None:
    """(the sum of ``value`` over everything but the bias's axes, in float64 and of the
    bias's ``shape``; how many values each element sums), or None where the bias does not
    meet ``value`` as ``how`` says (a shape that does not fit)."""
    value = np.asarray(value)
    shape = tuple(int(d) for d in shape)
    size = int(np.prod(shape)) if shape else 1
    if how == "conv":
        if value.ndim < 2 or value.shape[1] != size:
            return None
        axes = (0,) + tuple(range(2, value.ndim))
        total = value.sum(axis=axes, dtype=np.float64)
        return total.reshape(shape), value.size // size
    if len(shape) > value.ndim:
        return None
    aligned = (1,) * (value.ndim - len(shape)) + shape
    if any(b not in (1, v) for b, v in zip(aligned, value.shape, strict=True)):
        return None
    axes = tuple(i for i, b in enumerate(aligned) if b == 1)
    total = value.sum(axis=axes, dtype=np.float64, keepdims=True)
    return total.reshape(shape), value.size // max(size, 1)


class _Means:
    """Per-site sums and counts of a session's exposed values over the feeds."""

    def __init__(self, session: Any, carried: Mapping[str, str], feeds: Sequence[dict]):
        self.session, self.carried, self.feeds = session, carried, feeds

    def of(self, chosen: Sequence[Site], shapes: Mapping[str, Sequence[int]],
           extra: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """{bias: the mean of its site's value over every feed} for the ``chosen`` sites
        reached by the run (``extra``: feeds added to each batch, the biases)."""
        chosen = [s for s in chosen if s.value in self.carried]
        names = sorted({self.carried[s.value] for s in chosen})
        if not names:
            return {}
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        refused: set[str] = set()
        for batch in self.feeds:
            values = dict(zip(names, self.session.run(names, {**batch, **(extra or {})}),
                              strict=True))
            for s in chosen:
                value = values[self.carried[s.value]]
                if value is None or np.asarray(value).size == 0 or s.bias in refused:
                    continue  # a branch not taken
                got = channel_sums(value, shapes[s.bias], s.how)
                if got is None:
                    refused.add(s.bias)
                    continue
                total, count = got
                sums[s.bias] = sums.get(s.bias, 0.0) + total
                counts[s.bias] = counts.get(s.bias, 0) + count
        return {b: sums[b] / counts[b] for b in sums if b not in refused and counts[b]}


@dataclass(frozen=True)
class OnnxCorrection:
    """`onnx_corrected_biases`' answer: {bias: corrected value} (its own dtype), the sites
    found, the stages run, why there is none, the seconds taken and how many corrections
    were too large to make."""

    biases: dict[str, torch.Tensor]
    sites: int = 0
    stages: int = 0
    why_not: str = ""
    seconds: float = 0.0
    refused: int = 0  # corrections over `MAX_SHIFT` of their bias, not made
    fed: str = ""  # how the inputs were drawn where not as the output check's


def onnx_corrected_biases(path: str | Path, restored: Mapping[str, Any],
                          biases: Sequence[str], samples: int = SAMPLES, seed: int = 0,
                          max_shift: float = MAX_SHIFT, inputs: str | None = None,
                          matched_only: bool = False) -> OnnxCorrection:
    """The `Site` biases among ``biases`` of the ONNX file at ``path`` corrected for the coded
    weights ``restored`` ({name: tensor}: those it names replace the source's), stage after
    stage on ``samples`` synthetic inputs (the module's docstring), each correction made
    only where its root mean square is at most ``max_shift`` times the source bias's
    (`MAX_SHIFT`); ``inputs``: `INPUTS` (its default) says how they are drawn. None where
    the graph does not run on them; with ``matched_only``, none either where the inputs
    could not be matched to a first BatchNorm (`UNMATCHED`)."""
    from onnx import numpy_helper

    from weightdna.evaluate.onnx_calibration import exposing_graph
    from weightdna.evaluate.onnx_sensitivity import _session, measurable_graph
    from weightdna.evaluate.outputs import onnx_inputs
    from weightdna.weights.onnx_format import fill_weights, load_model, serialise, weight_protos

    started = time.perf_counter()
    inputs_kind = INPUTS if inputs is None else inputs
    if inputs_kind not in INPUT_KINDS:
        raise ValueError(f"inputs must be one of {INPUT_KINDS}, not {inputs_kind!r}")
    model = load_model(Path(path))
    norm = None
    if inputs_kind == "batchnorm":
        from weightdna.evaluate.bn_inputs import first_norm

        norm = first_norm(model)
    if matched_only and norm is None:
        return OnnxCorrection({}, why_not=UNMATCHED, seconds=time.perf_counter() - started)
    protos = weight_protos(model)
    found = sites(model, [b for b in biases if b in protos])
    if not found:
        return OnnxCorrection({}, why_not="no bias is read as a Conv's, Gemm's or an Add's "
                              "after a layer", seconds=time.perf_counter() - started)
    names = [s.bias for s in found]
    shapes = {b: [int(d) for d in protos[b].dims] for b in names}
    types = {b: int(protos[b].data_type) for b in names}
    coded = {b: np.asarray(torch.as_tensor(restored[b]).to(torch.float64).numpy()
                           if b in restored else numpy_helper.to_array(protos[b]),
                           dtype=np.float64) for b in names}
    dtypes = {b: numpy_helper.to_array(protos[b]).dtype for b in names}
    sizes = {b: float(np.sqrt(np.mean(np.square(numpy_helper.to_array(protos[b]),
                                                dtype=np.float64)))) for b in names}
    skip = set(protos)
    del protos
    try:
        model, carried = exposing_graph(measurable_graph(model, names),
                                        {s.value: types[s.bias] for s in found})
        original = _session(serialise(model))
        rng = np.random.default_rng(seed)
        inputs = onnx_inputs(original, model, samples, rng, skip)
        drawn = ""
        if inputs is not None and norm is not None:
            from weightdna.evaluate.bn_inputs import matched_feeds

            matched = matched_feeds(norm, inputs.feeds, rng)
            if matched is not None:
                inputs = replace(inputs, feeds=matched[0])
                drawn = matched[1].describe()
        fill_weights(model, {k: v for k, v in restored.items() if k not in names})
        coded_session = _session(serialise(model))
    except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise their own types
        return OnnxCorrection({}, len(found), why_not="onnxruntime cannot run the graph "
                              f"({str(exc)[:200]})", seconds=time.perf_counter() - started)
    del model
    if inputs is None:
        return OnnxCorrection({}, len(found), why_not="the graph did not run on synthetic "
                              "inputs", seconds=time.perf_counter() - started)
    if matched_only and not drawn:
        return OnnxCorrection({}, len(found), why_not=UNMATCHED,
                              seconds=time.perf_counter() - started)
    source = _Means(original, carried, inputs.feeds)
    expected: dict[str, np.ndarray] = {}
    for start in range(0, len(found), VALUES_PER_RUN):
        expected.update(source.of(found[start:start + VALUES_PER_RUN], shapes))
    del original, source
    after = _Means(coded_session, carried, inputs.feeds)
    moved: dict[str, np.ndarray] = {}
    refused = 0
    levels = sorted({s.level for s in found if s.bias in expected})
    for level in levels:
        stage = [s for s in found if s.level == level and s.bias in expected]
        fed = {b: coded[b].astype(dtypes[b]) for b in names}
        got = after.of(stage, shapes, fed)
        for s in stage:
            if s.bias not in got:
                continue
            shift = expected[s.bias] - got[s.bias]
            if float(np.sqrt(np.mean(shift * shift))) > max_shift * sizes[s.bias]:
                refused += 1
                continue
            coded[s.bias] = coded[s.bias] + shift
            moved[s.bias] = coded[s.bias]
    out = {b: torch.from_numpy(np.ascontiguousarray(v.astype(dtypes[b])))
           for b, v in moved.items()}
    return OnnxCorrection(out, len(found), len(levels), "" if out else (
        f"every shift measured was over {max_shift:g} of its bias" if refused
        else "the synthetic run reaches no bias"), time.perf_counter() - started, refused,
        drawn)


def matched_inputs_possible(path: str | Path) -> bool:
    """Whether the ONNX file at ``path`` has the first BatchNorm its synthetic inputs can be
    matched to (`weightdna.evaluate.bn_inputs.first_norm`)."""
    from weightdna.evaluate.bn_inputs import first_norm
    from weightdna.weights.onnx_format import load_model

    return first_norm(load_model(Path(path))) is not None


def correctable_biases(path: str | Path) -> list[str]:
    """The weights of the ONNX file at ``path`` a correction may move: floating point, of a
    type onnxruntime takes, and coded by their role ("bounded" or "relative")."""
    from weightdna.codec.roles import coding
    from weightdna.evaluate.onnx_sensitivity import MEASURED_TYPES
    from weightdna.weights import load_weights

    return [i.name for i in load_weights(path).infos
            if i.dtype in MEASURED_TYPES and coding(i) in ("bounded", "relative")]


def onnx_bias_correction(path: str | Path, samples: int = SAMPLES, seed: int = 0,
                         note: Any = None, max_shift: float = MAX_SHIFT,
                         inputs: str | None = None, matched_only: bool = False) -> Any:
    """`weightdna.codec.compress.compress_model`'s ``adjust`` for the ONNX file at ``path``:
    given the coded tensors, `onnx_corrected_biases`' biases ({} where none could be
    measured, or with ``matched_only`` where the inputs are not matched to a first
    BatchNorm; ``note`` hears one line on what was done)."""
    biases = correctable_biases(path)

    def adjust(restored: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        result = onnx_corrected_biases(path, restored, biases, samples, seed, max_shift,
                                       inputs, matched_only)
        if note is not None:
            note(f"{len(result.biases)} of {result.sites} biases corrected in "
                 f"{result.stages} stages on "
                 f"{result.fed or 'synthetic inputs'} in {result.seconds:.1f} s"
                 + (f", {result.refused} shifts over {max_shift:g} of their bias not made"
                    if result.refused else "")
                 + (f" ({result.why_not})" if result.why_not else ""))
        return result.biases

    return adjust
