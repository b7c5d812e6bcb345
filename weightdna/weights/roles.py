"""What each tensor is: its role, and its place in the model's stack of layers.

Roles come from the name and the shape (rules below, first match wins) and can be
overridden by the caller. The layer is read from the name's structure, never from the
order of names in a file.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

import torch

from weightdna.errors import InvalidInputError

ROLES = ("matrix", "conv", "bias", "norm", "embedding", "other", "buffer")
# Roles whose tensors are kept exactly and never fitted.
KEPT_ROLES = frozenset({"buffer"})

# Last name segments of tensors that are state, not learned weights.
BUFFER_LEAVES = frozenset(
    {
        "position_ids",
        "token_type_ids",
        "running_mean",
        "running_var",
        "num_batches_tracked",
        "inv_freq",
        "masked_bias",
    }
)
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
    if ndim == 1 and _NORM_MODULE.search(module):
        return "norm"
    if ndim == 1 and leaf == "bias":
        return "bias"
    if 3 <= ndim <= 5 and leaf == "weight":
        return "conv"
    if ndim >= 2 and any(_EMBEDDING.search(p) for p in parts):
        return "embedding"
    if ndim == 2:
        return "matrix"
    return "other"


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
