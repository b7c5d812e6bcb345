"""Trellises of more states (format version 19): the tables, the search, the files."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.codec import rowblocks, tensor, trellis
from weightdna.codec.container import read_dna_file, write_dna_file
from weightdna.codec.entries import STATES_VERSION, TRELLIS_CODER_VERSION, file_version
from weightdna.codec.tensor import decode_tensor, encode_tensor
from weightdna.errors import CorruptFileError
from weightdna.weights import TensorInfo

DATA = Path(__file__).parent / "data"


def test_nncodec_table_is_ungerboecks_code() -> None:
    np.testing.assert_array_equal(trellis.dq_table(3, 0o4, 0o13, True), trellis.NEXT_STATE)


@pytest.mark.parametrize("states", trellis.STATE_COUNTS)
def test_tables_are_dependent_quantisers(states: int) -> None:
    """Each state goes to two states of one quantiser by the parity of its symbol, each
    state is reached from exactly two, and every state from state 0."""
    table = trellis.TABLES[states]
    assert table.shape == (states, 2) and table.min() >= 0 and table.max() < states
    assert np.all(table[:, 0] != table[:, 1])
    assert np.all((table[:, 0] & 1) == (table[:, 1] & 1))
    np.testing.assert_array_equal(np.bincount(table.reshape(-1), minlength=states), 2)
    seen, frontier = {0}, [0]
    while frontier:
        nxt = {int(t) for s in frontier for t in table[s]} - seen
        seen |= nxt
        frontier = list(nxt)
    assert seen == set(range(states))


def test_more_states_quantise_closer() -> None:
    """λ = 0 on values spread over many steps: the mean squared error falls with the
    number of states (the granular gain of a larger trellis)."""
    x = np.random.default_rng(3).uniform(-300, 300, size=(4, 5000))
    classes = np.zeros(4, np.uint8)
    errors = []
    for states in trellis.STATE_COUNTS:
        symbols = trellis.quantize(x, classes, 1, 8, np.zeros((8, 3)), lam=0.0, states=states)
        levels, _ = trellis.reconstruct(symbols, classes, 1, 8, states)
        errors.append(float(((x - levels) ** 2).mean()))
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    assert 10 * np.log10(errors[0] / errors[-1]) > 0.08


def _matrix(rows: int = 128, columns: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, columns, generator=g) * torch.linspace(0.2, 2, rows)[:, None]


def _coded(w: torch.Tensor, coder: bool, states: int | None = None,
           **request: object) -> tuple[dict, dict]:
    saved = tensor.TRELLIS_CODER, tensor.TRELLIS_STATES
    tensor.TRELLIS_CODER = coder
    if states is not None:
        tensor.TRELLIS_STATES = states
    try:
        return encode_tensor(w, name="t", quantizer="trellis", **request)
    finally:
        tensor.TRELLIS_CODER, tensor.TRELLIS_STATES = saved


@pytest.mark.parametrize("coder", [True, False])
def test_round_trip_with_more_states(coder: bool) -> None:
    """A tensor from TRELLIS_STATES_ELEMENTS elements is searched with TRELLIS_STATES: its
    model says so, the file is version 19, and the decoder restores what the encoder
    restored (the same error figures), closer than 8 states at about the same size."""
    w = _matrix()
    assert w.numel() >= tensor.TRELLIS_STATES_ELEMENTS
    entry, sections = _coded(w, coder, step=0.25)
    model = entry["params"]["model"]
    assert model["states"] == tensor.TRELLIS_STATES > trellis.STATES
    assert ("coder" in model) == coder
    assert file_version([entry]) == STATES_VERSION
    restored = decode_tensor(entry, sections, version=STATES_VERSION)
    error = float(((restored.double() - w.double()) ** 2).sum())
    assert error == pytest.approx(entry["stats"]["mse"] * w.numel(), rel=1e-9)
    eight = _coded(w, coder, states=trellis.STATES, step=0.25)
    assert "states" not in eight[0]["params"]["model"]
    assert file_version([eight[0]]) == (TRELLIS_CODER_VERSION if coder else 8)
    old = decode_tensor(*eight, version=TRELLIS_CODER_VERSION)
    old_error = float(((old.double() - w.double()) ** 2).sum())
    size = sum(len(b) for b in sections.values())
    old_size = sum(len(b) for b in eight[1].values())
    assert error < old_error and size < 1.02 * old_size


def test_small_tensors_keep_eight_states() -> None:
    entry, _ = _coded(_matrix(32, 64), True, step=0.25)
    assert "states" not in entry["params"]["model"]
    assert file_version([entry]) < STATES_VERSION


def test_a_file_of_more_states_round_trips(tmp_path: Path) -> None:
    coded = [_coded(_matrix(seed=1), True, step=0.25), _coded(_matrix(seed=2), False, step=0.3)]
    coded = [({**e, "name": f"w{i}"}, s) for i, (e, s) in enumerate(coded)]
    path = tmp_path / "s.dna"
    write_dna_file(path, [c[0] for c in coded], [c[1] for c in coded])
    f = read_dna_file(path)
    assert f.version == STATES_VERSION
    for e, s in coded:
        assert torch.equal(f.tensor(e["name"]), decode_tensor(e, s, version=STATES_VERSION))


def test_version_17_file_still_decodes() -> None:
    """tests/data/trellis_v17.dna, written by the code before version 19 (two trellis
    tensors of 2^15 elements, one under the one coder, one under its context streams):
    the same values, and coded again with 8 states, the same entries and bytes."""
    f = read_dna_file(DATA / "trellis_v17.dna")
    assert f.version == TRELLIS_CODER_VERSION
    want = {"coder": "7dbc9ba9e1ac63b5ca79546a098097395102aef59a4cad560c7f5d2194e877b4",
            "streams": "b7a9bc6ed0cf886c460129dd33906c452d7c7a243428a6c824a771149036c99e"}
    for name, digest in want.items():
        assert hashlib.sha256(f.tensor(name).numpy().tobytes()).hexdigest() == digest
    g = torch.Generator().manual_seed(19)
    a = torch.randn(128, 256, generator=g) * torch.linspace(0.2, 2, 128)[:, None]
    b = torch.randn(64, 512, generator=g).pow(3)
    entries = {e["name"]: e for e in f.entries}
    for name, w, coder, step in (("coder", a, True, 0.25), ("streams", b, False, 0.2)):
        entry, sections = _coded(w, coder, states=trellis.STATES, step=step)
        assert entry["params"] == entries[name]["params"]
        assert sections == f.read_sections(name)


@pytest.mark.parametrize("coder", [True, False])
@pytest.mark.parametrize("value", [8, 128, 7, 0, -32, 32.0, "32", True, None, [32]])
def test_malformed_states_are_refused(coder: bool, value: object) -> None:
    entry, sections = _coded(_matrix(), coder, step=0.25)
    bad = copy.deepcopy(entry)
    bad["params"]["model"]["states"] = value
    with pytest.raises(CorruptFileError, match="states"):
        decode_tensor(bad, sections, version=STATES_VERSION)


@pytest.mark.parametrize("coder", [True, False])
def test_states_before_version_19_are_refused(coder: bool) -> None:
    entry, sections = _coded(_matrix(), coder, step=0.25)
    with pytest.raises(CorruptFileError, match="version 19"):
        decode_tensor(entry, sections, version=STATES_VERSION - 1)


def test_row_blocks_with_more_states() -> None:
    """A tensor coded by row blocks (version 16's ``blocks``, as the row-block tasks code
    it) decodes as the whole tensor coded at once; blocks that name different states are
    refused."""
    w = _matrix()
    step = 0.25
    search = tensor._prepare_trellis(w, step, None)
    assert search.states == tensor.TRELLIS_STATES
    parts = [rowblocks.encode_rows(w[a:b], a, step, 0.0, None,
                                   rowblocks.search_args(search, a, b))
             for a, b in [(0, 40), (40, 96), (96, 128)]]
    info = TensorInfo("t", tuple(w.shape), "float32", "other", None, "t")
    (entry, sections), _ = rowblocks.coded(info, step, search, None, parts)
    blocks = entry["params"]["model"]["blocks"]
    assert len(blocks) == 3 and all(b["model"]["states"] == search.states for b in blocks)
    assert file_version([entry]) == STATES_VERSION
    whole = _coded(w, False, step=step)
    assert torch.equal(decode_tensor(entry, sections, version=STATES_VERSION),
                       decode_tensor(*whole, version=STATES_VERSION))
    bad = copy.deepcopy(entry)
    del bad["params"]["model"]["blocks"][1]["model"]["states"]
    with pytest.raises(CorruptFileError, match="states"):
        decode_tensor(bad, sections, version=STATES_VERSION)
