"""The adaptive symbol model (format version 15, `weightdna.codec.adaptive`): exact round
trips, the bytes pinned, damaged streams refused, the version gate, and "auto" choosing it
only where it is smaller."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from weightdna.codec import adaptive, decode_tensor, encode_tensor, entropy, tensor
from weightdna.codec.container import read_dna_file, write_dna_file
from weightdna.codec.entries import ADAPTIVE_VERSION, COMPACT_INDEX_VERSION, file_version
from weightdna.codec.quantize import MAX_SYMBOL
from weightdna.errors import CorruptFileError


def _laplace(scale: float, n: int, seed: int = 0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).laplace(0, scale, n)).astype(np.int32)


@pytest.mark.parametrize("scale", [0.2, 1.0, 6.0, 3000.0])
def test_round_trip_of_pieces(scale: float) -> None:
    x = _laplace(scale, 50_001)
    x[7], x[8] = MAX_SYMBOL, -MAX_SYMBOL  # the longest Exp-Golomb remainders
    pieces = [x[:1000], x[1000:30_000], x[30_000:]]
    if scale < 100:
        pieces[1] = pieces[1].astype(np.int16)  # pieces of any integer width
    bits, bins = adaptive.ideal_bits(pieces)
    data = adaptive.encode(pieces, bins)
    assert data == adaptive.encode([x])  # the pieces back to back are one stream
    assert bits / 8 <= len(data) <= bits / 8 + 12  # rANS within a few words of ideal
    out = np.empty(x.size, dtype=np.int32)
    assert adaptive.decode(data, x.size, -MAX_SYMBOL, MAX_SYMBOL, out) == 0
    assert np.array_equal(out, x)
    assert x.size <= adaptive.max_symbols(len(data))


def test_the_bytes_are_pinned() -> None:
    """The format: these symbols code to these bytes on every machine."""
    x = np.concatenate([_laplace(1.5, 4000, 1), np.arange(-40, 41, dtype=np.int32)])
    data = adaptive.encode([x])
    assert len(data) == 1660
    assert hashlib.sha256(data).hexdigest()[:16] == "e909cf39537123b1"


def test_a_long_run_of_zeros_stays_within_the_bound() -> None:
    zeros = np.zeros(200_000, dtype=np.int32)
    data = adaptive.encode([zeros])
    assert 200_000 <= adaptive.max_symbols(len(data)) < 40 * 200_000
    out = np.empty(zeros.size, dtype=np.int32)
    assert adaptive.decode(data, zeros.size, 0, 1, out) == 0 and not out.any()


def _model(lo: int, hi: int) -> dict:
    return {"kind": "adaptive", "min": lo, "max": hi, "mean": 0.0, "scale": 0.0}


def test_damaged_streams_are_refused() -> None:
    x = _laplace(2.0, 20_000, 2)
    lo, hi = int(x.min()), int(x.max())
    data = adaptive.encode([x])
    def decode(model: dict, sections: dict, count: int) -> np.ndarray:
        return entropy.decode_symbols(model, sections, count, version=ADAPTIVE_VERSION)

    assert np.array_equal(decode(_model(lo, hi), {"symbols": data}, x.size), x)
    cases = {
        "one symbol fewer": (data, x.size - 1),
        "one symbol more": (data, x.size + 1),
        "a word more": (data + b"\1\0\0\0", x.size),
        "a word less": (data[4:], x.size),
        "not whole words": (data + b"\0", x.size),
        "too short": (data[-4:], 1),
        "a count the bytes cannot hold": (data, adaptive.max_symbols(len(data)) + 1),
    }
    for what, (blob, count) in cases.items():
        with pytest.raises(CorruptFileError):
            decode(_model(lo, hi), {"symbols": blob}, count)
        assert what
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 4
    with pytest.raises(CorruptFileError):
        decode(_model(lo, hi), {"symbols": bytes(flipped)}, x.size)
    with pytest.raises(CorruptFileError, match="outside the model's range"):
        decode(_model(lo + 1, hi), {"symbols": data}, x.size)
    for bad in ({"mean": 0.5}, {"scale": 1.0}, {"kind": "adaptivE"}):
        with pytest.raises(CorruptFileError):
            decode({**_model(lo, hi), **bad}, {"symbols": data}, x.size)


def test_auto_takes_the_smaller_model() -> None:
    """"auto" with AUTO_ADAPTIVE codes each stream under the adaptive model only where that
    is smaller than the static model it would choose (within the estimates' error)."""
    rng = np.random.default_rng(4)
    streams = {
        "small, heavy-tailed": np.round(rng.standard_t(2, 3000) * 3).astype(np.int32),
        "drifting scale": np.round(rng.laplace(0, np.linspace(0.3, 4, 40_000))).astype(
            np.int32),
        "large gaussian": np.round(rng.normal(0, 40, 100_000)).astype(np.int32),
    }
    chose = {}
    for what, x in streams.items():
        sizes = {}
        for kind in entropy.STORED_KINDS:
            _, sections = entropy.encode_symbols(x, kind)
            sizes[kind] = sum(len(b) for b in sections.values())
        model, sections = _auto(x)
        chose[what] = model["kind"]
        assert sum(len(b) for b in sections.values()) <= min(sizes.values()) * 1.01 + 16, what
        restored = entropy.decode_symbols(model, sections, x.size, version=ADAPTIVE_VERSION)
        assert np.array_equal(restored, x)
    assert chose["drifting scale"] == "adaptive"
    assert chose["large gaussian"] != "adaptive"
    assert not entropy.AUTO_ADAPTIVE  # the default: the static models only
    assert entropy.encode_symbols(streams["drifting scale"])[0]["kind"] != "adaptive"


def _auto(x: np.ndarray) -> tuple[dict, dict]:
    """`encode_symbols` "auto" with the adaptive model weighed too."""
    saved = entropy.AUTO_ADAPTIVE
    entropy.AUTO_ADAPTIVE = True
    try:
        return entropy.encode_symbols(x)
    finally:
        entropy.AUTO_ADAPTIVE = saved


def test_version_gate(tmp_path, monkeypatch) -> None:
    """A file holding an adaptive stream is written as version 15; a file of an earlier
    version that holds one is refused; a trellis tensor's streams take it too (with the
    one coder of version 17 off)."""
    monkeypatch.setattr(tensor, "TRELLIS_CODER", False)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 96, generator=g) * torch.linspace(0.1, 2, 64)[:, None]
    coded = encode_tensor(w, name="w", step=0.05, model="adaptive")
    assert coded[0]["params"]["model"]["kind"] == "adaptive"
    assert file_version([coded[0]]) == ADAPTIVE_VERSION
    assert torch.equal(decode_tensor(*coded, version=ADAPTIVE_VERSION),
                       decode_tensor(*coded))
    with pytest.raises(CorruptFileError, match="new in version 15"):
        decode_tensor(*coded, version=COMPACT_INDEX_VERSION)
    saved = entropy.AUTO_ADAPTIVE
    entropy.AUTO_ADAPTIVE = True
    try:
        trellis = encode_tensor(w, name="t", step=0.3, quantizer="trellis")
    finally:
        entropy.AUTO_ADAPTIVE = saved
    kinds = {d["model"]["kind"] for d in trellis[0]["params"]["model"]["streams"]}
    assert "adaptive" in kinds  # small streams of a small tensor: no table to store
    with pytest.raises(CorruptFileError, match="new in version 15"):
        decode_tensor(*trellis, version=COMPACT_INDEX_VERSION)
    path = tmp_path / "a.dna"
    write_dna_file(path, [coded[0], trellis[0]], [coded[1], trellis[1]])
    dna = read_dna_file(path)
    assert dna.version == ADAPTIVE_VERSION
    assert torch.equal(dna.tensor("w"), decode_tensor(*coded))
    assert torch.equal(dna.tensor("t"), decode_tensor(*trellis))
    static = encode_tensor(w, name="s", step=0.05, model="laplace")
    assert file_version([static[0]]) < ADAPTIVE_VERSION
