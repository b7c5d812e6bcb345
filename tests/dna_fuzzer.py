"""A structure-aware fuzzer of the .dna reader, shared by `tests/test_codec_fuzz.py` (a
bounded CI run) and `bench/fuzz.py` (a long run over worker processes).

Each case takes a valid seed file and changes it where the reader's checks live, keeping
every checksum correct so that those checks, not the CRCs, must catch it:

- header mutations: a field replaced, deleted or added (values near the original and
  absurd ones: 400-digit integers, ``1e400``, nesting 100,000 deep, hostile names), the
  JSON re-deflated with the preset dictionary and the prefix rewritten;
- section mutations: bytes flipped, cut, added, replaced, a stream emptied, a zstd frame
  preceded by a skippable frame or followed by bytes or a second frame; every section
  re-laid out with its length, offset and CRC-32 fixed;
- both at once, and the version field of the prefix changed.

The oracle (`run_case`) reads the file with a memory limit and decodes every tensor, then
sorts the case into one of:

- ``refused``: a `WeightDNAError` with a message;
- ``unchanged``: decoded, every tensor bit-identical to the seed's;
- ``changed``: decoded to other values, where the format cannot tell (a step, a model's
  parameters, a symbol in a stream), and every invariant below holds;
- failures: ``crash`` (any other exception), ``silent`` (decoded although an invariant
  fails), ``hang`` and ``over-allocation`` (judged by the caller: time, peak RSS).

The invariants of a decoded file, checked independently of the reader's own checks:

1. every ANS stream is exactly the coding of the symbols decoded from it: re-encoded under
   the file's model from the version's starting state (`entropy.SENTINEL`, or an empty
   coder before version 5), they give back the stream's bytes — so nothing was read past
   its end, no bytes were left over and the count is one the bytes hold;
2. every zstd section is one frame (zstd's magic, not a skippable frame) and nothing after
   it (zstandard's own decompressor reaches the frame's end with no data unused);
3. a mutation that cannot change values (``stats``, ``metadata``) leaves them identical.

Before version 5 (invariant 1 as those versions coded) a stream's trailing run of its
model's first symbol took no bits, so a count too large cannot be told from that run:
such files can only be counted, as ``changed``, in their own rows (docs/FORMAT.md).
"""

from __future__ import annotations

import copy
import ctypes
import functools
import json
import math
import os
import random
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zstandard

from weightdna.codec import (
    adaptive,
    decode_tensor,
    encode_tensor,
    entropy,
    factored,
    floatfields,
    lanes,
    lossless,
    read_dna_file,
    reference,
    rowblocks,
    tensor,
    trellis,
)
from weightdna.codec.bundle import stored_entries
from weightdna.codec.container import _packed, header_block
from weightdna.codec.entries import (
    ADAPTIVE_VERSION,
    COMPACT_INDEX_VERSION,
    FILE_CODING_VERSION,
    GRID_VERSION,
    NAME_PREFIXES_VERSION,
    PPMD_VERSION,
    READABLE_VERSIONS,
    ROW_STREAMS_VERSION,
    STATES_VERSION,
    TRELLIS_CODER_VERSION,
    TRELLIS_COLUMN_VERSION,
    VERSION,
)
from weightdna.codec.prediction import dna_prediction, lowrank_prediction
from weightdna.codec.quantize import row_shape
from weightdna.codec.roles import round_mantissa
from weightdna.codec.rowsteps import decode_grid
from weightdna.codec.tensor import (
    _prepare_trellis,
    factored_prediction,
    reference_prediction,
    with_columns,
)
from weightdna.codec.zstdframes import ZSTD_MAGIC, compress_bytes
from weightdna.dna import FitConfig
from weightdna.errors import WeightDNAError
from weightdna.experiments.structured import gabor_bank, tied_pair
from weightdna.weights import TensorInfo

MEMORY_LIMIT = 48 << 20
# Peak RSS a case may add beyond the memory limit: the interpreter's own noise (small
# allocations, numba and torch caches), far below any real over-allocation.
RSS_SLACK = 24 << 20


# ---- seeds -------------------------------------------------------------------------------


def sample_tensors() -> list[tuple[str, torch.Tensor, dict]]:
    """Small tensors covering every representation, symbol model and section kind."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, 20, generator=g) * 0.05
    with_nan = torch.randn(6, 7, generator=g, dtype=torch.float64).to(torch.bfloat16)
    with_nan[1, 2], with_nan[4, 0] = math.nan, -math.inf
    return [
        ("rows.categorical", w, {"bits": 4, "model": "categorical"}),
        ("laplace", w.half(), {"max_abs_error": 0.01, "model": "laplace"}),
        ("gaussian", w.double(), {"step": 0.02, "model": "gaussian"}),
        ("nonfinite", with_nan, {"max_abs_error": 0.05}),
        ("raw.float", w, {"lossless": True}),
        ("raw.int", torch.arange(-40, 40, dtype=torch.int16), {"lossless": True}),
        ("raw.bool", torch.tensor([True, False, True]), {"lossless": True}),
        ("empty", torch.zeros(0, 3), {"step": 0.1}),
        ("scalar", torch.tensor(1.25), {"max_abs_error": 0.001}),
        ("constant", torch.zeros(9, 4), {"step": 0.1}),
        ("lowrank", w, {"step": 0.01, "prediction": "lowrank"}),
        ("dna", w, {"bits": 3, "prediction": "dna"}),
        ("trellis.nonfinite", with_nan, {"step": 0.05, "quantizer": "trellis"}),
    ]


def fields_tensors() -> list[tuple[str, torch.Tensor, dict]]:
    """Float tensors stored exactly by their bit fields (format version 7): each dtype,
    non-finite values, fp32 values that are exact fp16 values (the zero bits), raw tops."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(40, 64, generator=g) * torch.linspace(0.01, 1, 40)[:, None]
    w[3, :5] = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e-40])
    exact16 = w.clone()
    exact16[:30] = exact16[:30].half().float()
    return [
        ("fields.f32", w, {"lossless": True}),
        ("fields.bf16", w.bfloat16(), {"lossless": True}),
        ("fields.f16", w.half(), {"lossless": True}),
        ("fields.zero_bits", exact16, {"lossless": True}),
        ("fields.raw_tops", torch.randn(70, generator=g), {"lossless": True}),
    ]


def lanes_tensors() -> list[tuple[str, torch.Tensor, dict]]:
    """The same floats stored exactly in lanes (format version 10, the ``--lossless``
    path)."""
    return [(name.replace("fields.", "lanes."), t, {**request, "fast": True})
            for name, t, request in fields_tensors()]


def version8_tensors() -> list[tuple[str, torch.Tensor, dict]]:
    """Format version 8's representations: conv kernels coded as ``factored+residual``
    (whole windows, and windows of rank 2: a q factor; the residual by the trellis too),
    and a tensor coded as a ``reference+residual`` to an earlier one (scaled, its rows
    reordered: an order section)."""
    bank = torch.from_numpy(gabor_bank(8, 3, 5, seed=2))
    pair = tied_pair((24, 48), scale=-2.0, permuted=True, noise=0.01)
    return [
        ("ref.first", torch.from_numpy(pair["first.weight"]), {"step": 0.05}),
        ("ref.second", torch.from_numpy(pair["second.weight"]),
         {"step": 0.05, "prediction": "reference", "of": "ref.first"}),
        ("factored.whole", bank, {"step": 0.02, "prediction": "factored", "ranks": (1, 0)}),
        ("factored.rank2", bank, {"step": 0.01, "prediction": "factored", "ranks": (1, 2),
                                  "quantizer": "trellis"}),
    ]


def version9_coded() -> list[tuple[dict, dict]]:
    """Format version 9: quantized tensors with per-column factors (a ``columns`` section),
    scalar and trellis (the trellis then decodes through the generic path)."""
    g = torch.Generator().manual_seed(3)
    coded = encode_all([("columns.scalar", torch.randn(16, 24, generator=g), {"step": 0.1}),
                        ("columns.trellis", torch.randn(12, 40, generator=g),
                         {"bits": 3, "quantizer": "trellis"})])
    return [with_columns(c, np.exp2(np.arange(n) % 9 / 4 - 1))
            for c, n in zip(coded, (24, 40), strict=True)]


def grid_tensors() -> list[tuple[str, torch.Tensor, dict]]:
    """Format version GRID_VERSION: per-row steps on a grid, scalar and trellis."""
    g = torch.Generator().manual_seed(4)
    scale = torch.logspace(-2, 0, 24)[:, None]
    return [("grid.scalar", torch.randn(24, 16, generator=g) * scale, {"bits": 4}),
            ("grid.trellis", torch.randn(24, 40, generator=g) * scale,
             {"bits": 3, "quantizer": "trellis"})]


def float32_steps(coded: tuple[dict, dict]) -> tuple[dict, dict]:
    """An encoded tensor with its per-row steps on a grid stored as float32 instead, as
    versions before GRID_VERSION store them (the same symbols)."""
    entry, sections = copy.deepcopy(coded[0]), dict(coded[1])
    params = entry["params"]
    for node in (params, params.get("coefficients"), params.get("residual")):
        if isinstance(node, dict) and "grid" in node:
            steps = decode_grid(node.pop("grid"), sections["steps"], node["rows"], "seed")
            sections["steps"] = steps.astype("<f4").tobytes()
    return entry, sections


def large_trellis() -> tuple[str, torch.Tensor, dict]:
    """2^16 elements in 128 rows: 8 state groups and two row classes (a `classes` section)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(128, 512, generator=g) * torch.linspace(0.1, 2, 128)[:, None]
    return "trellis.classes", t, {"step": 0.3, "quantizer": "trellis"}


def encode_all(tensors: list[tuple[str, torch.Tensor, dict]]) -> list[tuple[dict, dict]]:
    """Each tensor encoded: (entry, sections)."""
    out: list[tuple[dict, dict]] = []
    for name, t, request in tensors:
        request = dict(request)
        kind = request.pop("prediction", None)
        if kind == "reference":  # to an earlier tensor of the list, as decoded
            other = request.pop("of")
            coded = next(c for c in out if c[0]["name"] == other)
            restored = decode_tensor(*coded)
            fitted = reference.fit(restored.numpy(), t.numpy())
            request["prediction"] = reference_prediction(other, restored, *fitted)
        if kind == "lowrank":
            request["prediction"] = lowrank_prediction(t.double().numpy(), 2)
        elif kind == "factored":
            values = t.double().numpy()
            request["prediction"] = factored_prediction(
                values, factored.factorise(values, *request.pop("ranks")), request["step"],
                name)
        elif kind == "dna":
            request["prediction"] = dna_prediction(
                t.double().numpy(), FitConfig(width=4, depth=2, steps=3, device="cpu"))
        out.append(encode_tensor(t, name=name, **request))
    return out


@dataclass
class Seed:
    """A valid file, what it is made of, and what it decodes to."""

    name: str
    version: int
    header: dict
    blobs: dict[tuple[int, str], bytes]  # (tensor index, role) → section bytes
    order: list[tuple[int, str]]  # sections in file order
    reference: list[torch.Tensor] = field(default_factory=list)
    files: list[bytes] = field(default_factory=list)  # the stored files' contents

    @functools.cached_property
    def header_text(self) -> str:
        return json.dumps(self.header)

    @property
    def data(self) -> bytes:
        return build(self.header, self.blobs, self.order, self.version)


def lay_out(header: object, blobs: dict[tuple[int, str], bytes],
            order: list[tuple[int, str]]) -> None:
    """Rewrite ``header``'s section offsets, lengths and CRC-32s (where it still has them)
    to lay out ``blobs`` in ``order``; with a compact index (``checksums``, version 13) a
    tensor's sections get their lengths and each group the CRC-32 of its tensors' bytes."""
    if not (isinstance(header, dict) and isinstance(header.get("tensors"), list)):
        return
    files = header.get("files")
    files = files if isinstance(files, list) else []
    count = len(header["tensors"])
    compact = isinstance(header.get("checksums"), list)
    offset = 0
    held: dict[int, bytes] = {}  # a compact index's tensor → its sections' bytes
    for i, role in order:
        entry = (header["tensors"][i] if i < count
                 else files[i - count] if i - count < len(files) else None)
        blob = blobs[(i, role)]
        if isinstance(entry, dict) and isinstance(entry.get("sections"), dict) \
                and role in entry["sections"]:
            if compact and i < count:
                entry["sections"][role] = len(blob)
            else:
                entry["sections"][role] = [offset, len(blob), zlib.crc32(blob)]
        if compact and i < count:
            held[i] = held.get(i, b"") + blob
        offset += len(blob)
    if compact:
        first = 0
        for group in header["checksums"]:
            if isinstance(group, list) and len(group) == 2 and isinstance(group[0], int):
                # A mutated count may be huge: only the tensors there are hold bytes.
                group[1] = zlib.crc32(b"".join(held.get(i, b"") for i in range(
                    first, min(first + max(group[0], 0), count))))
                first += max(group[0], 0)


def build(header: object, blobs: dict[tuple[int, str], bytes], order: list[tuple[int, str]],
          version: int, fix_sections: bool = True) -> bytes:
    """A file: ``header`` (laid out first, `lay_out`, unless ``fix_sections`` is False)
    deflated as ``version`` writes it, then the blobs in ``order``."""
    if fix_sections:
        lay_out(header, blobs, order)
    return header_block(dumps(header), version) + b"".join(blobs[k] for k in order)


class Raw:
    """JSON text put into a header as it is (numbers no float holds, deep nesting)."""

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(value: object) -> bytes:
    """JSON of ``value`` with every `Raw` written verbatim; ASCII, so lone surrogates are
    written as ``\\ud800`` escapes (and come back as such from the parser)."""
    try:  # most headers hold no Raw: no walk needed
        return json.dumps(value, separators=(",", ":")).encode("utf-8")
    except TypeError:
        pass
    raws: list[str] = []

    def swap(node: object) -> object:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(value), separators=(",", ":"))
    for k, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00RAW{k}\x00"), raw)
    return text.encode("utf-8")


def _seed(name: str, encoded: list[tuple[dict, dict]], version: int,
          files: list[tuple[dict, bytes]] = (), groups: list[int] | None = None,
          front: bool = False) -> Seed:
    """A seed of tensors and, from version 6, stored files (each (entry, its frame): their
    blobs keyed by their index after the tensors'); with ``groups`` (version 13) a compact
    index of checksum groups of that many tensors each; with ``front`` (version 14) the
    names front-coded (``prefixes``)."""
    header = {"metadata": {"producer": "fuzz", "source_metadata": '{"format": "pt"}'},
              "tensors": [copy.deepcopy(e) for e, _ in encoded]}
    if front:
        previous, header["prefixes"] = "", []
        for entry in header["tensors"]:
            k = len(os.path.commonprefix([previous, entry["name"]]))
            header["prefixes"].append(k)
            previous, entry["name"] = entry["name"], entry["name"][k:]
    if groups is not None:
        header["checksums"] = [[count, 0] for count in groups]
    blobs = {}
    order = []
    for i, (_, sections) in enumerate(encoded):
        for role, blob in sections.items():
            blobs[(i, role)] = bytes(blob)
            order.append((i, role))
        header["tensors"][i]["sections"] = {role: [0, 0, 0] for role in sections}
    if files:
        header["files"] = [{**copy.deepcopy(e), "sections": {"data": [0, 0, 0]}}
                           for e, _ in files]
        for j, (_, frame) in enumerate(files):
            blobs[(len(encoded) + j, "data")] = bytes(frame)
            order.append((len(encoded) + j, "data"))
    seed = Seed(name, version, header, blobs, order)
    with tempfile.TemporaryDirectory() as folder:
        dna = read_dna_file(_write(seed.data, Path(folder), "seed"), max_memory=MEMORY_LIMIT)
        seed.reference = [dna.tensor(n, max_memory=MEMORY_LIMIT) for n in dna.names]
        seed.files = [content for _, content in dna.stored_files()]
    return seed


def coded_files() -> list[tuple[dict, bytes]]:
    """Format version 12's stored files (`weightdna.codec.filecoding`): a tokenizer's JSON
    vocabulary as lines, and its vocab.txt drawn on it (``prefix``)."""
    tokens = ["[PAD]", 'q"t', "\\b", "é", *(f"w{i}" for i in range(300))]
    vocab = json.dumps({"model": {"vocab": {t: i for i, t in enumerate(tokens)}}},
                       ensure_ascii=False, separators=(",", ":")).encode()
    coded = stored_entries([("config.json", b'{"hidden_size": 8}'), ("tokenizer.json", vocab),
                            ("vocab.txt", "\n".join(tokens).encode())], ppmd=False)
    assert {"vocab", "prefix"} <= {key for e, _ in coded for key in e}
    return coded


def ppmd_files() -> list[tuple[dict, bytes]]:
    """Format version 20's stored files: a README (the bundled sentences' start) and a
    tokenizer.json of their words (its vocabulary as lines) coded by PPMd, a vocab.txt
    drawn on them (``prefix``)."""
    from weightdna.evaluate import load_sentences

    text = "\n".join(load_sentences())
    words = list(dict.fromkeys(w for w in text.lower().split() if w.isalpha()))
    vocab = json.dumps({"model": {"vocab": {t: i for i, t in enumerate(["[PAD]", *words])}}},
                       separators=(",", ":")).encode()
    coded = stored_entries([("config.json", b'{"hidden_size": 8}'),
                            ("README.md", text.encode()[:3000]), ("tokenizer.json", vocab),
                            ("vocab.txt", "\n".join(["[PAD]", *words]).encode())])
    assert [e["compression"] for e, _ in coded] == ["zstd", "ppmd", "ppmd", "zstd"]
    assert "vocab" in coded[2][0] and coded[3][0].get("prefix") is True
    return coded


@functools.cache
def seeds() -> tuple[Seed, ...]:
    """The seed files: version 5 (small tensors; the large trellis), and version 4 (streams
    as versions 3 and 4 coded them), a version-7 file of fields-coded floats, version 8's
    representations, version 9's per-column factors, version 10's lanes-coded floats (all
    with float32 per-row steps), GRID_VERSION's per-row steps on a grid and
    FILE_CODING_VERSION's stored files drawn on each other, COMPACT_INDEX_VERSION's
    compact index (two checksum groups, and stored files after the tensors), and
    NAME_PREFIXES_VERSION's front-coded names, and ADAPTIVE_VERSION's adaptive symbol model
    (`adaptive_coded`), and ROW_STREAMS_VERSION's symbols coded by row blocks
    (`row_blocked_coded`), and TRELLIS_CODER_VERSION's one coder (`coder_coded`), and
    TRELLIS_COLUMN_VERSION's column context (`column_coded`), and STATES_VERSION's trellis
    of 32 states (the large trellis under its context streams, and `coder_coded` again).
    Every seed before that version is coded with the static models only, as those
    versions coded, every one before TRELLIS_COLUMN_VERSION without the column context,
    and every one before STATES_VERSION with 8 states."""
    saved = (entropy.AUTO_ADAPTIVE, tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN,
             tensor.TRELLIS_STATES)
    entropy.AUTO_ADAPTIVE = False  # whatever a caller set
    tensor.TRELLIS_CODER = tensor.TRELLIS_COLUMN = False
    tensor.TRELLIS_STATES = trellis.STATES
    try:
        older = (*_static_seeds(), _seed("v15-adaptive", adaptive_coded(), ADAPTIVE_VERSION),
                 _seed("v16-rowblocks", row_blocked_coded(), ROW_STREAMS_VERSION))
        tensor.TRELLIS_CODER = True
        v17 = _seed("v17-trellis-coder", coder_coded(), TRELLIS_CODER_VERSION)
        tensor.TRELLIS_COLUMN = True
        older = (*older, v17, _seed("v18-trellis-column", column_coded(),
                                    TRELLIS_COLUMN_VERSION))
        tensor.TRELLIS_STATES = 32
        tensor.TRELLIS_CODER = tensor.TRELLIS_COLUMN = False
        _, large, request = large_trellis()
        streams = encode_all([("states.streams", large, request)])
        tensor.TRELLIS_CODER = True
        states = [*streams, *coder_coded()]
        assert all(c[0]["params"]["model"].get("states") == 32 for c in states[:2])
        return (*older, _seed("v19-states", states, STATES_VERSION),
                _seed("v20-ppmd", encode_all(sample_tensors()[:2]), PPMD_VERSION,
                      ppmd_files()))
    finally:
        (entropy.AUTO_ADAPTIVE, tensor.TRELLIS_CODER, tensor.TRELLIS_COLUMN,
         tensor.TRELLIS_STATES) = saved


def coder_coded() -> list[tuple[dict, dict]]:
    """Format version 17: the large trellis (two row classes) and a conv kernel (the
    neighbours' contexts) each under one adaptive coder, and a tensor of the static models
    beside them."""
    g = torch.Generator().manual_seed(5)
    kernel = torch.randn(1, 8, 3, 5, generator=g).cumsum(-1) \
        + 0.3 * torch.randn(24, 8, 3, 5, generator=g).cumsum(-1)
    coded = encode_all([large_trellis(),
                        ("coder.kernel", kernel, {"step": 0.4, "quantizer": "trellis"}),
                        *sample_tensors()[:1]])
    assert [c[0]["params"]["model"].get("neighbours") for c in coded[:2]] == [[0, 0], [2, 1]]
    return coded


def column_coded() -> list[tuple[dict, dict]]:
    """Format version 18: a matrix whose columns differ in scale under the coder's column
    context, a conv kernel (the neighbours', column or not) and a version-17 coder beside
    them."""
    g = torch.Generator().manual_seed(7)
    column = torch.logspace(-0.4, 0.4, 256)[torch.randperm(256, generator=g)]
    matrix = torch.randn(96, 256, generator=g) * column * torch.linspace(0.3, 2, 96)[:, None]
    kernel = torch.randn(1, 8, 3, 5, generator=g).cumsum(-1) \
        + 0.3 * torch.randn(24, 8, 3, 5, generator=g).cumsum(-1)
    coded = encode_all([("column.matrix", matrix, {"step": 0.3, "quantizer": "trellis"}),
                        ("column.kernel", kernel, {"step": 0.4, "quantizer": "trellis"}),
                        large_trellis()])
    models = [c[0]["params"]["model"] for c in coded]
    assert models[0].get("column") == trellis.COLUMN_BUCKETS and "coder" in models[2]
    return coded


def adaptive_coded() -> list[tuple[dict, dict]]:
    """Format version 15: a scalar tensor and the large trellis (each of its streams) under
    the adaptive symbol model, and a tensor of the static models beside them."""
    g = torch.Generator().manual_seed(3)
    scalar = encode_all([("adaptive.scalar", torch.randn(16, 40, generator=g) * 0.05,
                          {"step": 0.01, "model": "adaptive"})])
    static = encode_all(sample_tensors()[:1])
    entry, sections = encode_all([large_trellis()])[0]
    model = entry["params"]["model"]
    joined = entropy.decode_streams(model["streams"], sections, "seed")
    descriptors, coded = entropy.encode_streams([])
    at, words = 0, []
    for d in model["streams"]:
        params, parts = entropy.encode_symbols(joined[at : at + d["count"]], "adaptive")
        at += d["count"]
        descriptors.append({"model": params, "count": d["count"],
                            "bytes": len(parts["symbols"]), "histogram": 0})
        words.append(parts["symbols"])
    sections = {k: v for k, v in sections.items() if k != "histogram"}
    sections["symbols"] = b"".join(words)
    entry = copy.deepcopy(entry)
    entry["params"]["model"]["streams"] = descriptors
    coded = [*scalar, (entry, sections), *static]
    assert all(d["model"]["kind"] == "adaptive" for d in descriptors)
    assert scalar[0][0]["params"]["model"]["kind"] == "adaptive"
    return coded


def row_blocked_coded() -> list[tuple[dict, dict]]:
    """Format version 16: the large trellis tensor (two row classes) in three row blocks
    and a bfloat16 tensor (a NaN among its values) rounded at one step in three, each
    block's symbols coded apart as a row-block task codes them (`rowblocks.encode_rows`,
    the `blocks` model), beside a tensor of the static models."""
    name, t, request = large_trellis()
    source, step = t.reshape(t.shape[0], -1), request["step"]
    search = _prepare_trellis(source, step, None)
    parts = [rowblocks.encode_rows(source[a:b], a, step, 0.0, None,
                                   rowblocks.search_args(search, a, b))
             for a, b in [(0, 40), (40, 96), (96, 128)]]
    info = TensorInfo("trellis.blocks", tuple(t.shape), "float32", "other", None, name)
    trellis_coded, _ = rowblocks.coded(info, step, search, None, parts)
    g = torch.Generator().manual_seed(6)
    w = (torch.randn(48, 24, generator=g) * 0.05).to(torch.bfloat16)
    w[5, 3] = math.nan
    parts = [rowblocks.encode_rows(w[a:b], a, 0.01, 0.0, None, None)
             for a, b in [(0, 16), (16, 20), (20, 48)]]
    info = TensorInfo("scalar.blocks", (48, 24), "bfloat16", "other", None, "scalar.blocks")
    scalar_coded, _ = rowblocks.coded(info, 0.01, None, None, parts)
    coded = [trellis_coded, scalar_coded, *encode_all(sample_tensors()[:1])]
    assert all(len(e["params"]["model"]["blocks"]) == 3 for e, _ in coded[:2])
    assert scalar_coded[0]["params"]["nonfinite"] == 1 and "classes" in trellis_coded[1]
    return coded


def _static_seeds() -> tuple[Seed, ...]:
    saved_min, saved_block = lossless.FIELDS_MIN_ELEMENTS, floatfields.BLOCK
    saved_lanes_block = lanes.BLOCK
    lossless.FIELDS_MIN_ELEMENTS = 1 << 62  # raw floats as versions 3 to 6 wrote them
    try:
        small = encode_all(sample_tensors())
        large = encode_all([large_trellis()])
        saved = entropy.SENTINEL
        entropy.SENTINEL = ()  # as versions 3 and 4 coded streams
        try:
            legacy = encode_all(sample_tensors())
        finally:
            entropy.SENTINEL = saved
    finally:
        lossless.FIELDS_MIN_ELEMENTS = saved_min
    floatfields.BLOCK = lanes.BLOCK = floatfields.MIN_BLOCK  # several blocks, small tensors
    try:
        fields = encode_all(fields_tensors())
        in_lanes = encode_all(lanes_tensors())
    finally:
        floatfields.BLOCK, lanes.BLOCK = saved_block, saved_lanes_block

    def old(coded: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
        return [float32_steps(c) for c in coded]

    # Version 13: the small raw tensors packed by their significant bits, as the writer
    # packs them in a file with the compact index (a float with zero low bits among them).
    statistic = torch.from_numpy(round_mantissa(
        torch.rand(24, generator=torch.Generator().manual_seed(5)).numpy() * 1e-3))
    compact = [_packed(e, s) for e, s in [*small, *encode_all([
        ("bn.running_var", statistic, {"lossless": True}),
        ("shape", torch.tensor([1, -1, 48, 192]), {"lossless": True})])]]
    assert sum(e["params"].get("compression") == "packed" for e, _ in compact) >= 3
    # Version 14: the same tensors under names that share their starts, front-coded
    # (a name that is the start of the one after it, one that shares nothing).
    names = ["model/block_0/conv/weight", "model/block_0/conv/weight/scale",
             "model/block_0/bn/running_var", "model/block_1/bn/running_var",
             "model/block_1/bn", "other", "model/block_1/bn/running_mean"]
    front = [({**e, "name": f"{names[i % len(names)]}/{i // len(names)}"
               if i >= len(names) else names[i]}, s) for i, (e, s) in enumerate(compact)]

    return (_seed("v5", old(small), 5), _seed("v5-trellis", old(large), 5),
            _seed("v4", old(legacy), 4), _seed("v7-fields", old(fields), 7),
            _seed("v8", old(encode_all(version8_tensors())), 8),
            _seed("v9-columns", old(version9_coded()), 9),
            _seed("v10-lanes", old(in_lanes), 10),
            _seed("v11-grid", encode_all(grid_tensors()), GRID_VERSION),
            _seed("v12-files", encode_all(sample_tensors()[:2]), FILE_CODING_VERSION,
                  coded_files()),
            _seed("v13-compact", compact, COMPACT_INDEX_VERSION, coded_files()[:1],
                  groups=[2, len(compact) - 2]),
            _seed("v14-prefixes", front, NAME_PREFIXES_VERSION, groups=[3, len(front) - 3],
                  front=True))


def _write(data: bytes, folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.dna"
    path.write_bytes(data)
    return path


# ---- mutations ---------------------------------------------------------------------------

HOSTILE_NUMBERS = [Raw("1" * 400), Raw("-" + "9" * 400), Raw("1e400"), Raw("-1e400"),
                   Raw("9" * 5000), Raw("1e-400"), Raw("5e-324"), Raw("2e308")]
HOSTILE_NAMES = ["[/]", "x[/]y", "[bold red]boom[/]", "\x1b[2J\x1b[31mred", "lone\ud800",
                 "\udfff", "a\nb\tc", "nul\x00", "bell\x07", "\u202eevil", "n" * 1024,
                 "n" * 1025, "damaged[backup]"]
DEEP = Raw("[" * 100_000 + "]" * 100_000)
ABSURD = [-1, 0, 1, 2, 3, 7, 8, 255, 2**19, 2**19 - 1, 2**20, 2**31, 2**32 + 7, 2**36,
          2**40, 2**63, 2**64 - 1, -(2**63), 10**19, 0.5, -0.5, 1e-300, 5e-324, 1e300,
          1e308, -1e308, True, False, None, "", "x" * 300, "float32", "bfloat16",
          "quantized", "raw", "dna+residual", "lowrank+residual", "factored+residual",
          "reference+residual", "ref.first", "ref.second",
          "trellis", "categorical", "adaptive", "blocks",
          "laplace", "gaussian", "siren", "float16", [], [0], [1, 1], [2**36], [2**20, 2**20],
          [50_000_000], [-1], list(range(17)), {}, {"kind": "laplace"}, *HOSTILE_NUMBERS]
NEWER = VERSION + 1  # a version this reader does not know
# Header keys whose values the format never uses to decode: changing them may not change
# the tensors.
INERT_KEYS = ("stats", "metadata")


@dataclass
class Case:
    """One mutant file and how it was made."""

    seed: str
    kind: str  # the family of mutation (a row of the summary)
    detail: str
    data: bytes
    inert: bool = False  # only places that cannot change the values were touched
    version: int = 5


def json_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a JSON value, containers included."""
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            paths += json_paths(value, (*prefix, i))
    return paths


def _get(node: object, path: tuple) -> object:
    for key in path:
        node = node[key]  # type: ignore[index]
    return node


def _set(header: dict, path: tuple, action: str, value: object) -> object:
    if not path:
        return value if action == "replace" else header
    parent = _get(header, path[:-1])
    last = path[-1]
    if action == "replace":
        parent[last] = value  # type: ignore[index]
    elif action == "delete":
        del parent[last]  # type: ignore[index]
    elif isinstance(parent, dict):
        parent["unexpected"] = value
    else:
        parent.append(value)  # type: ignore[union-attr]
    return header


def _near(value: object, rng: random.Random) -> object:
    """A value near a number (or an absurd one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return rng.choice(ABSURD)
    choices = [value + 1, value - 1, value * 2, value // 2 if isinstance(value, int) else value / 2,
               0, -value, value + 4, value - 4, value * 1000, value * 10**6,
               float(value) + 0.5, value + 2**32, rng.choice(HOSTILE_NUMBERS)]
    return rng.choice(choices)


def _header_mutation(seed: Seed, header: dict, rng: random.Random) -> tuple[object, str, bool]:
    """(the mutated header, what was done, whether only inert places were touched)."""
    tensors = header["tensors"]
    i = rng.randrange(len(tensors))
    entry = tensors[i]
    what = rng.random()
    if what < 0.30:  # any field, any way
        path = rng.choice(json_paths(header))
        action = rng.choice(["replace", "replace", "delete", "add"])
        value = rng.choice(ABSURD) if rng.random() < 0.7 else _near(_leaf(header, path), rng)
        inert = len(path) >= 1 and (path[0] == "metadata" or (len(path) >= 3 and path[2] == "stats"
                                                               and path[0] == "tensors"))
        return _set(header, path, action, value), f"field {action} {_path(path)}", inert
    if what < 0.55:  # a number moved near itself: counts, sizes, steps, model parameters
        numeric = [p for p in json_paths(entry)
                   if _is_number(_get(entry, p)) and p[0] != "sections"]  # laid out after
        path = rng.choice(numeric)
        _set(entry, path, "replace", _near(_get(entry, path), rng))
        return header, f"number {entry['name']}.{_path(path)}", path[0] == "stats"
    if what < 0.70:  # the shape: more or fewer elements than the sections hold
        shape = list(entry["shape"]) or [1]
        axis = rng.randrange(len(shape))
        shape[axis] = rng.choice([shape[axis] + 1, max(shape[axis] - 1, 0), shape[axis] * 2,
                                  shape[axis] * 1000, 50_000_000 // max(1, math.prod(shape)
                                                                       // max(shape[axis], 1)),
                                  0, shape[axis] * 7])
        if rng.random() < 0.2:
            shape = shape[::-1]
        entry["shape"] = shape
        return header, f"shape {entry['name']}", False
    if what < 0.80:  # names: markup, control characters, lone surrogates
        entry["name"] = rng.choice(HOSTILE_NAMES)
        return header, "name", False
    if what < 0.88:  # metadata and source_metadata
        choice = rng.randrange(5)
        if choice == 0:
            header["metadata"]["source_metadata"] = "[" * 100_000 + "]" * 100_000
        elif choice == 1:
            header["metadata"]["source_metadata"] = '{"a": ' + "9" * 5000 + "}"
        elif choice == 2:
            header["metadata"]["source_metadata"] = '{"a": 1e400, "b": ' + "1" * 400 + "}"
        elif choice == 3:
            header["metadata"]["source_metadata"] = rng.choice(HOSTILE_NAMES)
        else:
            header["metadata"] = DEEP
            return header, "metadata deep", False
        return header, "source_metadata", True
    # the parameters of a prediction or of a trellis
    params = entry["params"]
    if "network" in params:
        key = rng.choice(["omega0", "hidden_omega0", "offset", "scale", "width", "depth"])
        params["network"][key] = rng.choice([1e-300, 5e-324, 1e4, 1e4 + 1, 1e300, 0.0, 1024, 16,
                                             *HOSTILE_NUMBERS, _near(params["network"][key], rng)])
        return header, f"dna {key}", False
    if "byte_planes" in params:  # raw
        params["byte_planes"] = not params["byte_planes"]
        return header, "raw byte_planes", False
    coding = params.get("compression")
    if coding == "packed":  # version 13
        key = rng.choice(["base", "bits", "shift", "sign"])
        params[key] = rng.choice([*ABSURD, True, False, -1, 64, 65, 1 << 62,
                                  _near(params[key], rng)])
        return header, f"packed {key}", False
    if coding in ("fields", "lanes"):
        key = rng.choice(sorted(params))
        params[key] = rng.choice([*ABSURD, _near(params[key], rng) if key != "compression"
                                  else "zstd"])
        return header, f"{coding} {key}", False
    model = (params.get("residual") or params)["model"]
    if model.get("kind") == "trellis" and "coder" in model:  # version 17
        key = rng.choice(["min", "max", "neighbours", "classes"])
        model[key] = rng.choice([*ABSURD, -1, 0, 1, 9, [1, 1], [2, 1], [0, 0],
                                 _near(model[key], rng) if key in ("min", "max") else 2])
        return header, f"trellis coder {key}", False
    if model.get("kind") == "trellis":
        streams = model["streams"]
        a, b = rng.randrange(len(streams)), rng.randrange(len(streams))
        key = rng.choice(["count", "bytes", "histogram"])
        moved = rng.choice([1, 4, 8, 100])
        streams[a][key] += moved  # moved from one stream to another: the sums still match
        streams[b][key] -= moved
        return header, f"trellis {key}", False
    key = rng.choice(["min", "max", "mean", "scale"])
    model[key] = _near(model.get(key, 0), rng)
    return header, f"model {key}", False


def _owner(header: dict, i: int) -> str:
    """The name of the tensor, or the path of the stored file, whose blob is ``i``."""
    count = len(header["tensors"])
    return header["tensors"][i]["name"] if i < count else header["files"][i - count]["path"]


def _leaf(header: dict, path: tuple) -> object:
    try:
        return _get(header, path)
    except (KeyError, IndexError, TypeError):
        return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _path(path: tuple) -> str:
    return ".".join(str(p) if isinstance(p, str) else "[]" for p in path)


ZSTD_ROLES = {"data", "histogram", "nonfinite", "classes", "columns"}
SKIPPABLE = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip"


def _section_mutation(blob: bytes, role: str, rng: random.Random) -> tuple[bytes, str]:
    data = bytearray(blob)
    ops = ["flip", "cut", "drop-word", "add-word", "append", "insert", "random", "empty",
           "swap-words", "zero-run"]
    if role in ZSTD_ROLES:
        ops += ["skippable", "second-frame", "trailing", "reframe"]
    op = rng.choice(ops)
    if op == "flip" and data:
        for _ in range(rng.randint(1, 4)):
            bit = rng.randrange(8 * len(data))
            data[bit // 8] ^= 1 << bit % 8
    elif op == "cut":
        del data[rng.randint(0, len(data)):]
    elif op == "drop-word":
        del data[-4:]
    elif op == "add-word":
        data += rng.choice([b"\0\0\0\0", b"\1\0\0\0", rng.randbytes(4)])
    elif op == "append":
        data += rng.randbytes(rng.randint(1, 16))
    elif op == "insert":
        at = rng.randint(0, len(data))
        data[at:at] = rng.randbytes(rng.choice([1, 4, 8]))
    elif op == "random":
        data = bytearray(rng.randbytes(rng.choice([len(data), rng.randint(0, 64)])))
    elif op == "empty":
        data = bytearray()
    elif op == "swap-words" and len(data) >= 8:
        a, b = rng.randrange(len(data) // 4), rng.randrange(len(data) // 4)
        data[4 * a : 4 * a + 4], data[4 * b : 4 * b + 4] = data[4 * b : 4 * b + 4], \
            data[4 * a : 4 * a + 4]
    elif op == "zero-run" and data:
        at = rng.randrange(len(data))
        data[at : at + rng.randint(1, 8)] = bytes(len(data[at : at + 8]))[: rng.randint(1, 8)]
    elif op == "skippable":
        data[:0] = SKIPPABLE
    elif op == "second-frame":
        data += compress_bytes(rng.choice([b"", b"x", bytes(data[:8])]))
    elif op == "trailing":
        data += rng.choice([b"\0", b"\0\0\0\0", rng.randbytes(3)])
    elif op == "reframe":  # a valid frame of other content: right, wrong or zero length
        try:
            payload = zstandard.ZstdDecompressor().decompress(bytes(blob)) if blob else b""
        except zstandard.ZstdError:  # a stored file's frame drawn on the files before it
            payload = bytes(blob)
        payload = rng.choice([payload[:-1], payload + b"\0", b"", rng.randbytes(len(payload)),
                              bytes(len(payload))])
        data = bytearray(compress_bytes(payload))
    return bytes(data), op


def make_case(index: int, seed_value: int = 0) -> Case:
    """Case ``index`` of the run ``seed_value``: the same case every time."""
    rng = random.Random(seed_value * 1_000_003 + index)
    pool = seeds()
    weights = [6, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 4]  # one per seed, in `seeds`' order
    seed = pool[rng.choices(range(len(pool)), weights=weights)[0]]
    header = json.loads(seed.header_text)  # a deep copy, faster than copy.deepcopy
    blobs = dict(seed.blobs)
    order = list(seed.order)
    version = seed.version
    family = rng.random()
    kind, detail, inert = "", "", False
    if family < 0.45:
        header, detail, inert = _header_mutation(seed, header, rng)
        kind = "header"
    elif family < 0.85:
        key = rng.choice(order)
        blobs[key], detail = _section_mutation(blobs[key], key[1], rng)
        kind = "section"
        detail = f"{_owner(seed.header, key[0])}.{key[1]} {detail}"
    elif family < 0.95:
        header, detail, _ = _header_mutation(seed, header, rng)
        key = rng.choice(order)
        blobs[key], op = _section_mutation(blobs[key], key[1], rng)
        kind, detail = "header+section", f"{detail}; {key[1]} {op}"
    elif family < 0.97:  # a section's offset, length or CRC, after the layout
        lay_out(header, blobs, order)
        i, role = rng.choice(order)
        count = len(header["tensors"])
        sections = (header["tensors"][i] if i < count else header["files"][i - count])[
            "sections"]
        if isinstance(sections[role], int):  # a compact index: a length, or a group's CRC
            if rng.random() < 0.5:
                sections[role] = _near(sections[role], rng)
                kind, detail = "layout", f"{role} length"
            else:
                group = rng.choice(header["checksums"])
                group[rng.randrange(2)] = _near(group[1], rng)
                kind, detail = "layout", "checksum group"
        else:
            spec = sections[role]
            field_ = rng.randrange(3)
            spec[field_] = _near(spec[field_], rng)
            kind, detail = "layout", f"{role}[{field_}]"
        return Case(seed.name, kind, detail, build(header, blobs, order, version, False),
                    False, version)
    else:
        version = rng.choice([*READABLE_VERSIONS, NEWER])
        kind, detail = "version", f"{seed.version}->{version}"
        if rng.random() < 0.5:
            header, more, _ = _header_mutation(seed, header, rng)
            detail += f"; {more}"
    data = build(header, blobs, order, version if version != NEWER else 5)
    if version == NEWER:  # a newer version in the prefix
        data = data[:8] + NEWER.to_bytes(4, "little") + data[12:]
    return Case(seed.name, kind, detail, data, inert, version)


# ---- the oracle --------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str  # refused, unchanged, changed, crash, silent
    detail: str = ""
    seconds: float = 0.0
    peak_bytes: int = 0


def run_case(case: Case, folder: Path) -> Outcome:
    """Read and decode ``case`` (see the module docstring for what is checked)."""
    from weightdna.cli import printable
    from weightdna.cli.info import _rows

    path = _write(case.data, folder, "case")
    start = time.perf_counter()
    try:
        dna = read_dna_file(path, max_memory=MEMORY_LIMIT)
        for row in _rows(dna):  # `weightdna info` renders any file the reader accepts
            printable(row["name"]).encode("utf-8")
            f"{row['bits_per_weight']} {row['max_abs_error']} {row['snr_db']}".encode()
        decoded = [dna.tensor(name, max_memory=MEMORY_LIMIT) for name in dna.names]
        files = [content for _, content in dna.stored_files()]
    except WeightDNAError as exc:
        if not str(exc):
            return Outcome("crash", "a WeightDNAError without a message")
        return Outcome("refused", type(exc).__name__, time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 — anything else is the bug being looked for
        return Outcome("crash", f"{type(exc).__name__}: {str(exc)[:200]}",
                       time.perf_counter() - start)
    seconds = time.perf_counter() - start
    reference = next(s for s in seeds() if s.name == case.seed).reference
    same = len(decoded) == len(reference) and all(
        a.dtype == b.dtype and a.shape == b.shape and _bits(a) == _bits(b)
        for a, b in zip(decoded, reference, strict=True)) and files == next(
        s for s in seeds() if s.name == case.seed).files
    broken = _invariants(dna)
    if broken:
        return Outcome("silent", broken, seconds)
    if same:
        return Outcome("unchanged", "", seconds)
    if case.inert:
        return Outcome("silent", "an inert mutation changed the values", seconds)
    return Outcome("changed", "", seconds)


def _bits(t: torch.Tensor) -> bytes:
    from weightdna.codec.dtypes import tensor_bytes

    return tensor_bytes(t)


def _invariants(dna: object) -> str:
    """'' when every stream and zstd section of an accepted file is exact (invariants 1
    and 2 of the module docstring), else what is not."""
    for entry in dna.entries:  # type: ignore[attr-defined]
        sections = dna.read_sections(entry["name"])  # type: ignore[attr-defined]
        packed = entry["params"].get("compression") == "packed"  # no zstd frame
        for role in ZSTD_ROLES & set(sections) if not packed else ():
            blob = sections[role]
            obj = zstandard.ZstdDecompressor().decompressobj()
            try:
                obj.decompress(blob)
            except zstandard.ZstdError as exc:
                return f"{entry['name']}.{role}: accepted, but zstd refuses it ({exc})"
            if blob[:4] != ZSTD_MAGIC or not obj.eof or obj.unused_data:
                return f"{entry['name']}.{role}: accepted, but not exactly one zstd frame"
        if entry["representation"] == "raw":
            continue
        params = entry["params"]
        params = params.get("residual", params)
        model, numel = params["model"], math.prod(entry["shape"])
        if model["kind"] == "trellis" and "coder" in model:
            problem = _coder_is_exact(entry, model, sections, dna.version)
            if problem:
                return f"{entry['name']}: {problem}"
            continue
        columns = numel // entry["shape"][0] if entry["shape"] and entry["shape"][0] else 0
        blocks = [{"rows": None, "model": model, "bytes": len(sections["symbols"]),
                   "histogram": len(sections.get("histogram", b""))}]
        if model["kind"] == "blocks":  # version 16: each row block's streams in turn
            blocks = model["blocks"]
        streams = []
        for block in blocks:
            count = numel if block["rows"] is None else block["rows"] * columns
            if block["model"]["kind"] == "trellis":
                streams += block["model"]["streams"]
            else:
                streams.append({**block, "count": count})
        at = hat = 0
        for d in streams:
            words = sections["symbols"][at : at + d["bytes"]]
            hist = sections.get("histogram", b"")[hat : hat + d["histogram"]]
            at, hat = at + d["bytes"], hat + d["histogram"]
            problem = _stream_is_exact(d["model"], words, hist, d["count"], dna.version)
            if problem:
                return f"{entry['name']}: {problem}"
    return ""


def _coder_is_exact(entry: dict, model: dict, sections: dict, version: int) -> str:
    """'' when a trellis tensor's one coder (version 17; its column context, 18; its
    states, 19), decoded, codes to its bytes again."""
    rows, columns = row_shape(tuple(entry["shape"]))
    reader = tensor._trellis_reader(model, sections, rows, "coder", version, columns)
    symbols = reader.rows(0, rows, columns)[0]
    caps = tuple(model["neighbours"])
    again = trellis.coder_encode([(symbols, reader.classes)], model["classes"], columns, *caps,
                                 model.get("column", 1),
                                 states=model.get("states", trellis.STATES))
    if again != sections["symbols"]:
        return (f"a trellis coder of {len(sections['symbols'])} bytes decoded symbols that "
                f"code to {len(again)} other bytes")
    return ""


def _stream_is_exact(model: dict, words: bytes, histogram: bytes, count: int,
                     version: int) -> str:
    parts = {"symbols": words}
    if model["kind"] == "categorical":
        parts["histogram"] = histogram
    symbols = entropy.decode_symbols(model, parts, count, "stream", version)
    if count == 0:
        return "" if not words else "an empty stream with words"
    if model["kind"] == "adaptive":
        again = adaptive.encode([symbols])
        if again != words:
            return (f"an adaptive stream of {len(words)} bytes decoded {count} symbols that "
                    f"code to {len(again)} other bytes")
        return ""
    counts = None
    if model["kind"] == "categorical":
        # streamed: the reader also takes a frame whose header does not state its size
        counts = np.frombuffer(zstandard.ZstdDecompressor().decompressobj().decompress(
            histogram), "<u8")
    saved = entropy.SENTINEL
    if version < entropy.TERMINATED_VERSION:
        entropy.SENTINEL = ()
    try:
        again = entropy._encode_with(model, [symbols], counts)["symbols"]
    finally:
        entropy.SENTINEL = saved
    if again != words:
        return (f"a stream of {len(words)} bytes decoded {count} symbols that code to "
                f"{len(again)} other bytes (read past its end, or bytes left over)")
    return ""


# ---- memory ------------------------------------------------------------------------------


def honest_malloc() -> None:
    """Make glibc map every allocation of 64 KiB or more on its own and give it back when
    freed, so that a case's peak RSS is what it allocated, not what earlier cases left in
    the heap."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def measure(case: Case, folder: Path) -> Outcome:
    """`run_case` with the peak RSS it added (Linux: the peak is reset before the case)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status("VmRSS:")
    except OSError:
        before = None
    outcome = run_case(case, folder)
    if before is not None:
        outcome.peak_bytes = max(0, _status("VmHWM:") - before)
    return outcome


def over_allocated(outcome: Outcome) -> bool:
    return outcome.peak_bytes > MEMORY_LIMIT + RSS_SLACK


