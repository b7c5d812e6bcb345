"""ONNX models' weights: read them (initializers and `Constant` nodes' tensors), take them
out of a graph, and put tensors back where they were. Needs the optional package ``onnx``.

A weight is an initializer of the main graph, or the ``value`` tensor of a `Constant` node
anywhere in it (some exporters, Paddle's for one, put every weight there), named by the
node's output. External data is read when the model is loaded; a model written back holds
its weights inline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightdna.errors import (
    CorruptFileError,
    InvalidInputError,
    MissingDependencyError,
    ModelFileError,
)

# A protobuf message cannot be larger (ONNX's external data exists for larger models).
MAX_INLINE_BYTES = (2 << 30) - 1


def require_onnx() -> Any:
    """The ``onnx`` module, or a MissingDependencyError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(
            "reading and writing ONNX models needs the optional package onnx: pip install onnx"
        ) from None
    return onnx


def load_model(path: Path) -> Any:
    """The ModelProto at ``path``, external data (resolved beside it) loaded."""
    onnx = require_onnx()
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf raises its own DecodeError; any failure: a bad file
        reason = " ".join(str(exc).split())
        raise ModelFileError(f"{path} could not be read as ONNX ({reason}); "
                             f"{_onnx_advice(reason)}.") from None


def _onnx_advice(reason: str) -> str:
    """What to do about onnx.load's failure ``reason`` (its message, on one line)."""
    if "symbolic link" in reason:
        return ("onnx does not follow a link to external data (a Hugging Face cache holds "
                "links): copy the model with its data files (cp -L) and give the copy")
    if "outside the directory" in reason or "absolute path" in reason:
        return ("onnx reads external data only from the model's own folder: keep the data "
                "files beside the model, named as the model says")
    if "external" in reason.lower() or "should be stored in" in reason:
        return ("its external data is missing or cut short: keep the data files it was "
                "exported with (such as model.onnx_data) beside it, whole")
    return "the file is truncated or not an ONNX model: download or export it again"


def subgraphs(node: Any) -> Iterator[Any]:
    """The graphs a node's attributes hold (an If's branches, a Loop's or Scan's body)."""
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def all_nodes(graph: Any) -> Iterator[Any]:
    """The nodes of an ONNX graph and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def scopes(graph: Any, inside_loop: bool = False) -> Iterator[tuple[Any, bool]]:
    """(graph, whether it is a Loop/Scan body or inside one) for an ONNX graph and its
    subgraphs (If/Loop/Scan bodies), outermost first."""
    yield graph, inside_loop
    for node in graph.node:
        loop = inside_loop or node.op_type != "If"
        for sub in subgraphs(node):
            yield from scopes(sub, loop)


def weight_protos(model: Any) -> dict[str, Any]:
    """{name: the TensorProto holding that weight}: the main graph's initializers, then every
    `Constant` node's ``value`` (named by its output). Two weights of one name: an error."""
    found = {init.name: init for init in model.graph.initializer}
    for node in all_nodes(model.graph):
        if node.op_type != "Constant" or len(node.output) != 1:
            continue
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.HasField("t"):
                name = node.output[0]
                if name in found:
                    raise ModelFileError(f"two weights of the ONNX graph are called {name!r}.")
                found[name] = attribute.t
    return found


def to_tensor(proto: Any) -> torch.Tensor:
    """A TensorProto's values as a new torch tensor (bfloat16 kept as bfloat16)."""
    onnx = require_onnx()
    from onnx import numpy_helper

    array = np.array(numpy_helper.to_array(proto), order="C")  # a writable copy
    if proto.data_type == onnx.TensorProto.BFLOAT16:
        # NumPy has no bfloat16: onnx returns ml_dtypes' type, which torch cannot take.
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def graph_without_weights(model: Any) -> bytes:
    """``model`` serialised with every weight's data taken out (name, dims and type kept):
    what a .dna file stores beside the coded tensors."""
    for proto in weight_protos(model).values():
        _empty(proto)
    return model.SerializeToString()


def _empty(proto: Any) -> None:
    onnx = require_onnx()
    kept = onnx.TensorProto()
    kept.name, kept.data_type, kept.doc_string = proto.name, proto.data_type, proto.doc_string
    kept.dims.extend(proto.dims)
    proto.CopyFrom(kept)


def fill_weights(model: Any, tensors: Mapping[str, Any],
                 read: Callable[[Any], torch.Tensor] = torch.as_tensor,
                 require_all: bool = False, where: str = "the ONNX graph") -> None:
    """Put ``tensors`` ({name: value}; each turned into a tensor by ``read``) back into
    ``model``'s weights of the same names, in their own ONNX type, as raw bytes.

    require_all: every weight of the graph must get one (a graph stored without its weights);
    a missing one, or one of another shape or width, is a CorruptFileError."""
    onnx = require_onnx()
    from onnx import helper

    for name, proto in weight_protos(model).items():
        if name not in tensors:
            if require_all:
                raise CorruptFileError(f"{where}: the weight {name!r} has no tensor in the file.")
            continue
        value = read(tensors[name])
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        value = value.detach().cpu().contiguous()
        if proto.data_type == onnx.TensorProto.BFLOAT16:
            width = 2
        else:
            width = np.dtype(helper.tensor_dtype_to_np_dtype(proto.data_type)).itemsize
        if tuple(value.shape) != tuple(proto.dims) or value.element_size() != width:
            raise CorruptFileError(
                f"{where}: the weight {name!r} is {tuple(proto.dims)} of ONNX type "
                f"{proto.data_type}, but its tensor is {tuple(value.shape)} {value.dtype}.")
        data = value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b""
        _empty(proto)
        proto.raw_data = data


def serialise(model: Any) -> bytes:
    """``model``'s bytes; one that protobuf cannot hold inline is refused with advice."""
    size = model.ByteSize()
    if size > MAX_INLINE_BYTES:
        raise InvalidInputError(
            f"the ONNX model with its weights is {size:,} bytes, over protobuf's 2 GiB; write "
            "NAME.safetensors or DIR/ instead.")
    return model.SerializeToString()


def restore_graph(graph: bytes, tensors: Mapping[str, Any], where: str,
                  read: Callable[[Any], torch.Tensor] = torch.as_tensor) -> bytes:
    """A stored graph (`graph_without_weights`) with every weight put back from ``tensors``."""
    onnx = require_onnx()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(graph)
    except Exception as exc:  # protobuf's DecodeError
        raise CorruptFileError(f"{where}: the stored ONNX graph cannot be parsed ({exc}).") \
            from None
    fill_weights(model, tensors, read, require_all=True, where=where)
    return serialise(model)
