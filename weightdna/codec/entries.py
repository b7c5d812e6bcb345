"""What a .dna header's tensor entry may hold, and the format's version: checked before
any section is read (`weightdna.codec.container` reads the file, `weightdna.codec.tensor`
decodes each entry; both build on this module)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from weightdna.codec.dtypes import DTYPES
from weightdna.codec.fields import is_finite_number, is_int
from weightdna.errors import CorruptFileError

# 3: the trellis symbol model; 4: the header's preset dictionary; 5: every ANS stream ends in
# a fixed state, so that its symbol count is checked exactly; 6: the model's other files
# (config, tokenizer, an ONNX graph) stored beside its tensors; 7: a float ``raw`` tensor
# coded by its bit fields (``"compression": "fields"``), and the transform and
# separable+residual representations (docs/FORMAT.md); 8: the factored+residual
# representation (a conv kernel's per-output-channel factors, themselves quantized tensors);
# 9: per-column factors of a ``quantized`` tensor (``columns``); 10: a float ``raw`` tensor
# coded in lanes (``"compression": "lanes"``, `weightdna.codec.lanes`); 11: per-row steps
# on a grid (``grid``, `weightdna.codec.rowsteps`); 12: a stored file's frame drawn on the
# files before it (``prefix``) and a JSON vocabulary stored as lines (``vocab``,
# `weightdna.codec.filecoding`); 13: the compact index (``checksums``: each tensor's
# sections given by their lengths alone, laid out in order, and a CRC-32 per group of
# consecutive tensors, `weightdna.codec.container`) and a small ``raw`` tensor packed by
# its significant bits (``"compression": "packed"``, `weightdna.codec.packed`); 14: the
# tensors' names front-coded (``prefixes``: each name given as the characters it adds to
# the start it shares with the name before it, `weightdna.codec.container`). A file is
# written as the lowest version that holds its entries (`file_version`): one without any
# of them as version 8, byte for byte as before.
COLUMNS_VERSION = 9
LANES_VERSION = 10
GRID_VERSION = 11
FILE_CODING_VERSION = 12
FILE_CODING_KEYS = ("prefix", "vocab")
COMPACT_INDEX_VERSION = 13
NAME_PREFIXES_VERSION = 14
# 15: a symbol stream under the adaptive model (``"kind": "adaptive"``,
# `weightdna.codec.adaptive`); a version-15 file may also hold version 14's name prefixes.
ADAPTIVE_VERSION = 15
# 16: a row-blocked tensor's symbols coded a row block at a time (``"kind": "blocks"``:
# each block's rows, its own symbol model and the bytes of its streams,
# `weightdna.codec.tensor`), so that the blocks are coded, and can be decoded, apart; a
# version-16 file may also hold the adaptive model and the name prefixes.
ROW_STREAMS_VERSION = 16
ROW_STREAMS_KIND = "blocks"
# 17: a trellis tensor's symbols under one adaptive coder (``"coder": "adaptive"`` in its
# trellis model, `weightdna.codec.trellis.coder_encode`); a version-17 file may hold
# everything before it (a row block's own model is never under the coder).
TRELLIS_CODER_VERSION = 17
# 18: that coder's ``sig`` and ``gt`` contexts also split by the symbol's column
# (``"column"`` in its model, `weightdna.codec.trellis.COLUMN_BUCKETS`); a version-18 file
# may hold everything before it.
TRELLIS_COLUMN_VERSION = 18
# 19: a trellis of more states than NNCodec's 8 (``"states"`` in its trellis model:
# `weightdna.codec.trellis.TABLES`); a version-19 file may hold everything before it.
STATES_VERSION = 19
# 20: a stored file's payload coded by PPMd (``"compression": "ppmd"`` and its ``ppmd``
# params, `weightdna.codec.filecoding`); a version-20 file may hold everything before it.
PPMD_VERSION = 20
VERSION = max(COLUMNS_VERSION, LANES_VERSION, GRID_VERSION, FILE_CODING_VERSION,
              COMPACT_INDEX_VERSION, NAME_PREFIXES_VERSION, ADAPTIVE_VERSION,
              ROW_STREAMS_VERSION, TRELLIS_CODER_VERSION, TRELLIS_COLUMN_VERSION,
              STATES_VERSION, PPMD_VERSION)
READABLE_VERSIONS = tuple(range(3, VERSION + 1))
MAX_DIMS = 16
MAX_ELEMENTS = 1 << 36
MAX_NAME_CHARS = 1024
MAX_SECTIONS_PER_TENSOR = 16
DEFAULT_MAX_MEMORY = 4 << 30
REPRESENTATIONS = ("raw", "quantized", "lowrank+residual", "dna+residual", "transform",
                   "separable+residual", "factored+residual", "reference+residual")
# Representations a file of an earlier version may not hold.
NEW_IN_7 = ("transform", "separable+residual")
NEW_IN_8 = ("factored+residual", "reference+residual")
ENTRY_KEYS = {"name", "dtype", "shape", "representation", "params"}
OPTIONAL_ENTRY_KEYS = {"sections", "stats"}
STATS_KEYS = {"max_abs_error", "snr_db", "mse"}
# Decoding a quantized tensor holds its int32 symbols beside the result; a predicted one
# (lowrank+residual, dna+residual) its float64 prediction too; a raw one its bytes up to
# three times (the zstd output, its copy, the byte planes undone). Bytes per element beyond
# the result's own, rounded up from what `tests/test_codec_hostile.py` measures (peak RSS).
DECODE_OVERHEAD_BYTES = 16
PREDICTED_DECODE_OVERHEAD_BYTES = 24
# A factored one decodes its factors too (`weightdna.codec.factored.valid_ranks`: at most
# three times the tensor's elements), each a quantized float32 tensor read into float64.
FACTORED_DECODE_OVERHEAD_BYTES = PREDICTED_DECODE_OVERHEAD_BYTES + 3 * (
    4 + DECODE_OVERHEAD_BYTES + 8)
# A reference's holds the referenced tensor (at most 8 bytes an element) and its float64.
REFERENCE_DECODE_OVERHEAD_BYTES = PREDICTED_DECODE_OVERHEAD_BYTES + 8 + 8
# ... and works through it a block of whole rows at a time (`tensor.BLOCK_ELEMENTS`, at
# least one row): the block's float64 values and their cast, or the trellis's symbols and
# levels, at most this many bytes per element of the block.
DECODE_BLOCK_ELEMENTS = 1 << 18
DECODE_BLOCK_BYTES = 32


def file_version(entries: Sequence[dict], files: Sequence[dict] = (),
                 compact_index: bool = False, name_prefixes: bool = False) -> int:
    """The version a file of these tensor entries and stored-file entries is written as:
    the lowest that holds them (COLUMNS_VERSION with a ``quantized`` tensor's per-column
    factors, LANES_VERSION with a lanes-coded ``raw`` tensor, GRID_VERSION with per-row
    steps on a grid, FILE_CODING_VERSION with a stored file's ``prefix`` or ``vocab``,
    COMPACT_INDEX_VERSION with a compact index or a packed ``raw`` tensor,
    NAME_PREFIXES_VERSION with front-coded names, ADAPTIVE_VERSION with a symbol stream
    under the adaptive model, ROW_STREAMS_VERSION with symbols coded by row blocks,
    TRELLIS_CODER_VERSION with a trellis tensor under one coder, TRELLIS_COLUMN_VERSION
    with that coder's column context, STATES_VERSION with a trellis of more states,
    PPMD_VERSION with a stored file coded by PPMd, else 8)."""
    if any(entry.get("compression") == "ppmd" for entry in files):
        return PPMD_VERSION
    if any(_holds(entry.get("params"), _more_states) for entry in entries):
        return STATES_VERSION
    if any(_holds(entry.get("params"), lambda d: "coder" in d and "column" in d)
           for entry in entries):
        return TRELLIS_COLUMN_VERSION
    if any(_holds_coder(entry.get("params")) for entry in entries):
        return TRELLIS_CODER_VERSION
    if any(_holds_kind(entry.get("params"), ROW_STREAMS_KIND) for entry in entries):
        return ROW_STREAMS_VERSION
    if any(_holds_kind(entry.get("params"), "adaptive") for entry in entries):
        return ADAPTIVE_VERSION
    if name_prefixes:
        return NAME_PREFIXES_VERSION
    if compact_index or any(isinstance(e.get("params"), dict)
                            and e["params"].get("compression") == "packed" for e in entries):
        return COMPACT_INDEX_VERSION
    version = COLUMNS_VERSION - 1
    if any(key in entry for entry in files for key in FILE_CODING_KEYS):
        version = FILE_CODING_VERSION
    for entry in entries:
        params = entry.get("params")
        if isinstance(params, dict) and "columns" in params:
            version = max(version, COLUMNS_VERSION)
        if isinstance(params, dict) and params.get("compression") == "lanes":
            version = max(version, LANES_VERSION)
        if _holds_grid(params):
            version = max(version, GRID_VERSION)
    return version


def _holds(params: object, found: Callable[[dict], bool]) -> bool:
    """Whether a tensor's params hold, at any depth (a trellis's streams, a prediction's
    residual, a factored prediction's factors, a row block's model), a dict ``found``
    accepts."""
    if isinstance(params, dict):
        return found(params) or any(_holds(v, found) for v in params.values())
    if isinstance(params, list):
        return any(_holds(v, found) for v in params)
    return False


def _holds_kind(params: object, kind: str) -> bool:
    """Whether a tensor's params hold a symbol model of this kind ("adaptive",
    ROW_STREAMS_KIND) at any depth."""
    return _holds(params, lambda d: d.get("kind") == kind)


def _holds_coder(params: object) -> bool:
    """Whether a tensor's params hold, at any depth, a trellis model under one adaptive
    coder (``"coder"``)."""
    return _holds(params, lambda d: "coder" in d)


def _more_states(model: dict) -> bool:
    """Whether a dict is a trellis model of more states than 8 (``"states"``)."""
    return model.get("kind") == "trellis" and "states" in model


def _holds_grid(params: object) -> bool:
    """Whether a tensor's params, or the quantized params within them (a transform's
    ``coefficients``, a prediction's ``residual``), hold per-row steps on a grid."""
    if not isinstance(params, dict):
        return False
    return "grid" in params or any(_holds_grid(params.get(key))
                                   for key in ("coefficients", "residual"))


def check_entry(entry: object, max_memory: int = DEFAULT_MAX_MEMORY) -> tuple[str, str, tuple]:
    """Validate the generic fields of one tensor entry; returns (name, dtype, shape).

    Raises CorruptFileError. The representation's params are checked by its decoder.
    """
    if not isinstance(entry, dict):
        raise CorruptFileError("a tensor entry must be a JSON object.")
    name = entry.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise CorruptFileError(f"tensor name must be a string of 1 to {MAX_NAME_CHARS} chars.")
    where = f"tensor {name!r}"
    keys = set(entry)
    if not ENTRY_KEYS <= keys or not keys <= ENTRY_KEYS | OPTIONAL_ENTRY_KEYS:
        raise CorruptFileError(
            f"{where}: expected the keys {sorted(ENTRY_KEYS)} (and optionally "
            f"{sorted(OPTIONAL_ENTRY_KEYS)}), found {sorted(map(str, keys))}."
        )
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CorruptFileError(f"{where}: unknown dtype {dtype!r}.")
    shape = entry["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(is_int(d) and 0 <= d <= MAX_ELEMENTS for d in shape)
    ):
        raise CorruptFileError(
            f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers."
        )
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS:
        raise CorruptFileError(f"{where}: {numel} elements exceed the limit of {MAX_ELEMENTS}.")
    if entry["representation"] not in REPRESENTATIONS:
        raise CorruptFileError(
            f"{where}: unknown representation {entry['representation']!r} "
            f"(this reader knows {', '.join(REPRESENTATIONS)})."
        )
    need = decode_memory(entry["representation"], dtype, shape)
    if need > max_memory:
        raise CorruptFileError(
            f"{where}: decoding {shape} {dtype} needs about {need} bytes, over the memory "
            f"limit of {max_memory}; raise max_memory if the file is trusted."
        )
    stats = entry.get("stats", {})
    if not isinstance(stats, dict) or not set(stats) <= STATS_KEYS:
        raise CorruptFileError(f"{where}: stats must be an object with keys {sorted(STATS_KEYS)}.")
    for key, value in stats.items():
        if value is not None and not is_finite_number(value):
            raise CorruptFileError(f"{where}: stats[{key!r}] must be a finite number or null.")
    return name, dtype, tuple(shape)


def decode_memory(representation: str, dtype: str, shape: Sequence[int]) -> int:
    """An upper bound on the bytes decoding a tensor allocates (its result included), but
    for a DNA's evaluation (`prediction.dna_workspace`)."""
    numel = math.prod(shape)
    overhead = DECODE_OVERHEAD_BYTES
    if representation in ("lowrank+residual", "dna+residual", "transform",
                          "separable+residual"):
        overhead = PREDICTED_DECODE_OVERHEAD_BYTES
    elif representation == "factored+residual":
        overhead = FACTORED_DECODE_OVERHEAD_BYTES
    elif representation == "reference+residual":
        overhead = REFERENCE_DECODE_OVERHEAD_BYTES
    columns = math.prod(shape[1:]) if shape else 1
    block = min(numel, max(DECODE_BLOCK_ELEMENTS, columns))
    return numel * (DTYPES[dtype].itemsize + overhead) + block * DECODE_BLOCK_BYTES
