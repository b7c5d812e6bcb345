"""Write weights back as safetensors: same names, shapes, dtypes and bytes; never half a file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from weightdna.atomic import atomic_output
from weightdna.errors import InvalidInputError, OutputExistsError
from weightdna.weights.model import ModelWeights
from weightdna.weights.safetensors_format import CODES, write_safetensors


def save_weights(
    tensors: Mapping[str, torch.Tensor | np.ndarray] | ModelWeights,
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save tensors as a safetensors file at ``path`` and return the path.

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
        tensors = tensors.state_dict()
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


def _prepare(name: object, t: object) -> torch.Tensor:
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise InvalidInputError(f"tensor name {name!r} cannot be saved; use a non-empty string.")
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
