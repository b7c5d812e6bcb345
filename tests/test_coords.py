"""φ of SPEC part B: coordinates in [−1, 1], exact inverse, distinct points, layers by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightdna.coords import (
    CoordinateSpace,
    axis_coordinate,
    axis_index,
    coordinate_indices,
    matrix_shape,
    tensor_coordinates,
)
from weightdna.errors import InvalidInputError
from weightdna.weights import TensorInfo, load_weights, minilm_path, split_layer


def info(name: str, shape: tuple[int, ...], dtype: str = "float32", role: str = "matrix"):
    layer, kind = split_layer(name)
    return TensorInfo(name, tuple(shape), dtype, role, layer, kind)


shapes = st.lists(st.integers(1, 9), min_size=0, max_size=4).map(tuple).filter(
    lambda s: math.prod(s) <= 3000
)


# --- one axis ----------------------------------------------------------------------------


@given(st.data(), st.integers(1, 2**48))
def test_axis_inverse_is_exact_in_float64(data, size: int) -> None:
    i = np.array(data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=20)))
    x = axis_coordinate(i, size)
    assert x.dtype == np.float64
    assert np.all((-1 <= x) & (x <= 1))
    np.testing.assert_array_equal(axis_index(x, size), i)


@given(st.data(), st.integers(1, 2**23))
def test_axis_inverse_is_exact_from_float32(data, size: int) -> None:
    i = np.array(data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=20)))
    x = axis_coordinate(i, size).astype(np.float32)
    np.testing.assert_array_equal(axis_index(x, size), i)


@given(st.integers(2, 10**6))
def test_axis_ends_and_order(size: int) -> None:
    x = axis_coordinate([0, size - 1, size // 2, size // 2 - 1], size)
    assert x[0] == -1.0 and x[1] == 1.0
    assert x[3] < x[2]
    # Symmetric: positions i and m−1−i are exact negatives.
    assert axis_coordinate(1, size) == -axis_coordinate(size - 2, size)


def test_single_position_is_zero() -> None:
    assert axis_coordinate([0], 1).tolist() == [0.0]
    assert axis_index([0.0], 1).tolist() == [0]


def test_matches_spec_formula() -> None:
    i = np.arange(7)
    np.testing.assert_allclose(axis_coordinate(i, 7), 2 * i / 6 - 1, rtol=0, atol=1e-15)


# --- one tensor --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(shapes, st.data())
def test_tensor_coordinates_properties(shape: tuple[int, ...], data) -> None:
    t = info("block.3.w", shape)
    space = CoordinateSpace([t, info("block.0.w", (2, 2)), info("head.w", (1,))])
    c = tensor_coordinates(t, space)
    numel = math.prod(shape)
    assert c.shape == (numel, 4) and c.dtype == np.float64
    assert np.all((-1 <= c) & (c <= 1))
    np.testing.assert_array_equal(coordinate_indices(c, shape), np.arange(numel))
    assert len(np.unique(c, axis=0)) == numel  # distinct weights, distinct points
    # Chunks and arbitrary index arrays give the same rows as the whole tensor.
    step = data.draw(st.integers(1, numel))
    chunks = [space.coordinates(t.name, slice(a, a + step)) for a in range(0, numel, step)]
    np.testing.assert_array_equal(np.concatenate(chunks), c)
    pick = np.array(data.draw(st.lists(st.integers(0, numel - 1), max_size=30)), dtype=np.int64)
    np.testing.assert_array_equal(space.coordinates(t.name, pick), c[pick])
    c32 = space.coordinates(t.name, dtype=np.float32)
    assert c32.dtype == np.float32
    np.testing.assert_array_equal(coordinate_indices(c32, shape), np.arange(numel))


def test_rule_for_each_rank() -> None:
    scalar, vector, row, column = (info(n, s) for n, s in
                                   [("s", ()), ("v", (5,)), ("r", (1, 5)), ("c", (5, 1))])
    space = CoordinateSpace([scalar, vector, row, column])
    assert space.coordinates("s")[:, :2].tolist() == [[0.0, 0.0]]  # 0-d: one point
    line = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(space.coordinates("v")[:, :2], np.c_[np.zeros(5), line])
    # A 1-D tensor is a single row, exactly like a 1×n matrix.
    np.testing.assert_array_equal(space.coordinates("v")[:, :2], space.coordinates("r")[:, :2])
    np.testing.assert_allclose(space.coordinates("c")[:, :2], np.c_[line, np.zeros(5)])
    assert matrix_shape(()) == (1, 1) and matrix_shape((5,)) == (1, 5)


def test_conv_kernel_rule() -> None:
    out, cin, kh, kw = 4, 3, 2, 5
    t = info("conv.weight", (out, cin, kh, kw), role="conv")
    c = CoordinateSpace([t]).coordinates(t.name)
    o, ch, h, w = 2, 1, 1, 3
    flat = np.ravel_multi_index((o, ch, h, w), (out, cin, kh, kw))
    column = (ch * kh + h) * kw + w
    assert c[flat, 0] == axis_coordinate(o, out)  # row: output channel
    assert c[flat, 1] == axis_coordinate(column, cin * kh * kw)  # column: (in, kh, kw) in C order


def test_empty_tensor_has_no_coordinates() -> None:
    t = info("e", (0, 3))
    assert CoordinateSpace([t]).coordinates("e").shape == (0, 4)


# --- a model -----------------------------------------------------------------------------


def test_layer_and_type_code_from_structure_not_order() -> None:
    names = [f"encoder.layer.{i}.{k}" for i in range(6) for k in ("q.weight", "q.bias")]
    names += ["embeddings.weight", "pooler.weight"]
    infos = [info(n, (3, 2) if n.endswith("weight") else (3,)) for n in names]
    rng = np.random.default_rng(0)
    shuffled = [infos[i] for i in rng.permutation(len(infos))]
    a, b = CoordinateSpace(infos), CoordinateSpace(shuffled)
    assert a.kinds == b.kinds == (
        "embeddings.weight", "encoder.layer.*.q.bias", "encoder.layer.*.q.weight", "pooler.weight"
    )
    assert a.layers == {"encoder.layer": 6}
    for n in names:
        np.testing.assert_array_equal(a.coordinates(n), b.coordinates(n))
    z = a.coordinates("encoder.layer.3.q.weight")[0, 2]
    assert z == pytest.approx(2 * 3 / 5 - 1)
    assert a.coordinates("encoder.layer.0.q.bias")[0, 2] == -1.0
    assert a.coordinates("encoder.layer.5.q.bias")[0, 2] == 1.0
    assert a.coordinates("pooler.weight")[0, 2] == 0.0  # outside every stack
    # Type codes: the sorted kinds, evenly spaced over [−1, 1].
    assert [w for _, w in a.type_table()] == pytest.approx([-1, -1 / 3, 1 / 3, 1])


def test_layer_count_from_highest_index_and_single_layer() -> None:
    # Engine models skip indices of parameter-free layers: layers.0 and layers.2 give L = 3.
    space = CoordinateSpace([info("layers.0.weight", (2, 2)), info("layers.2.weight", (2, 2))])
    assert space.layers == {"layers": 3}
    assert space.coordinates("layers.2.weight")[0, 2] == 1.0
    single = CoordinateSpace([info("blocks.0.w", (2, 2))])
    assert single.coordinates("blocks.0.w")[0, 2:].tolist() == [0.0, 0.0]  # L = 1, K = 1


@st.composite
def models(draw):
    n_layers = draw(st.integers(1, 4))
    kinds = draw(st.lists(st.sampled_from(["a.weight", "a.bias", "n.weight", "c.weight"]),
                          min_size=1, unique=True))
    infos = []
    for layer in range(n_layers):
        for kind in kinds:
            infos.append(info(f"h.{layer}.{kind}", draw(shapes)))
    if draw(st.booleans()):
        infos.append(info("emb.weight", draw(shapes)))
    return infos


@settings(max_examples=60, deadline=None)
@given(models())
def test_whole_space_distinct_and_invertible(infos) -> None:
    space = CoordinateSpace(infos)
    coords = [space.coordinates(i.name) for i in infos]
    every = np.concatenate(coords)
    assert len(np.unique(every, axis=0)) == len(every)
    names, flat = space.locate(every)
    expected_names = np.concatenate([[i.name] * i.numel for i in infos])
    np.testing.assert_array_equal(names, expected_names)
    np.testing.assert_array_equal(flat, np.concatenate([np.arange(i.numel) for i in infos]))


def test_bad_inputs() -> None:
    space = CoordinateSpace([info("w", (3, 3))])
    with pytest.raises(InvalidInputError, match="not in this coordinate space"):
        space.coordinates("position_ids")
    with pytest.raises(InvalidInputError, match=r"\[−1, 1\]"):
        coordinate_indices([[1.5, 0.0]], (3, 3))
    with pytest.raises(InvalidInputError, match="array"):
        coordinate_indices([0.0, 0.0], (3, 3))
    with pytest.raises(InvalidInputError, match="flat indices"):
        space.coordinates("w", [9])
    with pytest.raises(InvalidInputError):
        CoordinateSpace([])


def test_minilm_space() -> None:
    weights = load_weights(minilm_path())
    space = CoordinateSpace.from_weights(weights)
    assert "embeddings.position_ids" not in space.infos  # a buffer has no coordinates
    assert len(space.infos) == 103 and len(space.kinds) == 23
    assert space.layers == {"encoder.layer": 6}
    q = weights.info("encoder.layer.0.attention.self.query.weight")
    assert tensor_coordinates(q, space)[0, 2] == -1.0
    name = "encoder.layer.3.intermediate.dense.weight"
    c = space.coordinates(name)  # its speed is benchmarked, not timed here
    assert c.shape == (1536 * 384, 4)
    rng = np.random.default_rng(0)
    sample = [(i.name, rng.integers(0, i.numel, 100)) for i in space.infos.values()]
    points = np.concatenate([space.coordinates(n, idx) for n, idx in sample])
    names, flat = space.locate(points)
    np.testing.assert_array_equal(names, np.concatenate([[n] * 100 for n, _ in sample]))
    np.testing.assert_array_equal(flat, np.concatenate([idx for _, idx in sample]))
