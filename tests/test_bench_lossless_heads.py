"""bench/lossless_heads.py's tANS and Huffman head coders (issue 15's measurement): exact
for every bit pattern and size, the tANS coder the size of version 10's rANS, a damaged
stream refused or decoded to other values, never read past."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import minilm_tensor, with_special_values

from weightdna.codec.dtypes import tensor_bytes
from weightdna.codec.lanes import encode_lanes
from weightdna.errors import CorruptFileError

DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@pytest.fixture(scope="module")
def heads():  # noqa: ANN201
    path = Path(__file__).resolve().parents[1] / "bench" / "lossless_heads.py"
    spec = importlib.util.spec_from_file_location("lossless_heads", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lossless_heads"] = module
    spec.loader.exec_module(module)
    return module


def _raw(t: torch.Tensor) -> np.ndarray:
    return np.frombuffer(tensor_bytes(t), np.uint8)


@pytest.mark.slow  # a decoder compiled per layout: bfloat16's alone (the others share the code)
@pytest.mark.parametrize("dtype", [torch.bfloat16])
@pytest.mark.parametrize("coder", ["encode_tans", "encode_huffman"])
def test_every_bit_pattern_and_size_comes_back(heads, dtype: torch.dtype,  # noqa: ANN001
                                               coder: str) -> None:
    special = with_special_values(minilm_tensor().reshape(-1)[:3000].to(dtype).clone())
    name = DTYPES[dtype]
    for n in [1, 2, 3, 5, 8, 63, 1023, 1024, 1025, 3000]:
        for block in (1024, None):
            params, sections = getattr(heads, coder)(_raw(special[:n]), name, block=block)
            back = heads.decode_fast(params, sections, name, n, "t")
            assert back.tobytes() == tensor_bytes(special[:n])
    bits = torch.from_numpy(np.random.default_rng(0).permutation(1 << 16).astype(np.int16))
    if dtype != torch.float32:  # every 16-bit pattern: fewer head bits (MAX_RANKS)
        t = bits.view(dtype)
        params, sections = getattr(heads, coder)(_raw(t), name, block=1 << 12)
        assert heads.decode_fast(params, sections, name, t.numel(), "t").tobytes() == \
            tensor_bytes(t)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_tans_is_the_size_of_rans_and_huffman_larger(heads, dtype: torch.dtype) -> None:  # noqa: ANN001
    t = minilm_tensor().to(dtype)
    raw = _raw(t)
    size = {coder: sum(map(len, encode(raw, DTYPES[dtype])[1].values()))
            for coder, encode in [("rans", encode_lanes), ("tans", heads.encode_tans),
                                  ("huffman", heads.encode_huffman)]}
    assert abs(size["tans"] - size["rans"]) < 0.001 * size["rans"]
    assert size["huffman"] > size["tans"]


@pytest.mark.parametrize("coder", ["encode_tans", "encode_huffman"])
def test_flipped_bits_are_refused_or_decode_to_other_values(heads, coder: str) -> None:  # noqa: ANN001
    t = minilm_tensor().reshape(-1)[:5000].to(torch.bfloat16)
    params, sections = getattr(heads, coder)(_raw(t), "bfloat16", block=1024)
    words = bytearray(sections["words"])
    rng = np.random.default_rng(1)
    refused = 0
    for _ in range(40):
        forged = bytearray(words)
        forged[rng.integers(len(forged))] ^= 1 << int(rng.integers(8))
        try:
            back = heads.decode_fast(params, {**sections, "words": bytes(forged)},
                                     "bfloat16", t.numel(), "t")
        except CorruptFileError:
            refused += 1
            continue
        assert back.tobytes() != tensor_bytes(t)
    assert refused > 0
