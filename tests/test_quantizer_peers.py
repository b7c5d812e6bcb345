"""The quantisers users pick today (GGUF block formats, bitsandbytes NF4/FP4) at their true
bytes, on a real MiniLM matrix: bits/weight where the format puts them, SNR plausible."""

from __future__ import annotations

import math

import pytest
import torch

from tests.support import MINILM, requires_minilm
from weightdna.baselines.quantizers import bnb_quantize, gguf_quantize

MATRIX = "encoder.layer.0.attention.self.query.weight"
BIAS = "encoder.layer.0.attention.self.query.bias"


def _tensor(name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    state = load_file(str(MINILM / "model.safetensors"))
    key = next(k for k in state if k.endswith(name))
    return state[key]


def _snr_db(original: torch.Tensor, restored: torch.Tensor) -> float:
    noise = float(((original.double() - restored.double()) ** 2).sum())
    return 10 * math.log10(float((original.double() ** 2).sum()) / noise)


# (format, bits/weight gguf writes: (2 + 2·min + 32·bits/8) bytes per 32, lowest SNR)
GGUF = [("Q8_0", 8.5, 35.0), ("Q5_1", 6.0, 25.0), ("Q5_0", 5.5, 24.0),
        ("Q4_1", 5.0, 19.0), ("Q4_0", 4.5, 19.0)]


@requires_minilm
@pytest.mark.parametrize(("qtype", "bpw", "floor"), GGUF)
def test_gguf_bits_and_snr(qtype: str, bpw: float, floor: float) -> None:
    pytest.importorskip("gguf")
    matrix = _tensor(MATRIX)
    restored, stored = gguf_quantize(matrix, qtype)
    assert restored.shape == matrix.shape and restored.dtype == torch.float32
    assert 8 * stored / matrix.numel() == pytest.approx(bpw)
    assert floor < _snr_db(matrix, restored) < floor + 15


@requires_minilm
def test_gguf_keeps_a_bias_in_its_dtype() -> None:
    pytest.importorskip("gguf")
    bias = _tensor(BIAS)
    restored, stored = gguf_quantize(bias, "Q4_0")
    assert stored == bias.numel() * bias.element_size()
    assert torch.equal(restored, bias.float())


@requires_minilm
@pytest.mark.parametrize(("kind", "floor"), [("nf4", 18.0), ("fp4", 16.0)])
@pytest.mark.parametrize("nested", [False, True])
def test_bitsandbytes_bits_and_snr(kind: str, floor: float, nested: bool) -> None:
    pytest.importorskip("bitsandbytes")
    matrix = _tensor(MATRIX)
    restored, stored = bnb_quantize(matrix, kind, nested=nested)
    assert restored.shape == matrix.shape
    bpw = 8 * stored / matrix.numel()
    # 4 bits + an fp32 absmax per 64 (4.5), or an 8-bit absmax per 64 (4.125 + its scales),
    # plus the state's code tables and JSON.
    low, high = (4.5, 4.6) if not nested else (4.125, 4.25)
    assert low < bpw < high
    assert floor < _snr_db(matrix, restored) < floor + 10


@requires_minilm
@pytest.mark.parametrize(("nbits", "bpw", "floor"),
                         [(8, 8.5, 40.0), (4, 4.5, 19.0), (3, 3.7083, 12.5), (2, 2.5, 5.5)])
def test_hqq_bits_and_snr(nbits: int, bpw: float, floor: float) -> None:
    pytest.importorskip("hqq")
    from weightdna.baselines.quantizers import hqq_quantize

    matrix = _tensor(MATRIX)
    restored, stored = hqq_quantize(matrix, nbits)
    assert restored.shape == matrix.shape
    # packed integers (3 bits: ten to an int32, padded) + fp16 scale and zero per 64
    assert 8 * stored / matrix.numel() == pytest.approx(bpw, abs=1e-3)
    assert floor < _snr_db(matrix, restored) < floor + 10


@requires_minilm
@pytest.mark.parametrize(("qtype", "bpw", "floor"),
                         [("int8", 8.0417, 35.0), ("int4", 4.25, 16.0), ("int2", 2.25, 3.0)])
def test_quanto_bits_and_snr(qtype: str, bpw: float, floor: float) -> None:
    pytest.importorskip("optimum.quanto")
    from weightdna.baselines.quantizers import quanto_quantize

    matrix = _tensor(MATRIX)
    restored, stored = quanto_quantize(matrix, qtype)
    assert restored.shape == matrix.shape and restored.dtype == torch.float32
    # int8: a byte per weight and an fp16 scale per row; int4/int2: packed, with an fp16
    # scale and shift per 128 weights; both with quanto's two fp16 activation scales
    assert 8 * stored / matrix.numel() == pytest.approx(bpw, abs=1e-3)
    assert floor < _snr_db(matrix, restored) < floor + 10
    bias = _tensor(BIAS)
    kept, kept_bytes = quanto_quantize(bias, qtype)
    assert torch.equal(kept, bias) and kept_bytes == 4 * bias.numel()


@pytest.mark.parametrize("nbits", [4, 2])
def test_hqq_pads_a_matrix_whose_groups_do_not_pack(nbits: int) -> None:
    pytest.importorskip("hqq")
    from weightdna.baselines.quantizers import hqq_quantize

    # 10 rows of 64: ten groups, which 2-bit packing (four per byte row) cannot split
    matrix = torch.randn(10, 64, generator=torch.Generator().manual_seed(0))
    restored, stored = hqq_quantize(matrix, nbits)
    assert restored.shape == matrix.shape
    padded_groups = {4: 10, 2: 12}[nbits]
    assert stored == padded_groups * 64 * nbits // 8 + 4 * padded_groups
    assert _snr_db(matrix, restored) > 3 * nbits - 4
