"""Fast lossless coding of floats (format version 10, ``raw`` with ``"compression":
"lanes"``; docs/FORMAT.md).

Each element is rotated left by one bit (the sign moves to the bottom: exponent, mantissa,
sign) and split in two: its *head*, the exponent and the top ``mantissa_bits`` mantissa
bits, and its *low* bits, the rest (the other mantissa bits and the sign), near-uniform.

- The heads are coded with one static table per tensor (12-bit frequencies) by a rANS
  coder (32-bit states, 16-bit words) in numba: each block of ``block`` elements on four
  states that take its elements in turn, each state with its own stream of words, so the
  decoder's four chains (lookup, multiply, refill without a branch) overlap.
- The low bits are stored as they are, in planes of 8, 4, 2 and 1 bits (float32 with 2
  head mantissa bits: 22 low bits, two byte planes, a nibble and a 2-bit plane), zstd-coded
  at a fast level when that makes them smaller (float32's low mantissa bytes where many
  elements are exact float16 or bfloat16 values).

Why these fields (issue 15, MiniLM's tensors cast to bf16, empirical entropies, tables
not counted): the exponent takes 2.61 bits a weight; coded with the top 2 or 3 mantissa
bits, 0.07 bits less; contexts on the exponent find less (its row's and column's median
exponents 0.04, the previous exponent 0.004); the other mantissa bits and the sign are
near-uniform. With 12-bit
frequencies the heads' rare values cost more than their information (3 mantissa bits of
a bfloat16: 2.577 bits a weight for the head's share, 2 bits: 2.561; the sign in the head
too: 2.770), hence 2 for 8-bit exponents, 3 for float16's 5. ZipNN codes the exponent
byte by Huffman per chunk and the rest per byte plane.

Speed (CPU time, BENCHMARKS.md "Lossless vs ZipNN"): the four rANS chains took 4.4 ns an
element on MiniLM's word embeddings in bf16, where ZipNN's whole decode took 1.5; they are
40% of the decoder's time on all of MiniLM in bf16. 8 states were no faster than 4, nor
one shared stream with branching refills. zstd's Huffman decoding of a plane of exponent
bytes took 1.4 ns an element, but a byte plane of heads (the exponent and top 3 mantissa
bits, ranked) coded so came out no smaller than ZipNN on fp16 (+0.15%) and fp32 (-0.05%).

Each block's streams run from fixed states back to them, so a stream decoded from forged
words ends in other states or at another word count, which the decoder checks.
"""

from __future__ import annotations

import numba
import numpy as np

from weightdna.codec.floatfields import LOWER, PREC, TOTAL, _cumulative, _normalise
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError

# dtype: (width bits, exponent bits, head mantissa bits by default)
LAYOUTS = {"float32": (32, 8, 2), "bfloat16": (16, 8, 2), "float16": (16, 5, 3)}
MAX_HEAD_MANTISSA = 3
LANES = 4
MAX_RANKS = 256  # distinct heads in a tensor (the decoder's table holds a byte per slot)
BLOCK = 1 << 18
MIN_BLOCK, MAX_BLOCK = 1 << 10, 1 << 24
TABLES_LEVEL = 9
LOW_LEVEL = 1  # zstd level of the low bits
LOW_SAMPLE = 1 << 16  # bytes of the low planes zstd tries first
SMALL = 1 << 12  # elements under which every head width is tried
PARAM_KEYS = {"compression", "mantissa_bits", "block", "low_zstd"}
MASK = TOTAL - 1


def _planes(low: int) -> list[int]:
    """The bit widths of the planes ``low`` low bits are stored in, lowest bits first."""
    return [8] * (low // 8) + [w for w in (4, 2, 1) if low % 8 & w]


def _plane_bytes(n: int, width: int) -> int:
    return -(-n * width // 8)


def _low_bytes(n: int, low: int) -> int:
    return sum(_plane_bytes(n, w) for w in _planes(low))


@numba.njit(cache=True, nogil=True)
def _rotate(v, width, low, heads, rest, counts):
    """Each element rotated left by one bit: its bits from ``low`` up into heads (and
    counts: four histograms, counts[i % 4], so that repeats do not wait on each other),
    the others into rest."""
    top = width - 1
    full = (np.int64(1) << width) - 1
    lmask = (np.int64(1) << low) - 1
    for i in range(v.size):
        x = np.int64(v[i])
        u = ((x << 1) | (x >> top)) & full
        h = u >> low
        heads[i] = h
        counts[i & 3, h] += 1
        rest[i] = u & lmask


@numba.njit(cache=True, nogil=True, inline="always")
def _field(rest, i, shift, mask):
    return (np.int64(rest[i]) >> shift) & mask if i < rest.size else 0


@numba.njit(cache=True, nogil=True)
def _pack(rest, shift, width, plane):
    """Bits shift … shift + width − 1 of each of ``rest`` into ``plane``, 8 // width a
    byte (the first lowest), each byte written once."""
    mask = (np.int64(1) << width) - 1
    if width == 8:
        for j in range(plane.size):
            plane[j] = _field(rest, j, shift, mask)
    elif width == 4:
        for j in range(plane.size):
            plane[j] = _field(rest, 2 * j, shift, mask) | (_field(rest, 2 * j + 1, shift, mask)
                                                          << 4)
    elif width == 2:
        for j in range(plane.size):
            i = 4 * j
            plane[j] = (_field(rest, i, shift, mask) | (_field(rest, i + 1, shift, mask) << 2)
                        | (_field(rest, i + 2, shift, mask) << 4)
                        | (_field(rest, i + 3, shift, mask) << 6))
    else:
        for j in range(plane.size):
            b = np.int64(0)
            for t in range(8):
                b |= _field(rest, 8 * j + t, shift, mask) << t
            plane[j] = b


@numba.njit(cache=True, nogil=True, inline="always")
def _put_low(out, i, value, shift, top):
    """Or ``value`` << shift into out[i], rotated right by one (bit 0, the sign, to the
    top)."""
    u = value << shift
    out[i] |= (u >> 1) | ((u & 1) << top)


@numba.njit(cache=True, nogil=True)
def _unpack(plane, shift, width, out):
    """Or the ``width``-bit fields of ``plane`` (`_pack`) into ``out`` at bit ``shift``
    of the rotated element, rotated back."""
    n = out.size
    top = out.itemsize * 8 - 1
    per = 8 // width
    full = n // per  # bytes whose fields are all elements
    if width == 8:
        for j in range(n):
            _put_low(out, j, np.int64(plane[j]), shift, top)
    elif width == 4:
        for j in range(full):
            b = np.int64(plane[j])
            _put_low(out, 2 * j, b & 15, shift, top)
            _put_low(out, 2 * j + 1, b >> 4, shift, top)
    elif width == 2:
        for j in range(full):
            b = np.int64(plane[j])
            _put_low(out, 4 * j, b & 3, shift, top)
            _put_low(out, 4 * j + 1, (b >> 2) & 3, shift, top)
            _put_low(out, 4 * j + 2, (b >> 4) & 3, shift, top)
            _put_low(out, 4 * j + 3, b >> 6, shift, top)
    else:
        for j in range(full):
            b = np.int64(plane[j])
            for t in range(8):
                _put_low(out, 8 * j + t, (b >> t) & 1, shift, top)
    for i in range(full * per, n):
        t = i - full * per
        _put_low(out, i, (np.int64(plane[full]) >> (t * width)) & ((1 << width) - 1), shift,
                 top)


@numba.njit(cache=True, nogil=True, inline="always")
def _put(x, f, cum, words, n):
    """Renormalise (a word out at words[n], without a branch) and push a symbol of
    frequency f; (x, n)."""
    out = np.int64(x >= (f << (32 - PREC)))
    words[n] = x & 0xFFFF
    n += out
    x >>= out << 4
    q = np.uint32(x) // np.uint32(f)
    return (np.int64(q) << PREC) + x - np.int64(q) * f + cum, n


@numba.njit(cache=True, nogil=True)
def _encode_blocks(heads, block, freq, cum, scratch, words, counts):
    """rANS-code each block of ``block`` heads on LANES states (state j takes elements j,
    j + LANES, ... of the block; the four interleaved), each state's words in reading
    order (its final state, then the refills) after the previous one's; counts[b, j]:
    state j of block b's words. ``scratch``: room for LANES states' words of a block.
    Returns the words written."""
    n = heads.size
    w = 0
    for b in range(counts.shape[0]):
        start, end = b * block, min(n, (b + 1) * block)
        x0 = x1 = x2 = x3 = np.int64(LOWER)
        cap = scratch.size // LANES  # state j's words at scratch[j * cap:]
        k0, k1, k2, k3 = 0, cap, 2 * cap, 3 * cap
        i = end - 1
        while (i - start + 1) & 3:  # past the last whole group of four
            s = heads[i]
            j = (i - start) & 3
            if j == 0:
                x0, k0 = _put(x0, freq[s], cum[s], scratch, k0)
            elif j == 1:
                x1, k1 = _put(x1, freq[s], cum[s], scratch, k1)
            else:
                x2, k2 = _put(x2, freq[s], cum[s], scratch, k2)
            i -= 1
        while i > start:
            s3, s2, s1, s0 = heads[i], heads[i - 1], heads[i - 2], heads[i - 3]
            x3, k3 = _put(x3, freq[s3], cum[s3], scratch, k3)
            x2, k2 = _put(x2, freq[s2], cum[s2], scratch, k2)
            x1, k1 = _put(x1, freq[s1], cum[s1], scratch, k1)
            x0, k0 = _put(x0, freq[s0], cum[s0], scratch, k0)
            i -= 4
        for j in range(LANES):
            x = x0 if j == 0 else (x1 if j == 1 else (x2 if j == 2 else x3))
            k = k0 if j == 0 else (k1 if j == 1 else (k2 if j == 2 else k3))
            scratch[k] = x & 0xFFFF
            scratch[k + 1] = x >> 16
            k += 2 - j * cap
            for m in range(k):
                words[w + m] = scratch[j * cap + k - 1 - m]
            counts[b, j] = k
            w += k
    return w


@numba.njit(cache=True, nogil=True, inline="always")
def _take(x, e, words, w):
    """Pop the symbol of table entry e from state x, refill without a branch; (x, w)."""
    x = ((e & MASK) + 1) * (x >> PREC) + ((e >> PREC) & MASK)
    need = np.int64(x < LOWER)
    x = (x << (need << 4)) | (np.int64(words[w]) & (-need))
    return x, w + need


@numba.njit(cache=True, nogil=True, inline="always")
def _state(words, w):
    return (np.int64(words[w]) << 16) | words[w + 1]


@numba.njit(cache=True, nogil=True)
def _decode_blocks(words, out, starts, table, heads, block, codes):
    """Decode each block's heads into ``out`` (heads[rank]: the head's bits in place);
    starts[b, j]: where state j of block b's words begin (starts[b, LANES]: the next
    block's). ``table`` per slot: frequency - 1 | (slot - cumulative) << PREC | rank << 24.
    codes[b] is set non-zero where block b's streams are damaged."""
    n = out.size
    for b in range(starts.shape[0]):
        start, end = b * block, min(n, (b + 1) * block)
        w0, w1, w2, w3 = starts[b, 0], starts[b, 1], starts[b, 2], starts[b, 3]
        e0, e1, e2, e3 = w1, w2, w3, starts[b, 4]
        if w0 + 2 > e0 or w1 + 2 > e1 or w2 + 2 > e2 or w3 + 2 > e3:
            codes[b] = 1
            continue
        x0, x1 = _state(words, w0), _state(words, w1)
        x2, x3 = _state(words, w2), _state(words, w3)
        if x0 < LOWER or x1 < LOWER or x2 < LOWER or x3 < LOWER:
            codes[b] = 3  # then one refill would not always bring a state back up
            continue
        w0, w1, w2, w3 = w0 + 2, w1 + 2, w2 + 2, w3 + 2
        i = start
        # each state reads at most one word per element: check once per group of four
        while i + 4 <= end and w0 < e0 and w1 < e1 and w2 < e2 and w3 < e3:
            t0, t1 = np.int64(table[x0 & MASK]), np.int64(table[x1 & MASK])
            t2, t3 = np.int64(table[x2 & MASK]), np.int64(table[x3 & MASK])
            x0, w0 = _take(x0, t0, words, w0)
            x1, w1 = _take(x1, t1, words, w1)
            x2, w2 = _take(x2, t2, words, w2)
            x3, w3 = _take(x3, t3, words, w3)
            out[i] = heads[t0 >> 24]
            out[i + 1] = heads[t1 >> 24]
            out[i + 2] = heads[t2 >> 24]
            out[i + 3] = heads[t3 >> 24]
            i += 4
        # the rest one element at a time, each refill checked
        while i < end:
            j = (i - start) & 3
            x = x0 if j == 0 else (x1 if j == 1 else (x2 if j == 2 else x3))
            w = w0 if j == 0 else (w1 if j == 1 else (w2 if j == 2 else w3))
            we = e0 if j == 0 else (e1 if j == 1 else (e2 if j == 2 else e3))
            t = np.int64(table[x & MASK])
            x = ((t & MASK) + 1) * (x >> PREC) + ((t >> PREC) & MASK)
            if x < LOWER:
                if w >= we:
                    break
                x = (x << 16) | words[w]
                w += 1
            out[i] = heads[t >> 24]
            if j == 0:
                x0, w0 = x, w
            elif j == 1:
                x1, w1 = x, w
            elif j == 2:
                x2, w2 = x, w
            else:
                x3, w3 = x, w
            i += 1
        if i != end or (w0, w1, w2, w3) != (e0, e1, e2, e3) or x0 != LOWER \
                or x1 != LOWER or x2 != LOWER or x3 != LOWER:
            codes[b] = 2


def encode_lanes(raw: np.ndarray, dtype: str, block: int | None = None,
                 mantissa_bits: int | None = None) -> tuple[dict, dict[str, bytes]]:
    """Params and sections of the lanes coding of ``raw`` (the tensor's bytes, a flat
    uint8 array) in blocks of ``block`` elements (default BLOCK), with ``mantissa_bits``
    of the mantissa in the head (default: the dtype's, LAYOUTS; fewer where the heads
    would take more than MAX_RANKS values). A tensor of fewer than SMALL elements is coded
    with each number of head mantissa bits up to the default, and the smallest kept: its
    table is a large part of it."""
    width, eb, default = LAYOUTS[dtype]
    if mantissa_bits is None and raw.size // (width // 8) < SMALL:
        return min((encode_lanes(raw, dtype, block, k) for k in range(default + 1)),
                   key=lambda coded: sum(map(len, coded[1].values())))
    k = default if mantissa_bits is None else mantissa_bits
    v = raw.view(np.uint32 if width == 32 else np.uint16).reshape(-1)
    n = v.size
    block = BLOCK if block is None else block
    low = width - eb - k
    heads = np.empty(n, dtype=np.uint16)
    rest = np.empty(n, dtype=v.dtype)
    counts = np.zeros((4, 1 << (eb + k)), dtype=np.int64)
    _rotate(v, width, low, heads, rest, counts)
    counts = counts.sum(axis=0)
    while np.count_nonzero(counts) > MAX_RANKS:  # fewer mantissa bits in the head
        k -= 1
        low += 1
        counts = counts.reshape(-1, 2).sum(axis=1)
        _rotate(v, width, low, heads, rest, np.zeros((4, counts.size), dtype=np.int64))
    freq = _normalise(counts[None])[0]
    cum = _cumulative(freq[None])[0]
    nblocks = -(-n // block)
    words = np.empty(n + 2 * LANES * nblocks, dtype=np.uint16)
    scratch = np.empty(LANES * (min(n, block) // LANES + 4), dtype=np.uint16)
    lane_words = np.zeros((nblocks, LANES), dtype=np.int64)
    w = _encode_blocks(heads, block, freq, cum, scratch, words, lane_words)
    data = np.empty(_low_bytes(n, low), dtype=np.uint8)
    at = shift = 0
    for pw in _planes(low):
        size = _plane_bytes(n, pw)
        _pack(rest, shift, pw, data[at : at + size])
        at += size
        shift += pw
    planes = data.tobytes()
    low_zstd = False
    # zstd only where a sample of the planes (their first bytes: float32's lowest byte)
    # shrinks: most tensors' low bits are noise
    if len(planes) >= 1 << 12 and len(compress_bytes(planes[:LOW_SAMPLE], LOW_LEVEL)) < \
            0.98 * min(len(planes), LOW_SAMPLE):
        coded = compress_bytes(planes, LOW_LEVEL)
        if len(coded) < len(planes):
            planes, low_zstd = coded, True
    params = {"compression": "lanes", "mantissa_bits": k, "block": block,
              "low_zstd": low_zstd}
    tables = freq.astype("<u2").tobytes() + lane_words.astype("<u4").tobytes()
    sections = {"tables": compress_bytes(tables, TABLES_LEVEL),
                "words": words[:w].astype("<u2", copy=False).tobytes(), "low": planes}
    return params, sections


def check_lanes_params(params: object, dtype: str, where: str) -> dict:
    """Validate the params of a lanes-coded ``raw`` tensor of ``dtype``."""
    if dtype not in LAYOUTS:
        raise CorruptFileError(f"{where}: lanes coding is for float32, bfloat16 and float16.")
    if not isinstance(params, dict) or set(params) != PARAM_KEYS:
        raise CorruptFileError(f"{where}: lanes params must have the keys {sorted(PARAM_KEYS)}.")
    k = params["mantissa_bits"]
    if type(k) is not int or not 0 <= k <= MAX_HEAD_MANTISSA:
        raise CorruptFileError(f"{where}: mantissa_bits must be 0 to {MAX_HEAD_MANTISSA}.")
    if type(params["block"]) is not int or not MIN_BLOCK <= params["block"] <= MAX_BLOCK:
        raise CorruptFileError(f"{where}: block must be {MIN_BLOCK} to {MAX_BLOCK} elements.")
    if type(params["low_zstd"]) is not bool:
        raise CorruptFileError(f"{where}: low_zstd must be true or false.")
    return params


def decode_lanes(params: dict, sections: dict[str, bytes], dtype: str, count: int,
                 where: str) -> np.ndarray:
    """The little-endian bytes (uint8) of the ``count`` elements a lanes-coded tensor
    holds."""
    check_lanes_params(params, dtype, where)
    if set(sections) != {"tables", "words", "low"}:
        raise CorruptFileError(f"{where}: a lanes-coded tensor has the sections tables, "
                               "words and low.")
    width, eb, _ = LAYOUTS[dtype]
    k, block = params["mantissa_bits"], params["block"]
    low = width - eb - k
    nblocks = -(-count // block)
    nhead = 1 << (eb + k)
    tables = decompress_bytes(sections["tables"], 2 * nhead + 4 * LANES * nblocks, where)
    freq = np.frombuffer(tables, dtype="<u2", count=nhead).astype(np.int64)
    lane_words = np.frombuffer(tables, dtype="<u4", offset=2 * nhead).astype(np.int64)
    used = np.flatnonzero(freq)
    if count and (int(freq.sum()) != TOTAL or used.size > MAX_RANKS):
        raise CorruptFileError(f"{where}: the head table does not sum to {TOTAL} over at "
                               f"most {MAX_RANKS} heads.")
    words_raw = sections["words"]
    if len(words_raw) % 2:
        raise CorruptFileError(f"{where}: the words section holds 16-bit words.")
    words = np.frombuffer(words_raw, dtype="<u2").astype(np.uint16, copy=False)
    if int(lane_words.sum()) != words.size:
        raise CorruptFileError(f"{where}: the stream sizes do not add up to the words.")
    nbytes = _low_bytes(count, low)
    planes = sections["low"]
    if params["low_zstd"]:
        planes = decompress_bytes(planes, nbytes, where)
    elif len(planes) != nbytes:
        raise CorruptFileError(f"{where}: the low section holds {len(planes)} bytes; "
                               f"expected {nbytes}.")
    out = np.empty(count, dtype=np.uint32 if width == 32 else np.uint16)
    if not count:
        return out.view(np.uint8)
    ends = np.cumsum(lane_words)
    starts = np.append(ends - lane_words, ends[-1]).astype(np.int64)
    starts = np.concatenate([starts[:-1].reshape(nblocks, LANES),
                             starts[LANES::LANES].reshape(nblocks, 1)], axis=1)
    cum = _cumulative(freq[None])[0]
    symbols = np.repeat(np.arange(nhead, dtype=np.int64), freq)
    rank = np.zeros(nhead, dtype=np.int64)
    rank[used] = np.arange(used.size)
    slots = np.arange(TOTAL, dtype=np.int64)
    table = ((freq[symbols] - 1) | ((slots - cum[symbols]) << PREC)
             | (rank[symbols] << 24)).astype(np.uint32)
    heads = ((used << low) >> 1).astype(out.dtype)  # rotated back; the sign bit is low's
    codes = np.zeros(nblocks, dtype=np.int64)
    _decode_blocks(words, out, starts, table, heads, block, codes)
    bad = np.flatnonzero(codes)
    if bad.size:
        raise CorruptFileError(f"{where}: block {bad[0]}'s coded stream is damaged "
                               f"(code {codes[bad[0]]}).")
    data = np.frombuffer(planes, dtype=np.uint8)
    at = shift = 0
    for pw in _planes(low):
        size = _plane_bytes(count, pw)
        _unpack(data[at : at + size], shift, pw, out)
        at += size
        shift += pw
    return out.astype("<u4" if width == 32 else "<u2", copy=False).view(np.uint8)
