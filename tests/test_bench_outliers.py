"""bench/outliers.py's prototype of a sparse outlier stream (issue 11's measurement): the
rule picks only elements over K row scales, at most CAP of the tensor, the largest first;
the tensor the codec sees holds 0 there and the model is left as it was; writing back
restores the exact (float16) values."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from weightdna.weights import ModelWeights


@pytest.fixture(scope="module")
def outliers():  # noqa: ANN201
    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))  # its `bn_rows` import
    try:
        spec = importlib.util.spec_from_file_location("outliers", bench / "outliers.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    return module


def _matrix() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g)
    w[3, 5], w[10, 0], w[40, 31] = 50.0, -80.0, 30.0  # 50, 80, 30 row scales or so
    w[20] *= 100.0  # a whole row large: its own scale, no outliers in it
    return w


def test_the_rule_takes_only_elements_far_over_their_rows_scale(outliers) -> None:  # noqa: ANN001
    values = _matrix().double().numpy()
    picked = outliers.pick(values, 16.0, 0.01)
    assert picked.tolist() == [3 * 32 + 5, 10 * 32 + 0, 40 * 32 + 31]
    # A cap of 2 elements keeps the two largest over their row's scale.
    assert outliers.pick(values, 16.0, 2 / values.size).tolist() == [3 * 32 + 5, 10 * 32]
    assert outliers.pick(values, 1000.0, 0.01).size == 0


def test_taken_out_then_written_back(outliers) -> None:  # noqa: ANN001
    w = _matrix()
    weights = ModelWeights.from_tensors({"layer.weight": w, "layer.bias": torch.ones(64)})
    coded, taken, cost, shares = outliers.take_outliers(weights, 16.0, 0.01, "float16")
    assert set(taken) == {"layer.weight"}  # a bias is not a matrix
    positions, exact = taken["layer.weight"]
    bulk = coded.tensor("layer.weight").reshape(-1)
    assert torch.all(bulk[torch.from_numpy(positions)] == 0)
    assert torch.equal(weights.tensor("layer.weight"), w)  # the model as it was
    assert cost > 3 * 2  # three float16 values and their gaps
    assert 0 < shares["layer.weight"] < 1
    back = outliers.written_back(coded.state_dict(), taken)
    assert torch.equal(back["layer.weight"], w)  # 50, -80 and 30 are exact in float16
