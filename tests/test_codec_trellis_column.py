"""The trellis coder's column context (format version 18, `trellis.COLUMN_BUCKETS`): exact
round trips, version 17's files and coder unchanged, the gate's choice, and a bad column
param refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.codec import decode_tensor, encode_tensor, tensor, trellis
from weightdna.codec.container import read_dna_file, write_dna_file
from weightdna.codec.entries import (
    STATES_VERSION,
    TRELLIS_CODER_VERSION,
    TRELLIS_COLUMN_VERSION,
    file_version,
)
from weightdna.errors import CorruptFileError

V17 = Path(__file__).parent / "data" / "coder_v17.dna"


def _columns(rows: int = 256, columns: int = 512, spread: float = 0.6,
             seed: int = 0) -> torch.Tensor:
    """Gaussian weights whose rows and columns each spread over ``spread`` decades (in
    random order): the columns' scales are what the column context sees."""
    g = torch.Generator().manual_seed(seed)
    row = torch.logspace(-0.5, 0.5, rows)[torch.randperm(rows, generator=g)][:, None]
    column = torch.logspace(-spread / 2, spread / 2, columns)[
        torch.randperm(columns, generator=g)][None, :]
    return torch.randn(rows, columns, generator=g) * row * column


def _coded(w: torch.Tensor, column: bool, step: float = 0.1,
           coder: bool = True) -> tuple[dict, dict]:
    saved = tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN
    tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN = coder, column
    try:
        return encode_tensor(w, name="t", step=step, quantizer="trellis")
    finally:
        tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN = saved


@pytest.fixture(autouse=True)
def _eight_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """The column context as version 18 has it, on NNCodec's 8 states (with more states,
    version 19: `test_round_trip_with_the_column_context_and_more_states`)."""
    monkeypatch.setattr(tensor, "TRELLIS_STATES", trellis.STATES)


def _model(coded: tuple[dict, dict]) -> dict:
    return coded[0]["params"]["model"]


def _size(coded: tuple[dict, dict]) -> int:
    return sum(len(v) for v in coded[1].values())


def test_default_is_on() -> None:
    assert tensor.TRELLIS_COLUMN is True
    assert _model(encode_tensor(_columns(), name="t", step=0.1,
                                quantizer="trellis"))["column"] == trellis.COLUMN_BUCKETS


def _v17_matrix() -> torch.Tensor:
    """tests/data/coder_v17.dna's matrix (`test_codec_trellis_adaptive._matrix()`)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(128, 512, generator=g) * torch.linspace(0.2, 2, 128)[:, None]


def _v17_kernel() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 16, 5, 5, generator=g).cumsum(-1)
    return base + 0.3 * torch.randn(48, 16, 5, 5, generator=g).cumsum(-1)


def test_version_17_file_decodes_and_codes_as_before() -> None:
    """tests/data/coder_v17.dna, written by format version 17's encoder (a matrix under
    the plain coder, a kernel under the neighbours'): read as before, decoded to the same
    values (their sha256 as version 17's decoder gave them), and coded again, without the
    column context, to the same bytes."""
    dna = read_dna_file(V17)
    assert dna.version == TRELLIS_CODER_VERSION
    digests = {"matrix": "695868368bec87d59b8f8441d9d9b1d13dbe4f302474683ba5c8b750a267ad5b",
               "kernel": "f1137b6c0748599ecfde99ff1e158822f7f4d2193037fda8345a1c835bf7f089"}
    for name, digest in digests.items():
        assert hashlib.sha256(dna.tensor(name).numpy().tobytes()).hexdigest() == digest
    for entry, w, step in ((dna.entries[0], _v17_matrix(), 0.1),
                           (dna.entries[1], _v17_kernel(), 0.4)):
        again = _coded(w, False, step)
        assert "column" not in entry["params"]["model"]
        assert again[0]["params"] == entry["params"]
        assert again[1] == dna.read_sections(entry["name"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_trip_with_the_column_context(dtype: torch.dtype) -> None:
    """Over several row blocks (the column sums carried between them): the same values as
    the context streams give, in fewer bytes than the coder without the column context;
    the float32 path and the general one."""
    w = _columns(700, 640, seed=3).to(dtype)
    assert len(tensor._row_blocks(700, 640)) >= 2
    off, plain, on = _coded(w, False, coder=False), _coded(w, False), _coded(w, True)
    assert _model(on)["column"] == trellis.COLUMN_BUCKETS
    assert "column" not in _model(plain) and _size(on) < min(_size(plain), _size(off))
    version = file_version([on[0]])
    assert version == TRELLIS_COLUMN_VERSION
    assert torch.equal(decode_tensor(*on, version=version), decode_tensor(*off))
    assert on[0]["stats"] == off[0]["stats"]


@pytest.mark.parametrize("states", [32, 64])
def test_round_trip_with_the_column_context_and_more_states(
        monkeypatch: pytest.MonkeyPatch, states: int) -> None:
    """A trellis of more states (version 19) under the coder with its column context: each
    state has the contexts of the state mod 8, the same values as its context streams
    give, in fewer bytes, written as version 19."""
    monkeypatch.setattr(tensor, "TRELLIS_STATES", states)
    w = _columns(700, 640, seed=3)
    off, on = _coded(w, False, coder=False), _coded(w, True)
    assert _model(on)["states"] == _model(off)["states"] == states
    assert _model(on)["column"] == trellis.COLUMN_BUCKETS and _size(on) < _size(off)
    version = file_version([on[0]])
    assert version == STATES_VERSION
    assert torch.equal(decode_tensor(*on, version=version), decode_tensor(*off))


def test_coder_with_neighbours_and_column() -> None:
    """Every variant (neighbours or not, column context or not) decodes to its symbols,
    a few rows at a time, and its ideal bits are what it writes; the column context
    changes the bytes only where it is on."""
    rng = np.random.default_rng(1)
    scale = np.exp(rng.normal(0, 0.6, 300))
    symbols = np.round(rng.laplace(0, 1, (40, 300)) * scale).astype(np.int32)
    symbols[3, 4] = 5000  # an Exp-Golomb remainder
    classes = (np.arange(40) % 3).astype(np.uint8)
    whole = [(symbols, classes)]
    blocks = [(symbols[i : i + 7], classes[i : i + 7]) for i in range(0, 40, 7)]
    for caps in trellis.NEIGHBOURS:
        plain = trellis.coder_encode(whole, 3, 300, *caps)
        assert trellis.coder_encode(whole, 3, 300, *caps, 1) == plain
        data = trellis.coder_encode(whole, 3, 300, *caps, trellis.COLUMN_BUCKETS)
        assert data != plain
        assert data == trellis.coder_encode(blocks, 3, 300, *caps, trellis.COLUMN_BUCKETS)
        bits, _ = trellis.coder_bits(whole, 3, 300, *caps, trellis.COLUMN_BUCKETS)
        assert bits / 8 <= len(data) <= bits / 8 + 12
        reader = trellis.CoderReader(data, -5000, 5000, classes, 3, 300, caps,
                                     trellis.COLUMN_BUCKETS)
        got = [reader.rows(i, min(40, i + 9), 300) for i in range(0, 40, 9)]
        assert reader.exhausted()
        assert np.array_equal(np.concatenate([g[0] for g in got]), symbols)


def test_column_buckets() -> None:
    """The first row in the middle bucket; then each column's mean |k| over the rows
    above against theirs, at the edges 0.7, 1 and 1.4."""
    symbols = np.array([[1, 2, 3, 4], [0, 0, 0, 0], [4, -3, 0, 1], [9, 9, 9, 9]])
    buckets = trellis.column_buckets(symbols)
    assert buckets[0].tolist() == [trellis.COLUMN_MIDDLE] * 4
    # row 1: column sums 1, 2, 3, 4 of 10, ratios 0.4, 0.8, 1.2, 1.6
    assert buckets[1].tolist() == [0, 1, 2, 3]
    assert buckets[2].tolist() == [0, 1, 2, 3]  # row 1 all zeros: the same ratios
    # row 3: sums 5, 5, 3, 5 of 18 over 4 columns: ratios 1.11, 1.11, 0.67, 1.11
    assert buckets[3].tolist() == [2, 2, 0, 2]
    assert trellis.column_buckets(np.zeros((3, 5), dtype=np.int32)).tolist() == \
        [[trellis.COLUMN_MIDDLE] * 5] * 3


def test_the_gate_takes_what_wins_only_with_the_column_context() -> None:
    """A matrix of more than CODER_WHOLE_ELEMENTS whose columns differ in scale: version
    17's coder does not pay on it (the streams kept), the column context does, and the
    gate's floor, less what the column context takes off (`_column_gain`, from the
    sample), lets it be weighed; without column structure nothing changes."""
    w = _columns(256, 512, spread=0.6)
    assert w.numel() > tensor.CODER_WHOLE_ELEMENTS
    assert "coder" not in _model(_coded(w, False))
    on = _coded(w, True)
    assert _model(on)["column"] == trellis.COLUMN_BUCKETS
    assert _size(on) < _size(_coded(w, False))
    flat = _columns(256, 512, spread=0.0)
    for step in (0.1, 0.3):
        assert _coded(flat, True, step) == _coded(flat, False, step)


def test_column_gain_estimate() -> None:
    """`_column_gain` on sampled rows: positive where the columns differ in scale, and
    growing with their spread; next to nothing where they do not (a twentieth of a
    spread of 0.6 decades)."""
    gains = []
    for spread in (0.0, 0.6, 1.0):
        w = _columns(2048, 256, spread=spread)
        symbols = np.round(w.numpy() / 0.2).astype(np.int32)
        classes = np.zeros(2048, dtype=np.uint8)
        gains.append(tensor._column_gain(symbols[::16], classes[::16], 1, symbols.size))
    assert gains[0] < 0.05 * gains[1] and 0 < gains[1] < gains[2]


def _damaged(coded: tuple[dict, dict], **changes: object) -> tuple[dict, dict]:
    model = {**_model(coded), **changes}
    model = {k: v for k, v in model.items() if v is not None}
    return {**coded[0], "params": {**coded[0]["params"], "model": model}}, coded[1]


@pytest.mark.parametrize("column", [1, 2, 3, 5, 0, -4, "4", 4.0, True, [4], None])
def test_a_bad_column_param_is_refused(column: object) -> None:
    coded = _coded(_columns(), True)
    assert _model(coded)["column"] == 4
    entry, sections = _damaged(coded, column=column)
    if column is None:  # without it: version 17's contexts, other symbols or a bad end
        with pytest.raises(CorruptFileError):
            decode_tensor(entry, sections, version=TRELLIS_COLUMN_VERSION)
        return
    with pytest.raises(CorruptFileError, match="column context"):
        decode_tensor(entry, sections, version=TRELLIS_COLUMN_VERSION)


def test_version_gate(tmp_path: Path) -> None:
    """The column context in a file of version 17 is refused; a file holding it is
    version 18; a version-17 coder's param set in a version-18 file reads as before."""
    coded = _coded(_columns(), True)
    with pytest.raises(CorruptFileError, match="new in version 18"):
        decode_tensor(*coded, version=TRELLIS_CODER_VERSION)
    path = tmp_path / "a.dna"
    write_dna_file(path, [coded[0]], [coded[1]])
    dna = read_dna_file(path)
    assert dna.version == TRELLIS_COLUMN_VERSION
    assert torch.equal(dna.tensor("t"), decode_tensor(*_coded(_columns(), False)))
    plain = _coded(_columns(), False)
    assert torch.equal(decode_tensor(*plain, version=TRELLIS_COLUMN_VERSION),
                       decode_tensor(*plain, version=TRELLIS_CODER_VERSION))
