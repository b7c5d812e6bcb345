"""Write weights back as safetensors: same names, shapes, dtypes and bytes; never half a file."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from weightdna.atomic import atomic_output
from weightdna.errors import InvalidInputError, OutputExistsError
from weightdna.weights.model import ModelWeights, TensorSource
from weightdna.weights.safetensors_format import CODES, write_safetensors


def save_weights(
    tensors: Mapping[str, torch.Tensor | np.ndarray | TensorSource] | ModelWeights,
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save tensors as a safetensors file at ``path`` and return the path.

    tensors: tensors or arrays by name; or TensorSources (a dtype, a shape and a reader),
    each read only when its bytes are written and dropped before the next one, so that a
    model read from a file (a ModelWeights) or decoded tensor by tensor is never held whole.
    metadata: string pairs for the header; by default a ModelWeights' own metadata, else
    ``{"format": "pt"}`` (what Hugging Face loaders expect). The file appears complete or
    not at all: it is written next to ``path`` and renamed into place.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or allow overwriting.")
    if isinstance(tensors, ModelWeights):
        if metadata is None:
            metadata = tensors.metadata or {"format": "pt"}
        weights = tensors
        tensors = {info.name: TensorSource(getattr(torch, info.dtype), info.shape,
                                           functools.partial(weights.tensor, info.name))
                   for info in weights.infos}
    if metadata is None:
        metadata = {"format": "pt"}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InvalidInputError("safetensors metadata must map strings to strings.")
    prepared = {name: _prepare(name, t) for name, t in tensors.items()}
    if not prepared:
        raise InvalidInputError(f"nothing to save to {path}: no tensors were given.")

    with atomic_output(path, overwrite=overwrite) as f:
        write_safetensors(f, prepared, metadata)
    return path


def _prepare(name: object, t: object) -> torch.Tensor | TensorSource:
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise InvalidInputError(f"tensor name {name!r} cannot be saved; use a non-empty string.")
    if isinstance(t, TensorSource):
        if t.dtype not in CODES:
            raise InvalidInputError(f"{name} ({t.dtype}) cannot be stored in safetensors.")
        # Checked and made contiguous when it is read, just before its bytes are written.
        return TensorSource(t.dtype, t.shape, lambda: _as_tensor(name, t.read()))
    return _as_tensor(name, t)


def _as_tensor(name: str, t: object) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"{name} is a {type(t).__name__}, not a tensor or array.")
    if t.layout != torch.strided or t.dtype not in CODES:
        raise InvalidInputError(
            f"{name} ({t.dtype}, {t.layout}) cannot be stored in safetensors; "
            f"supported dtypes: {', '.join(sorted(str(d).removeprefix('torch.') for d in CODES))}."
        )
    return t.detach().cpu().contiguous()
