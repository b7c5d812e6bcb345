"""One adaptive coder per trellis tensor (format version 17, `weightdna.codec.trellis`'s
coder): exact round trips against the context streams, the choice per tensor, the version
gate, and damaged or truncated streams refused."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from weightdna.codec import decode_tensor, encode_tensor, tensor, trellis
from weightdna.codec.container import read_dna_file, write_dna_file
from weightdna.codec.entries import ADAPTIVE_VERSION, TRELLIS_CODER_VERSION, file_version
from weightdna.errors import CorruptFileError


@pytest.fixture(autouse=True)
def _eight_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """The coder as version 17 has it: NNCodec's 8 states (more states, version 19:
    tests/test_trellis_states.py)."""
    monkeypatch.setattr(tensor, "TRELLIS_STATES", trellis.STATES)


def _matrix(rows: int = 128, columns: int = 512, seed: int = 0) -> torch.Tensor:
    """At most `tensor.CODER_WHOLE_ELEMENTS` elements by default: weighed whole."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, columns, generator=g) * torch.linspace(0.2, 2, rows)[:, None]


def _kernel(seed: int = 0) -> torch.Tensor:
    """A conv kernel whose taps are correlated along a row and between channels."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 16, 5, 5, generator=g).cumsum(-1)
    return base + 0.3 * torch.randn(48, 16, 5, 5, generator=g).cumsum(-1)


def _coded(w: torch.Tensor, on: bool, step: float = 0.1, column: bool = False,
           **kwargs) -> tuple[dict, dict]:
    """Coded with the coder ``on`` or off; ``column``: with version 18's column context
    weighed too (off here: these are version 17's coder's tests;
    tests/test_codec_trellis_column.py has the column context's)."""
    saved = tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN
    tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN = on, column
    try:
        return encode_tensor(w, name="t", step=step, quantizer="trellis", **kwargs)
    finally:
        tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN = saved


def _model(coded: tuple[dict, dict]) -> dict:
    return coded[0]["params"]["model"]


def _size(coded: tuple[dict, dict]) -> int:
    return sum(len(v) for v in coded[1].values())


def test_default_is_on() -> None:
    assert tensor.TRELLIS_CODER is True
    assert "coder" in _model(encode_tensor(_matrix(), name="t", step=0.1,
                                           quantizer="trellis"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_round_trip_equals_the_streams(dtype: torch.dtype) -> None:
    """The same symbols as the context streams (the search is the same), decoded bit for
    bit alike, in fewer bytes; the float32 path and the general one."""
    w = _matrix().to(dtype)
    off, on = _coded(w, False), _coded(w, True)
    assert "streams" in _model(off)
    model = _model(on)
    assert model["coder"] == "adaptive" and "streams" not in model
    assert set(on[1]) == {"symbols", "classes"} and _size(on) < _size(off)
    version = file_version([on[0]])
    assert version == TRELLIS_CODER_VERSION
    assert torch.equal(decode_tensor(*on, version=version), decode_tensor(*off))
    assert on[0]["stats"] == off[0]["stats"]


def test_round_trip_over_row_blocks() -> None:
    """More elements than one row block (`tensor.BLOCK_ELEMENTS`): coded a block at a time,
    the last first, and decoded a block at a time, carrying the counts and the row above."""
    w = _matrix(700, 640, seed=3)
    assert len(tensor._row_blocks(700, 640)) >= 2
    off, on = _coded(w, False, step=0.6), _coded(w, True, step=0.6)
    assert "coder" in _model(on) and _size(on) < _size(off)
    assert torch.equal(decode_tensor(*on, version=TRELLIS_CODER_VERSION),
                       decode_tensor(*off))
    as_half = (on[0] | {"dtype": "float16"}, on[1])  # the general path's walk, block by block
    assert torch.equal(decode_tensor(*as_half, version=TRELLIS_CODER_VERSION),
                       decode_tensor(off[0] | {"dtype": "float16"}, off[1]))


def test_kernel_takes_the_neighbours() -> None:
    w = _kernel()
    off, on = _coded(w, False, step=0.4), _coded(w, True, step=0.4)
    assert _model(on)["neighbours"] == list(trellis.NEIGHBOURS[1])
    assert _size(on) < _size(off)
    assert torch.equal(decode_tensor(*on, version=TRELLIS_CODER_VERSION),
                       decode_tensor(*off))


def test_kept_only_where_smaller() -> None:
    """Large symbols of a few values: the coder's Exp-Golomb remainders cost a bit each
    where the streams' tables make them almost free."""
    w = torch.full((64, 300), 10.0)
    w[:, ::7] = 10.05
    coded = _coded(w, True, step=0.1)
    assert "streams" in _model(coded)
    assert file_version([coded[0]]) < TRELLIS_CODER_VERSION


def test_version_gate(tmp_path) -> None:
    """A file holding the coder is version 17; one of an earlier version holding it is
    refused; a file without it keeps its old version."""
    on, off = _coded(_matrix(), True), _coded(_matrix(), False)
    with pytest.raises(CorruptFileError, match="new in version 17"):
        decode_tensor(*on, version=ADAPTIVE_VERSION)
    path = tmp_path / "a.dna"
    write_dna_file(path, [on[0]], [on[1]])
    dna = read_dna_file(path)
    assert dna.version == TRELLIS_CODER_VERSION
    assert torch.equal(dna.tensor("t"), decode_tensor(*off))
    write_dna_file(tmp_path / "b.dna", [off[0]], [off[1]])
    assert read_dna_file(tmp_path / "b.dna").version < TRELLIS_CODER_VERSION


def _damaged(coded: tuple[dict, dict], model: dict | None = None,
             symbols: bytes | None = None) -> tuple[dict, dict]:
    entry = {**coded[0], "params": {**coded[0]["params"]}}
    if model is not None:
        entry["params"]["model"] = model
    sections = dict(coded[1])
    if symbols is not None:
        sections["symbols"] = symbols
    return entry, sections


def test_damaged_streams_are_refused() -> None:
    coded = _coded(_matrix(), True)
    model, data = _model(coded), coded[1]["symbols"]
    words = len(data) // 4
    cases = [
        _damaged(coded, symbols=data[4:]),  # truncated: a word less at the start
        _damaged(coded, symbols=data[:-4]),  # the final state cut
        _damaged(coded, symbols=data[: len(data) // 2]),
        _damaged(coded, symbols=data[:-1]),  # not whole words
        _damaged(coded, symbols=data[:-4] + bytes(4)),  # the last word 0
        _damaged(coded, symbols=data[:8]),  # too short for the tensor's symbols: unread
        _damaged(coded, symbols=data + data[-8:]),  # words left over
        _damaged(coded, model={**model, "min": 0}),  # symbols outside the range
        _damaged(coded, model={**model, "max": -1, "min": -3}),
        _damaged(coded, model={**model, "neighbours": [1, 1]}),
        _damaged(coded, model={**model, "neighbours": "no"}),
        _damaged(coded, model={**model, "coder": "static"}),
        _damaged(coded, model={**model, "min": 3, "max": 2}),
        _damaged(coded, model={**model, "min": -(1 << 40)}),
        _damaged(coded, model={**model, "classes": 9}),
        _damaged(coded, model={**model, "groups": 8}),
        _damaged(coded, model={k: v for k, v in model.items() if k != "neighbours"}),
    ]
    for at in (0, 4 * (words // 3), 4 * (words // 2) + 1, len(data) - 6):
        flipped = bytearray(data)
        flipped[at] ^= 0x5A
        cases.append(_damaged(coded, symbols=bytes(flipped)))
    for entry, sections in cases:
        with pytest.raises(CorruptFileError):
            decode_tensor(entry, sections, version=TRELLIS_CODER_VERSION)


def test_classes_of_the_coder_are_checked() -> None:
    coded = _coded(_matrix(), True)
    assert _model(coded)["classes"] > 1
    sections = {k: v for k, v in coded[1].items() if k != "classes"}
    with pytest.raises(CorruptFileError):
        decode_tensor(coded[0], sections, version=TRELLIS_CODER_VERSION)


def _planned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, tuple[int, int]]]:
    """Each `trellis.coder_plan` call's (rows walked, neighbours' caps), as they come."""
    calls: list[tuple[int, tuple[int, int]]] = []
    plan = trellis.coder_plan

    def counted(blocks, n_classes, columns, *caps, **states):
        assert caps[2:] in ((), (1,))  # version 17's contexts (`_coded`: no column)
        calls.append((sum(blocks[i][0].shape[0] for i in range(len(blocks))),
                      tuple(caps[:2])))
        return plan(blocks, n_classes, columns, *caps, **states)

    monkeypatch.setattr(trellis, "coder_plan", counted)
    return calls


def test_large_tensor_weighed_on_a_sample_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over CODER_WHOLE_ELEMENTS, the coder walks evenly spaced rows first (kept as the
    tensor was coded) and the whole tensor only where they say it wins; a matrix is never
    weighed with the neighbours. Before any walk, the streams' histograms may show that
    it cannot win (`_floor_loses`)."""
    calls = _planned(monkeypatch)
    # the gate's steps alone: the streams' header descriptors (which tip this small matrix
    # to the coder) are not counted here; `test_the_streams_header_counts_against_them`
    monkeypatch.setattr(tensor, "_descriptor_bytes", lambda model: 0)
    # 4.5 bits a symbol: the coder does not pay (rows in random order of scale)
    matrix = _matrix(128, 600)[torch.randperm(128, generator=torch.Generator().manual_seed(0))]
    loses = _coded(matrix, True)
    assert "coder" not in _model(loses)
    assert loses == _coded(matrix, False)
    assert calls == []  # its floor already says so: not walked at all
    monkeypatch.setattr(tensor, "CODER_FLOOR_SLACK", 1.0)  # no floor: the sample decides
    assert _coded(matrix, True) == loses
    sample = len(range(0, 128, -(-128 * 600 // tensor.CODER_SAMPLE_ELEMENTS)))
    # one walk, learning on the even sampled rows, then measured on the odd ones; no whole
    assert calls == [(sample, (0, 0))]
    calls.clear()
    monkeypatch.undo()
    calls = _planned(monkeypatch)
    wins = _coded(_matrix(700, 640, seed=3), True, step=0.6)
    assert _model(wins)["neighbours"] == [0, 0]
    sample = len(range(0, 700, -(-700 * 640 // tensor.CODER_SAMPLE_ELEMENTS)))
    assert calls == [(sample, (0, 0)), (700, (0, 0))]
    calls.clear()
    _coded(_kernel(), True, step=0.3)  # small: weighed whole, with and without
    assert calls == [(48, caps) for caps in trellis.NEIGHBOURS]


def _weighed(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every (search, symbols, coded bytes) `tensor._one_coder` is given, as it is."""
    seen: list[tuple] = []
    one = tensor._one_coder

    def kept(search, symbols, coded, kernel=False):
        seen.append((search, symbols, coded, kernel))
        return one(search, symbols, coded, kernel)

    monkeypatch.setattr(tensor, "_one_coder", kept)
    return seen


def test_the_streams_header_counts_against_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one coder is weighed against the context streams' sections and what their
    descriptors (a model, count and bytes for each stream) add to the header, which its
    own few params do not; a tensor left on the streams writes those descriptors."""
    seen = _weighed(monkeypatch)
    w = _matrix(128, 600)[torch.randperm(128, generator=torch.Generator().manual_seed(0))]
    off = _coded(w, False)
    streams = _model(off)
    header = tensor._descriptor_bytes(streams)
    assert header > 0
    assert tensor._descriptor_bytes({"kind": "trellis"}) == len(zlib.compress(b"[]", 9))
    _coded(w, True)
    coded = sum(len(off[1][k]) for k in ("symbols", "histogram") if k in off[1])
    assert seen[0][2] == coded + header


@pytest.mark.parametrize("shape", [(256, 256), (384, 384)])
def test_the_floor_skips_only_what_the_whole_coder_refuses(
        monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]) -> None:
    """`_floor_loses` claims that the whole coding would be refused: on every matrix where
    it skips, the coder's real plan is refused by `_one_coder`'s own check; its bins are
    the plan's exactly, and the plan's bits are never below the floor less its slack. Over
    rates from 1 to 7 bits a symbol, row scales spread over 1.5 decades in random order
    and heavy tails (the Exp-Golomb remainders): some skipped, some not, some kept by the
    coder. Rows ordered by scale are never judged by the floor."""
    seen = _weighed(monkeypatch)
    g = torch.Generator().manual_seed(5)
    rows, columns = shape
    spread = torch.logspace(-1, 0.5, rows)
    shuffled = spread[torch.randperm(rows, generator=g)][:, None]
    tensors = [torch.randn(rows, columns, generator=g) * shuffled,
               torch.distributions.StudentT(3.0).sample((rows, columns)) * shuffled]
    kept = []
    for w in tensors:
        for step in (1.0, 0.3, 0.1, 0.03, 0.01):
            kept.append("coder" in _model(_coded(w, True, step=step)))
    skipped = 0
    for search, symbols, coded, kernel in seen:
        assert search.groups == trellis.STATES and not kernel
        assert tensor._classes_interleaved(search)
        lo, hi = (int(v) for v in tensor.ans.span(symbols.buffer[:symbols.used]))
        counts, gate, _, _ = tensor._gate_floor(symbols, search, lo, hi)
        floor, bins = tensor._coder_floor(counts, lo, search.n_classes)
        blocks = tensor._WalkedBlocks(symbols, search, rows, columns)
        plan = trellis.coder_plan(blocks, search.n_classes, columns, *trellis.NEIGHBOURS[0])
        assert bins == plan.bins
        assert plan.bits >= floor * (1 - tensor.CODER_FLOOR_SLACK)
        if tensor._floor_loses(gate, bins, coded):
            skipped += 1
            assert plan.bits / 8 + 8 >= coded - tensor.CODER_BITS_PER_BIN * plan.bins / 8
    assert len(seen) == len(kept)
    assert 0 < skipped < len(seen) and any(kept)
    # rows in order of scale: the coder's halving counts follow the drift within a class
    # (2-5% under the floor, measured), so the floor is not trusted there
    seen.clear()
    ordered = torch.randn(rows, columns, generator=g) * spread[:, None]
    _coded(ordered, True, step=0.03)
    assert not tensor._classes_interleaved(seen[0][0])


def test_bits_match_the_stream() -> None:
    """`coder_bits` is the ideal length of what `coder_encode` writes (within a few
    words), and blocks give the stream of the whole (the encoder pushes a block at a
    time, the last first)."""
    rng = np.random.default_rng(1)
    symbols = np.round(rng.laplace(0, 1.5, (40, 300))).astype(np.int32)
    symbols[3, 4] = 5000  # an Exp-Golomb remainder
    classes = (np.arange(40) % 3).astype(np.uint8)
    whole = [(symbols, classes)]
    blocks = [(symbols[i : i + 7], classes[i : i + 7]) for i in range(0, 40, 7)]
    for caps in trellis.NEIGHBOURS:
        bits, bins = trellis.coder_bits(whole, 3, 300, *caps)
        in_blocks = trellis.coder_bits(blocks, 3, 300, *caps)
        assert in_blocks[1] == bins and in_blocks[0] == pytest.approx(bits, rel=1e-12)
        data = trellis.coder_encode(whole, 3, 300, *caps)
        assert data == trellis.coder_encode(blocks, 3, 300, *caps)  # pushed block by block
        assert bits / 8 <= len(data) <= bits / 8 + 12
        reader = trellis.CoderReader(data, -5000, 5000, classes, 3, 300, caps)
        got = [reader.rows(i, min(40, i + 9), 300) for i in range(0, 40, 9)]
        assert reader.exhausted()
        assert np.array_equal(np.concatenate([g[0] for g in got]), symbols)


def _drifting(mix: float, rows: int = 4096, columns: int = 256) -> torch.Tensor:
    """Rows whose statistics drift along the tensor, not with their scale: the first half
    Gaussian, the second Laplacian with a share ``1 − mix`` of exact zeros; row scales over
    a decade in random order (so the row classes interleave)."""
    g = torch.Generator().manual_seed(11)
    scale = torch.logspace(-0.5, 0.5, rows)[torch.randperm(rows, generator=g)][:, None]
    gaussian = torch.randn(rows, columns, generator=g)
    sign = torch.randint(0, 2, (rows, columns), generator=g) * 2 - 1
    laplace = torch.empty(rows, columns).exponential_(generator=g) * sign
    sparse = laplace * (torch.rand(rows, columns, generator=g) < mix) / mix ** 0.7
    return torch.where(torch.arange(rows)[:, None] < rows // 2, gaussian, sparse) * scale


def test_the_gate_takes_a_gain_along_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor whose coder gain is adaptation along its rows (`_drifting`): the whole
    tensor's floor says the coder cannot win, the runs' floor (`_gate_floor`) sees the
    drift, and the coder is taken, coded whole without a sample (smaller than the
    streams); without the drift, the spaced rows' sample would be asked. Where the coder
    loses (more zeros: the drift gains less than the streams' tables cost), the gate
    rejects it without a walk and the bytes are the streams'."""
    seen = _weighed(monkeypatch)
    verdicts: list[bool] = []
    sample_wins = tensor._sample_wins

    def spy(*args):
        verdicts.append(sample_wins(*args))
        return verdicts[-1]

    monkeypatch.setattr(tensor, "_sample_wins", spy)
    drifting = _drifting(0.8)
    on, off = _coded(drifting, True, step=0.03), _coded(drifting, False, step=0.03)
    assert "coder" in _model(on) and _size(on) < _size(off)
    search, symbols, coded, _ = seen[0]
    lo, hi = (int(v) for v in tensor.ans.span(symbols.buffer[:symbols.used]))
    counts, floor, bins, drifts = tensor._gate_floor(symbols, search, lo, hi)
    whole_floor, whole_bins = tensor._coder_floor(counts, lo, search.n_classes)
    assert drifts and whole_bins == bins and floor < whole_floor
    assert tensor._floor_loses(whole_floor, bins, coded)  # the whole's floor: turned down
    assert not tensor._floor_loses(floor, bins, coded)
    assert verdicts == []  # coded whole, no sample
    monkeypatch.setattr(tensor, "CODER_DRIFT", 1.0)  # no drift seen: the floor's margin
    monkeypatch.setattr(tensor, "CODER_FLOOR_CLEAR", 1.0)  # ... never clear: the sample
    monkeypatch.setattr(tensor, "CODER_FLOOR_SLACK", 1.0)  # ... never skipped
    _coded(drifting, True, step=0.03)
    assert len(verdicts) == 1
    monkeypatch.undo()
    calls = _planned(monkeypatch)
    loses = _drifting(0.9)
    assert _coded(loses, True, step=0.03) == _coded(loses, False, step=0.03)
    assert calls == []  # its runs' floor already says so: not walked
