"""`ModelWeights`: every tensor of a model, described, and read only when asked for."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from weightdna.errors import InvalidInputError, ModelFileError
from weightdna.weights.roles import (
    KEPT_ROLES,
    infer_role,
    name_batchnorms,
    resolve_roles,
    split_layer,
    stack_of,
)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a model: what it is and where it sits, without its values."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str
    layer: int | None  # index in its stack (``encoder.layer.3.`` → 3), None outside stacks
    kind: str  # the name with the layer index as ``*``: the tensor's type within a layer

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * getattr(torch, self.dtype).itemsize

    @property
    def stack(self) -> str | None:
        """The stack of layers this tensor belongs to (``encoder.layer``), or None."""
        return stack_of(self.kind) if self.layer is not None else None

    @property
    def fittable(self) -> bool:
        """Floating point and not a buffer: a DNA may fit it."""
        return self.role not in KEPT_ROLES and getattr(torch, self.dtype).is_floating_point


@dataclass(frozen=True)
class TensorSource:
    """How to get one tensor: its declared dtype and shape, and a reader."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    read: Callable[[], torch.Tensor]  # may return shared memory; ModelWeights copies...
    owned: bool = False  # ...unless each read returns a new tensor nothing else holds
    # Optional: a new tensor converted to the dtype given as it is read, the stored dtype's
    # copy never held whole (`ModelWeights.numpy` of a large tensor).
    read_as: Callable[[torch.dtype], torch.Tensor] | None = None
    # Optional: rows [start, stop) of the first dimension only, read into a new tensor.
    read_rows: Callable[[int, int], torch.Tensor] | None = None

    @classmethod
    def held(cls, t: torch.Tensor) -> TensorSource:
        """A tensor already in memory."""
        return cls(t.dtype, tuple(t.shape), lambda: t)


def natural_key(name: str) -> list[object]:
    """Sort key that puts ``layer.10`` after ``layer.9``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


@dataclass(eq=False)  # two readers of one file are not "equal"; compare tensors instead
class ModelWeights:
    """Every tensor of one model, in natural name order; values are read on demand."""

    path: Path
    format: str
    sources: Mapping[str, TensorSource] = field(repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    roles: Mapping[str, str] | None = field(default=None, repr=False)
    # Roles the file's structure gives (an ONNX graph's operator inputs); before the names'.
    structural_roles: Mapping[str, str] = field(default_factory=dict, repr=False)
    # {kernel: (gain, running variance)} of the BatchNorms an ONNX graph puts after its
    # convs (`roles.graph_batchnorms`); None: found by the names (`batchnorms`).
    graph_batchnorms: Mapping[str, tuple[str, str]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        names = sorted(self.sources, key=natural_key)
        inferred = {n: infer_role(n, self.sources[n].shape, self.sources[n].dtype) for n in names}
        for n, role in self.structural_roles.items():
            if n in inferred and inferred[n] != "buffer":  # integers stay buffers
                inferred[n] = role
        dtypes = {n: self.sources[n].dtype for n in names}
        roles = resolve_roles(inferred, dtypes, self.roles or {})
        infos = []
        for n in names:
            layer, kind = split_layer(n)
            src = self.sources[n]
            infos.append(TensorInfo(n, src.shape, dtype_name(src.dtype), roles[n], layer, kind))
        self._infos = {info.name: info for info in infos}

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], roles: Mapping[str, str] | None = None
    ) -> ModelWeights:
        """Describe tensors already in memory (format ``"memory"``), e.g. a fresh state dict."""
        sources = {name: TensorSource.held(t) for name, t in tensors.items()}
        return cls(path=Path("<memory>"), format="memory", sources=sources, roles=roles)

    @property
    def infos(self) -> tuple[TensorInfo, ...]:
        return tuple(self._infos.values())

    @property
    def batchnorms(self) -> Mapping[str, tuple[str, str]]:
        """{kernel: (gain, running variance)} of the BatchNorm that follows each conv whose
        output channels it normalises: the graph's (ONNX), else by PyTorch's names
        (`roles.name_batchnorms`)."""
        if self.graph_batchnorms is not None:
            return self.graph_batchnorms
        return name_batchnorms({n: self.sources[n].shape for n in self._infos})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._infos)

    def info(self, name: str) -> TensorInfo:
        """The TensorInfo of ``name``."""
        self._check(name)
        return self._infos[name]

    def float_infos(self) -> tuple[TensorInfo, ...]:
        """Tensors a DNA may fit: floating point and not buffers."""
        return tuple(i for i in self._infos.values() if i.fittable)

    @property
    def total_params(self) -> int:
        """Number of values in all tensors except buffers."""
        return sum(i.numel for i in self._infos.values() if i.role not in KEPT_ROLES)

    @property
    def total_numel(self) -> int:
        """Number of values in all tensors, buffers included."""
        return sum(i.numel for i in self._infos.values())

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name`` in its stored dtype, as a new tensor the caller owns."""
        self._check(name)
        t = self._read(name)
        return t if self.sources[name].owned else t.clone()

    def numpy(self, name: str, dtype: type | np.dtype = np.float64) -> np.ndarray:
        """The tensor ``name`` converted to a new NumPy array of ``dtype`` (float64 default)."""
        self._check(name)
        target = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        src = self.sources[name]
        if src.read_as is not None:
            t = src.read_as(target)
            if t.dtype != target or tuple(t.shape) != src.shape:
                raise ModelFileError(f"{self.path}: {name} did not read back as declared.")
            return t.numpy()
        # .to() may return the source itself when dtypes match; the copy keeps inputs safe
        # (a source that reads into a new tensor each time needs none).
        return self._read(name).to(target, copy=not src.owned).numpy()

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the tensor ``name`` (its first dimension), in its stored
        dtype, as a new tensor the caller owns: read alone where the format allows (a
        safetensors file), else cut from the whole tensor."""
        self._check(name)
        src = self.sources[name]
        if src.read_rows is None or not src.shape:
            return self.tensor(name)[start:stop].clone()
        t = src.read_rows(start, stop)
        first = src.shape[0]
        expected = (max(0, min(stop, first) - max(0, min(start, first))), *src.shape[1:])
        if t.dtype != src.dtype or tuple(t.shape) != expected:
            raise ModelFileError(f"{self.path}: rows of {name} did not read back as declared.")
        return t

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All tensors by name, each a new tensor in its stored dtype."""
        return {name: self.tensor(name) for name in self._infos}

    def _read(self, name: str) -> torch.Tensor:
        src = self.sources[name]
        t = src.read()
        if t.dtype != src.dtype or tuple(t.shape) != src.shape:
            raise ModelFileError(f"{self.path}: {name} did not read back as declared.")
        return t

    def _check(self, name: str) -> None:
        if name not in self._infos:
            raise InvalidInputError(
                f"{self.path} has no tensor named {name!r}; `weightdna weights "
                f"{self.path}` lists the {len(self._infos)} it has."
            )

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self._infos.values())

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, item: object) -> bool:
        name = item.name if isinstance(item, TensorInfo) else item
        return name in self._infos


@dataclass(eq=False)
class DividedWeights(ModelWeights):
    """The model ``base`` with the tensors ``factors`` names read divided by them, column by
    column (the elements past the first axis; float64, then the tensor's dtype): what the
    codec codes under per-column factors (`weightdna.codec.compress.compress_model`'s
    ``column_factors``). Other processes open it as ``base``'s path plus the factors
    (`weightdna.codec.workers`)."""

    base: ModelWeights | None = field(default=None, repr=False)
    factors: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)


def divided_by_columns(weights: ModelWeights, factors: Mapping[str, np.ndarray]
                       ) -> DividedWeights:
    """``weights`` read with each tensor that ``factors`` names divided by its factors
    (`DividedWeights`)."""
    sources = {}
    for name in weights.names:
        src = weights.sources[name]
        if name not in factors:
            sources[name] = src
            continue
        divisor = torch.from_numpy(np.asarray(factors[name], dtype=np.float64))

        def divided(t: torch.Tensor, divisor: torch.Tensor = divisor) -> torch.Tensor:
            rows = t.reshape(t.shape[0], -1).to(torch.float64) / divisor
            return rows.to(t.dtype).reshape(t.shape)

        sources[name] = TensorSource(
            src.dtype, src.shape, lambda n=name, f=divided: f(weights.tensor(n)), owned=True,
            read_rows=lambda a, b, n=name, f=divided: f(weights.rows(n, a, b)))
    return DividedWeights(path=weights.path, format="divided", sources=sources,
                          metadata=weights.metadata, roles=weights.roles,
                          structural_roles=weights.structural_roles,
                          graph_batchnorms=weights.graph_batchnorms, base=weights,
                          factors=dict(factors))
