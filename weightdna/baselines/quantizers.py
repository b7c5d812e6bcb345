"""The quantisers users pick today, as peers at their true file bytes.

Each peer takes a float tensor and returns ``(restored float32 tensor, bytes)``, the bytes
being what the format stores for that tensor: packed integers, block scales, zero points
and per-tensor metadata. Each is an optional dependency; `available` says which are
installed and callers skip the others.

* GGUF (gguf-py's own quantisers, ``gguf.quants.quantize``): Q8_0, Q5_1, Q5_0, Q4_1,
  Q4_0, blocks of 32 along each row, each block with its fp16 scale (and fp16 minimum
  for the ``_1`` types): 8.5, 6.0, 5.5, 5.0 and 4.5 bits/weight. As llama.cpp's
  ``convert_hf_to_gguf.py`` does, a tensor that is not a matrix (biases, norms) is kept
  in its source dtype (counted at its itemsize), and a matrix whose rows are not a
  multiple of 32 is stored as F16. Every other matrix (token, position and token-type
  embeddings included) gets the chosen type: llama.cpp's own per-tensor exceptions and
  llama-quantize's mixed types are not reproduced. The file's header and metadata are
  not counted.
* bitsandbytes NF4/FP4 (``bitsandbytes.functional.quantize_4bit`` on CPU), blocksize 64:
  the packed 4-bit data plus every tensor ``QuantState.as_dict(packed=True)`` adds when
  saved (absmax per block, the 16-value code table, with nested quantisation the 8-bit
  absmax, its fp32 second-level scales, offset and 256-value table, and the JSON of the
  state). Non-matrices are kept in their source dtype, as bitsandbytes' Linear4bit only
  quantises weights.
* HQQ (``hqq.core.quantize.Quantizer``, calibration-free half-quadratic fitting of each
  group's scale and zero) at 8/4/3/2 bits, group 64 along rows (``axis=1``, HQQLinear's
  default), ``optimize=True``, ``device='cpu'``: the packed integers (3 bits: ten to an
  int32, with hqq's padding) plus an fp16 scale and an fp16 zero per group, as HQQLinear
  stores them with its default fp16 compute dtype; restored in fp16 as HQQLinear does.
  Non-matrices are kept in their source dtype.
* optimum-quanto (``optimum.quanto.quantize`` then ``freeze`` on a float16
  ``torch.nn.Linear`` holding the tensor as out × in; a conv kernel as out × in·kh·kw):
  int8 with an fp16 scale per output row; int4 and int2 in groups of 128 along the rows
  (quanto's default; rows whose length is not a multiple of 128 become one group) with an
  fp16 scale and an fp16 shift per group. The bytes are the frozen module's state dict
  (the packed data, scales, shifts and its two scalar activation scales), as
  ``safetensors`` would store it; restored by ``dequantize`` in float16. Non-matrices are
  kept in their source dtype.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from weightdna.baselines.methods import QUANTIZER_FAMILIES

GGUF_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
BNB_TYPES = ("nf4", "fp4")
BNB_BLOCKSIZE = 64
HQQ_BITS = (8, 4, 3, 2)
HQQ_GROUP = 64
QUANTO_TYPES = ("int8", "int4", "int2")


def available(package: str) -> bool:
    """Whether the optional ``package`` ("gguf", "bitsandbytes", "hqq", "optimum.quanto")
    is installed."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a half-installed or blocked package
        return False


def _kept(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A tensor stored as it is, in its source dtype."""
    return tensor.detach().to(torch.float32).clone(), tensor.numel() * tensor.element_size()


def gguf_quantize(tensor: torch.Tensor, qtype: str) -> tuple[torch.Tensor, int]:
    """``tensor`` through gguf-py's ``qtype`` (one of `GGUF_TYPES`): restored, bytes."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    if tensor.dim() < 2:
        return _kept(tensor)
    kind = GGMLQuantizationType[qtype]
    block, _ = GGML_QUANT_SIZES[kind]
    data = tensor.detach().to(torch.float32).numpy()
    if data.shape[-1] % block:
        half = data.astype(np.float16)
        return torch.from_numpy(half.astype(np.float32)), half.nbytes
    packed = quantize(data, kind)  # uint8 blocks: what a .gguf file holds for the tensor
    restored = dequantize(packed, kind).reshape(data.shape)
    return torch.from_numpy(np.ascontiguousarray(restored, dtype=np.float32)), packed.nbytes


def bnb_quantize(tensor: torch.Tensor, quant_type: str, nested: bool = False,
                 blocksize: int = BNB_BLOCKSIZE) -> tuple[torch.Tensor, int]:
    """``tensor`` through bitsandbytes' 4-bit ``quant_type`` (nf4, fp4) on CPU."""
    import bitsandbytes.functional as bnbf

    if tensor.dim() < 2:
        return _kept(tensor)
    data = tensor.detach().to(torch.float32).contiguous()
    packed, state = bnbf.quantize_4bit(data, blocksize=blocksize, quant_type=quant_type,
                                       compress_statistics=nested)
    restored = bnbf.dequantize_4bit(packed, state).reshape(data.shape).to(torch.float32)
    stored = packed.numel() * packed.element_size()
    for value in state.as_dict(packed=True).values():
        if isinstance(value, torch.Tensor):
            stored += value.numel() * value.element_size()
    return restored, stored


def hqq_quantize(tensor: torch.Tensor, nbits: int,
                 group_size: int = HQQ_GROUP) -> tuple[torch.Tensor, int]:
    """``tensor`` through HQQ at ``nbits`` (one of `HQQ_BITS`), groups of ``group_size``."""
    from hqq.core.quantize import Quantizer

    if tensor.dim() < 2:
        return _kept(tensor)
    data = tensor.detach().to(torch.float32).contiguous()
    if data.shape[-1] % group_size:
        half = data.to(torch.float16)
        return half.to(torch.float32), half.numel() * 2
    rows = data.shape[0]
    # hqq packs whole groups into one storage row (2 bits: four groups to a uint8 row,
    # 4 bits: two) and fails on a remainder (3 bits, ten to an int32, it pads itself): pad
    # with zero rows, which are stored (and counted) and cropped when restored.
    per_word = {4: 2, 2: 4, 1: 8}.get(nbits, 1)
    while data.numel() // group_size % per_word:
        data = torch.cat([data, data.new_zeros(1, data.shape[1])])
    packed, meta = Quantizer.quantize(data, nbits=nbits, group_size=group_size, axis=1,
                                      optimize=True, device="cpu")
    meta["scale"], meta["zero"] = meta["scale"].half(), meta["zero"].half()
    meta["compute_dtype"] = torch.float16
    restored = Quantizer.dequantize(packed, meta).reshape(data.shape)[:rows]
    restored = restored.to(torch.float32).reshape(tensor.shape)
    stored = packed.numel() * packed.element_size()
    stored += 2 * (meta["scale"].numel() + meta["zero"].numel())
    return restored, stored


def quanto_quantize(tensor: torch.Tensor, qtype: str) -> tuple[torch.Tensor, int]:
    """``tensor`` through optimum-quanto's weight type ``qtype`` (one of `QUANTO_TYPES`)."""
    import optimum.quanto as quanto

    if tensor.dim() < 2:
        return _kept(tensor)
    data = tensor.detach().reshape(tensor.shape[0], -1).to(torch.float16)
    layer = torch.nn.Linear(data.shape[1], data.shape[0], bias=False, dtype=torch.float16)
    with torch.no_grad():
        layer.weight.copy_(data)
    module = torch.nn.Sequential(layer)
    quanto.quantize(module, weights=getattr(quanto, f"q{qtype}"))
    quanto.freeze(module)
    stored = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    with torch.no_grad():
        restored = module[0].weight.dequantize().to(torch.float32).reshape(tensor.shape)
    return restored.contiguous(), stored


def family_peers(family: str) -> dict[str, object]:
    """{setting name: function(tensor) -> (restored, bytes)} of one family of
    `weightdna.baselines.methods.QUANTIZER_FAMILIES`; empty when its package is not
    installed. Each name is the family, a dash and the setting."""
    if not available(QUANTIZER_FAMILIES[family]):
        return {}
    if family == "gguf":
        return {f"gguf-{q}": lambda t, q=q: gguf_quantize(t, q) for q in GGUF_TYPES}
    if family == "bnb":
        found: dict[str, object] = {}
        for q in BNB_TYPES:
            found[f"bnb-{q}"] = lambda t, q=q: bnb_quantize(t, q)
            found[f"bnb-{q}-nested"] = lambda t, q=q: bnb_quantize(t, q, True)
        return found
    if family == "hqq":
        return {f"hqq-{b}bit": lambda t, b=b: hqq_quantize(t, b) for b in HQQ_BITS}
    return {f"quanto-{q}": lambda t, q=q: quanto_quantize(t, q) for q in QUANTO_TYPES}


def peers() -> dict[str, object]:
    """Every installed family's settings (`family_peers`), by name."""
    return {name: quantize for family in QUANTIZER_FAMILIES
            for name, quantize in family_peers(family).items()}
