"""Tensor weights between "layer" and "relative": ``layer:α`` and ``share`` (measuring
objectives, `weightdna.codec.ratecontrol.layer_exponent`; BENCHMARKS.md, "Tensor weights
between layer and relative")."""

from __future__ import annotations

import pytest
import torch

from weightdna.codec.compress import compress_model
from weightdna.codec.ratecontrol import Target, check_objective, layer_exponent
from weightdna.errors import InvalidInputError
from weightdna.weights import ModelWeights


def _model() -> ModelWeights:
    """A large matrix beside small kernels of the same scale: "layer" gives the large one
    the fewest bits per weight, "relative" the same step everywhere."""
    g = torch.Generator().manual_seed(0)
    tensors = {"big.weight": torch.randn(256, 512, generator=g) * 0.05}
    for i in range(6):
        tensors[f"small{i}.weight"] = torch.randn(16, 8, 3, 3, generator=g) * 0.05
    return ModelWeights.from_tensors(tensors)


def _coded(tmp_path, objective: str) -> tuple[bytes, float]:
    """The file's bytes and the big matrix's bits per weight."""
    out = tmp_path / f"{objective.replace(':', '_')}.dna"
    report = compress_model(_model(), out, Target("bits_per_weight", 2.0),
                            objective=objective, overwrite=True)
    big = next(t for t in report.tensors if t.name == "big.weight")
    return out.read_bytes(), 8 * big.bytes / big.numel


def test_layer_exponent_names() -> None:
    assert layer_exponent("layer") == 1.0
    assert layer_exponent("relative") == 0.0
    assert layer_exponent("layer:0.25") == 0.75
    for bad in ("mse", "layer:", "layer:x", "layer:1.5", "layer:-0.1", "share"):
        assert layer_exponent(bad) is None
    check_objective("share")
    with pytest.raises(InvalidInputError, match="layer:α"):
        check_objective("layer:2")


def test_alpha_ends_are_layer_and_relative_and_weigh_in_between(tmp_path) -> None:
    layer, layer_big = _coded(tmp_path, "layer")
    relative, relative_big = _coded(tmp_path, "relative")
    assert _coded(tmp_path, "layer:0")[0] == layer
    assert _coded(tmp_path, "layer:1")[0] == relative
    half_big = _coded(tmp_path, "layer:0.5")[1]
    assert layer_big < half_big < relative_big
    # share: the big matrix is larger than the mean tensor, so it counts as under relative
    # and the small ones (smaller than the mean) count as a mean one: more than under
    # relative, so the big one gets no more than under relative, more than under layer.
    share_big = _coded(tmp_path, "share")[1]
    assert layer_big < share_big <= relative_big
