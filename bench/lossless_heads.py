"""Faster head coders for lanes, measured (issue 15; not the codec, writes no file).

    PYTHONPATH=$PWD .venv/bin/python bench/lossless_heads.py [--dtypes bfloat16,float32,float16]
                                               [--repeats 5] [--markdown] [--largest] [--x2]

Version 10's lanes (`weightdna.codec.lanes`) code each element's head (exponent and top
mantissa bits, after a 1-bit rotation putting the sign at the bottom) by rANS on four
states and join the other bits from 4-, 2- and 1-bit planes afterwards. Two table-driven
coders of the same heads, each with the element's raw low bits read from the same 64-bit
fetch as its code (no separate join of sub-byte planes; fp32 keeps two byte planes):

- **tANS** (FSE-style, 2^12 states, the same 12-bit frequencies as the rANS table): one
  lookup of a 32-bit entry a symbol, the next state from its base and bits; the size of
  rANS;
- **Huffman** (canonical, codes of at most 12 bits, zstd's huf 4X design: four streams
  read through 64-bit containers, one lookup and one shift a symbol): faster, larger.

Layout of both (`encode_tans`): per block of 2^18 elements four streams (stream j takes
elements j, j + 4, ...), one after the other in one bit string of 64-bit words (first bit
highest); per element its code (tANS: the first state, 12 bits, then per element its raw
bits and its next state's bits) and its raw bits: the low bits but whole bytes of them
where there are 10 or more (bf16 6, fp16 8, fp32 6 above two byte planes). The decoders
(`_kernel`) are compiled per layout, its shifts constants, 16-bit types written straight
to the output from table entries holding the head already rotated into place.

Each over all of MiniLM's float tensors cast to each dtype (every tensor, one call
each, as `decode_lanes` is called; ``--largest``: the word embeddings alone, 11.7M
weights, where the kernels dominate): bits per weight of the coded sections (no header),
encode and decode CPU time (`time.process_time`) per element, best of ``--repeats``
passes, the coders taking turns within each pass, every tensor checked bit for bit; and
ZipNN 0.5.4 (`threads=1`) on the same tensors in the same passes. ``--x2``: instead, the
bf16 word embeddings' heads alone (no raw bits) decoded two a lookup (zstd's X2 tables)
and one a lookup in the same loop (`x2_heads_only`).
"""

from __future__ import annotations

import sys

import numba
import numpy as np

from weightdna.codec.floatfields import PREC, TOTAL, _normalise
from weightdna.codec.lanes import (
    BLOCK,
    CHUNK,
    LANES,
    LAYOUTS,
    MAX_RANKS,
    TABLES_LEVEL,
    low_planes,
    smallest_head,
)
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError

HEADS = "tans"
GROUP = 3  # symbols a stream decodes from one 64-bit fetch: 3 · (PREC + 9) ≤ 64
MAX_RAW = 9  # raw bits an element at most in the streams (`_raw_layout`)
STEP = (TOTAL >> 1) + (TOTAL >> 3) + 3  # the spread's step (odd: it visits every state)
LITTLE = sys.byteorder == "little"


def _raw_layout(low: int) -> tuple[int, int]:
    """(byte planes, raw bits in the streams) of ``low`` low bits: none under 10, else as
    many whole bytes as leave 2 to 9 bits."""
    planes = 0 if low <= MAX_RAW else (low - 2) // 8
    return planes, low - 8 * planes


@numba.njit(cache=True, nogil=True)
def _split(v, width, low, planes, heads, raws, data, counts):
    """Each element rotated left by one bit: its bits from ``low`` up into ``heads`` (and
    counts[i % 4]), the ``planes`` lowest bytes into data's byte planes (n bytes each),
    the bits between into ``raws``; CHUNK elements at a time in loops LLVM vectorises."""
    n = v.size
    top = width - 1
    full = (np.int64(1) << width) - 1
    rmask = (np.int64(1) << (low - 8 * planes)) - 1
    rshift = 8 * planes
    rot = np.empty(CHUNK, dtype=np.uint32)
    for cs in range(0, n, CHUNK):
        m = min(CHUNK, n - cs)
        src = v[cs : cs + m]
        u = rot[:m]
        h = heads[cs : cs + m]
        r = raws[cs : cs + m]
        for k in range(m):
            x = np.int64(src[k])
            u[k] = ((x << 1) | (x >> top)) & full
        for k in range(m):
            h[k] = u[k] >> low
        for k in range(m):
            counts[k & 3, h[k]] += 1
        for k in range(m):
            r[k] = (u[k] >> rshift) & rmask
        for q in range(planes):
            d = data[q * n + cs : q * n + cs + m]
            for k in range(m):
                d[k] = (u[k] >> (8 * q)) & 255


@numba.njit(cache=True, nogil=True)
def _spread(freq):
    """The symbol of each of the TOTAL states: symbol s at freq[s] states, placed STEP
    apart (mod TOTAL) in symbol order."""
    symbols = np.empty(TOTAL, dtype=np.int64)
    pos = 0
    for s in range(freq.size):
        for _ in range(freq[s]):
            symbols[pos] = s
            pos = (pos + STEP) & (TOTAL - 1)
    return symbols


@numba.njit(cache=True, nogil=True)
def _encoder_tables(freq, following, bits, threshold, cum):
    """following[cum[s] + k]: the encoder's state (TOTAL + the decoder's state) of symbol
    s's k-th state; bits[s], threshold[s]: a state x in [TOTAL, 2 TOTAL) gives up
    bits[s] − (x < threshold[s]) bits for s."""
    symbols = _spread(freq)
    at = 0
    for s in range(freq.size):
        cum[s] = at
        at += freq[s]
        if freq[s]:
            high = 0
            while (freq[s] >> (high + 1)) > 0:
                high += 1
            bits[s] = PREC - high
            threshold[s] = freq[s] << bits[s]
    seen = cum.copy()
    for state in range(TOTAL):
        s = symbols[state]
        following[seen[s]] = TOTAL + state
        seen[s] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _put(words, w, acc, used, value, nb):
    """Append the nb (≤ 32) low bits of ``value`` to the bit string (words[w], the bits
    in ``acc``, ``used`` of them from the top); (w, acc, used)."""
    if nb == 0:
        return w, acc, used
    value = np.uint64(value)
    if used + nb < 64:
        return w, acc | (value << np.uint64(64 - used - nb)), used + nb
    rest = used + nb - 64
    words[w] = acc | (value >> np.uint64(rest))
    acc = (value << np.uint64(64 - rest)) if rest else np.uint64(0)
    return w + 1, acc, rest


@numba.njit(cache=True, nogil=True)
def _encode_blocks(heads, raws, rbits, block, freq, following, nbits, threshold, cum,
                   words, counts, values, lengths):
    """tANS-code each block's heads on LANES streams into the bit string ``words``;
    counts[b, j]: the bits of block b's stream j. values, lengths: room for one stream's
    element bits (the encoder runs from its last element to its first, the decoder the
    other way). Returns the words written (the last one's unused bits zero)."""
    n = heads.size
    w, acc, used = 0, np.uint64(0), 0
    for b in range(counts.shape[0]):
        start, end = b * block, min(n, (b + 1) * block)
        for j in range(LANES):
            x = np.int64(TOTAL)
            m = 0
            total = PREC
            i = start + j + (end - start - j - 1) // LANES * LANES
            while i >= start + j:
                s = heads[i]
                nb = nbits[s] - np.int64(x < threshold[s])
                values[m] = (np.int64(raws[i]) << nb) | (x & ((np.int64(1) << nb) - 1))
                lengths[m] = nb + rbits
                total += nb + rbits
                x = following[cum[s] + (x >> nb) - freq[s]]
                m += 1
                i -= LANES
            w, acc, used = _put(words, w, acc, used, x - TOTAL, PREC)
            for q in range(m - 1, -1, -1):
                w, acc, used = _put(words, w, acc, used, values[q], lengths[q])
            counts[b, j] = total
    if used:
        words[w] = acc
        w += 1
    return w


@numba.njit(cache=True, nogil=True, inline="always")
def _fetch(words, p, last):
    """The 64 bits of the bit string from bit p on (zeros past its last word)."""
    w = p >> 6
    s = np.uint64(p & 63)
    hi = words[np.uint64(w)]
    lo = words[np.uint64(w + 1)] if w < last else np.uint64(0)
    return (hi << s) | ((lo >> np.uint64(1)) >> (np.uint64(63) - s))


def _low_bytes(n: int, planes: int) -> int:
    return n * planes


def _heads(raw: np.ndarray, dtype: str, mantissa_bits: int | None
           ) -> tuple[int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both encoders' split of ``raw`` (the tensor's bytes) with ``mantissa_bits`` of the
    mantissa in the head (default: the dtype's; fewer where the heads would take more
    than MAX_RANKS values): (that number, the element count, the raw bits kept beside
    each head in the stream, the heads, those raw bits, the planes' bytes, the heads'
    counts)."""
    width, eb, default = LAYOUTS[dtype]
    k = default if mantissa_bits is None else mantissa_bits
    v = raw.view(np.uint32 if width == 32 else np.uint16).reshape(-1)
    n = v.size
    heads = np.empty(n, dtype=np.uint16)
    raws = np.empty(n, dtype=np.uint16)
    while True:
        low = width - eb - k
        planes, rbits = _raw_layout(low)
        counts = np.zeros((4, 1 << (eb + k)), dtype=np.int64)
        data = np.empty(_low_bytes(n, planes), dtype=np.uint8)
        _split(v, width, low, planes, heads, raws, data, counts)
        counts = counts.sum(axis=0)
        if np.count_nonzero(counts) <= MAX_RANKS:
            return k, n, rbits, heads, raws, data, counts
        k -= 1  # fewer mantissa bits in the head


def encode_tans(raw: np.ndarray, dtype: str, block: int | None = None,
                mantissa_bits: int | None = None) -> tuple[dict, dict[str, bytes]]:
    """Params and sections of the tANS lanes coding of ``raw`` (the tensor's bytes, a flat
    uint8 array) in blocks of ``block`` elements (default BLOCK), with ``mantissa_bits``
    of the mantissa in the head (default: the dtype's, LAYOUTS; fewer where the heads
    would take more than MAX_RANKS values). A tensor of fewer than SMALL elements is coded
    with each number of head mantissa bits up to the default, and the smallest kept."""
    smallest = smallest_head(encode_tans, raw, dtype, block, mantissa_bits)
    if smallest is not None:
        return smallest
    width, eb, default = LAYOUTS[dtype]
    k, n, rbits, heads, raws, data, counts = _heads(raw, dtype, mantissa_bits)
    block = BLOCK if block is None else block
    freq = _normalise(counts[None])[0] if n else np.zeros(counts.size, dtype=np.int64)
    if not n:
        freq[0] = TOTAL
    following = np.empty(TOTAL, dtype=np.int64)
    nbits = np.zeros(freq.size, dtype=np.int64)
    threshold = np.zeros(freq.size, dtype=np.int64)
    cum = np.zeros(freq.size, dtype=np.int64)
    _encoder_tables(freq, following, nbits, threshold, cum)
    nblocks = -(-n // block)
    per_stream = min(n, block) // LANES + 1
    words = np.zeros((n * (PREC + rbits) + LANES * nblocks * PREC) // 64 + 2, dtype=np.uint64)
    lane_bits = np.zeros((nblocks, LANES), dtype=np.int64)
    w = _encode_blocks(heads, raws, rbits, block, freq, following, nbits, threshold, cum,
                       words, lane_bits, np.empty(per_stream, dtype=np.int64),
                       np.empty(per_stream, dtype=np.int64))
    planes_bytes, low_zstd = low_planes(data)
    params = {"compression": "lanes", "heads": HEADS, "mantissa_bits": k, "block": block,
              "low_zstd": low_zstd}
    tables = freq.astype("<u2").tobytes() + lane_bits.astype("<u4").tobytes()
    sections = {"tables": compress_bytes(tables, TABLES_LEVEL),
                "words": words[:w].astype("<u8", copy=False).tobytes(), "low": planes_bytes}
    return params, sections


# ---- canonical Huffman heads (the same layout; the code's bits, then the raw bits) ----

HUFF_LOG = 12  # the longest code, and the decoder's table: 2^12 32-bit entries


@numba.njit(cache=True, nogil=True)
def _huffman_lengths(counts, lengths):
    """Huffman code lengths of ``counts`` (0 where a count is 0; one symbol: length 1),
    by the two-queue method over the counts sorted."""
    order = np.argsort(counts, kind="mergesort")
    symbols = np.empty(counts.size, dtype=np.int64)
    m = 0
    for k in range(counts.size):
        if counts[order[k]] > 0:
            symbols[m] = order[k]
            m += 1
    lengths[:] = 0
    if m == 1:
        lengths[symbols[0]] = 1
    if m <= 1:
        return
    weight = np.empty(2 * m, dtype=np.int64)
    parent = np.empty(2 * m, dtype=np.int64)
    for k in range(m):
        weight[k] = counts[symbols[k]]
    leaf, inner, made = 0, m, m
    for _ in range(m - 1):
        pair = np.empty(2, dtype=np.int64)
        for t in range(2):
            if leaf < m and (inner >= made or weight[leaf] <= weight[inner]):
                pair[t] = leaf
                leaf += 1
            else:
                pair[t] = inner
                inner += 1
        weight[made] = weight[pair[0]] + weight[pair[1]]
        parent[pair[0]] = parent[pair[1]] = made
        made += 1
    depth = np.zeros(2 * m, dtype=np.int64)
    for k in range(made - 2, -1, -1):
        depth[k] = depth[parent[k]] + 1
    for k in range(m):
        lengths[symbols[k]] = depth[k]


def huffman_lengths(counts: np.ndarray, limit: int = HUFF_LOG) -> np.ndarray:
    """Code lengths of at most ``limit`` bits: Huffman's, of the counts with every
    positive count raised to a floor that doubles until the longest code fits."""
    lengths = np.zeros(counts.size, dtype=np.int64)
    floor = 0
    while True:
        _huffman_lengths(np.where(counts > 0, np.maximum(counts, floor), 0), lengths)
        if lengths.max(initial=0) <= limit:
            return lengths
        floor = max(1, 2 * floor)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes (by length, then symbol) of these lengths."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        previous = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


@numba.njit(cache=True, nogil=True)
def _huffman_encode(heads, raws, rbits, block, lengths, codes, words, counts):
    """Each block's heads on LANES streams (stream j: elements j, j + 4, ...), each
    element its code then its raw bits, the streams one after the other in one bit
    string; counts[b, j]: stream j of block b's bits."""
    n = heads.size
    w, acc, used = 0, np.uint64(0), 0
    for b in range(counts.shape[0]):
        start, end = b * block, min(n, (b + 1) * block)
        for j in range(LANES):
            total = 0
            for i in range(start + j, end, LANES):
                s = heads[i]
                nb = lengths[s] + rbits
                w, acc, used = _put(words, w, acc, used,
                                    (codes[s] << rbits) | np.int64(raws[i]), nb)
                total += nb
            counts[b, j] = total
    if used:
        words[w] = acc
        w += 1
    return w


def encode_huffman(raw: np.ndarray, dtype: str, block: int | None = None,
                   mantissa_bits: int | None = None) -> tuple[dict, dict[str, bytes]]:
    """`encode_tans` with canonical Huffman codes of at most HUFF_LOG bits for the heads
    (the tables section: a code length a head, then the streams' bit counts)."""
    smallest = smallest_head(encode_huffman, raw, dtype, block, mantissa_bits)
    if smallest is not None:
        return smallest
    width, eb, default = LAYOUTS[dtype]
    k, n, rbits, heads, raws, data, counts = _heads(raw, dtype, mantissa_bits)
    block = BLOCK if block is None else block
    lengths = huffman_lengths(counts)
    codes = canonical_codes(lengths)
    nblocks = -(-n // block)
    words = np.zeros(n * (HUFF_LOG + rbits) // 64 + 2, dtype=np.uint64)
    lane_bits = np.zeros((nblocks, LANES), dtype=np.int64)
    w = _huffman_encode(heads, raws, rbits, block, lengths, codes, words, lane_bits)
    planes_bytes, low_zstd = low_planes(data)
    params = {"compression": "lanes", "heads": "huffman", "mantissa_bits": k,
              "block": block, "low_zstd": low_zstd}
    tables = lengths.astype(np.uint8).tobytes() + lane_bits.astype("<u4").tobytes()
    return params, {"tables": compress_bytes(tables, TABLES_LEVEL),
                    "words": words[:w].astype("<u8", copy=False).tobytes(),
                    "low": planes_bytes}




# ---- the same decoders specialised: each layout's shifts compile-time constants --------
# (numba takes a closure's variables as constants), 16-bit types written straight to the
# output, rotated, from a table entry holding the head already rotated into place.

_KERNELS: dict = {}


def _kernel(coder: str, low: int, planes: int, rbits: int):  # noqa: C901
    """The decoder of ``coder`` ("tans", "huffman") for one layout; table entries:
    bits 0-3 the code's length (Huffman) or the next state's bits (tANS), 4-15 the next
    state's base (tANS), 16-31 the head: rotated into place (``planes`` 0) or as is."""
    key = (coder, low, planes, rbits)
    if key in _KERNELS:
        return _KERNELS[key]
    tans = coder == "tans"
    direct = planes == 0
    peek = np.uint64(64 - (PREC if tans else HUFF_LOG))
    most = GROUP * ((PREC if tans else HUFF_LOG) + rbits)
    rb = np.uint64(64 - rbits)
    rs = np.uint64(rbits)
    rshift = np.uint32(8 * planes)
    lowc = np.uint32(low)
    m15 = np.uint32(15)
    s16 = np.uint32(16)

    @numba.njit(nogil=True, inline="always")
    def one(t, v, s):
        """(the element's bits, the next state or 0, the bits read, v shifted past them)."""
        nb = np.uint64(t & m15)
        if tans:
            rest = v << rs
            state = ((t >> np.uint32(4)) & np.uint32(TOTAL - 1)) + np.uint32(
                (rest >> np.uint64(1)) >> (np.uint64(63) - nb))
            r = np.uint32(v >> rb)
            v = rest << nb
        else:
            state = s
            v = v << nb
            r = np.uint32(v >> rb)
            v = v << rs
        if direct:
            value = (t >> s16) | (r >> np.uint32(1)) | ((r & np.uint32(1)) << np.uint32(15))
        else:
            value = ((t >> s16) << lowc) | (r << rshift)
        return value, state, np.int64(nb) + rbits, v

    @numba.njit(nogil=True)
    def run(words, out, starts, table, block, data, codes):
        n = out.size
        last = words.size - 1
        hbuf = np.empty(CHUNK, dtype=np.uint32)
        for b in range(starts.shape[0]):
            start, end = b * block, min(n, (b + 1) * block)
            p0, p1, p2, p3 = starts[b, 0], starts[b, 1], starts[b, 2], starts[b, 3]
            e0, e1, e2, e3 = p1, p2, p3, starts[b, 4]
            s0 = s1 = s2 = s3 = np.uint32(0)
            if tans:
                if p0 + PREC > e0 or p1 + PREC > e1 or p2 + PREC > e2 or p3 + PREC > e3:
                    codes[b] = 1
                    return
                s0 = np.uint32(_fetch(words, p0, last) >> peek)
                s1 = np.uint32(_fetch(words, p1, last) >> peek)
                s2 = np.uint32(_fetch(words, p2, last) >> peek)
                s3 = np.uint32(_fetch(words, p3, last) >> peek)
                p0, p1, p2, p3 = p0 + PREC, p1 + PREC, p2 + PREC, p3 + PREC
            i = start
            while i < end:
                first = i
                stop = min(end, i + CHUNK)
                while i < stop:
                    g = min((e0 - p0) // most, (e1 - p1) // most, (e2 - p2) // most,
                            (e3 - p3) // most, (stop - i) // (LANES * GROUP))
                    if g > 0 and (i - start) & 3 == 0:
                        for _ in range(g):
                            v0, v1 = _fetch(words, p0, last), _fetch(words, p1, last)
                            v2, v3 = _fetch(words, p2, last), _fetch(words, p3, last)
                            if direct:
                                o = out[np.uint64(i) : np.uint64(i + LANES * GROUP)]
                            else:
                                o = hbuf[np.uint64(i - first) :
                                         np.uint64(i - first + LANES * GROUP)]
                            for t in range(GROUP):
                                if tans:
                                    t0, t1, t2, t3 = table[s0], table[s1], table[s2], table[s3]
                                else:
                                    t0, t1 = table[v0 >> peek], table[v1 >> peek]
                                    t2, t3 = table[v2 >> peek], table[v3 >> peek]
                                x0, s0, c0, v0 = one(t0, v0, s0)
                                x1, s1, c1, v1 = one(t1, v1, s1)
                                x2, s2, c2, v2 = one(t2, v2, s2)
                                x3, s3, c3, v3 = one(t3, v3, s3)
                                p0 += c0
                                p1 += c1
                                p2 += c2
                                p3 += c3
                                o[np.uint64(4 * t)] = x0
                                o[np.uint64(4 * t + 1)] = x1
                                o[np.uint64(4 * t + 2)] = x2
                                o[np.uint64(4 * t + 3)] = x3
                            i += LANES * GROUP
                        continue
                    j = (i - start) & 3
                    p = p0 if j == 0 else (p1 if j == 1 else (p2 if j == 2 else p3))
                    s = s0 if j == 0 else (s1 if j == 1 else (s2 if j == 2 else s3))
                    pe = e0 if j == 0 else (e1 if j == 1 else (e2 if j == 2 else e3))
                    if p >= pe:
                        break
                    v = _fetch(words, p, last)
                    t = table[s] if tans else table[v >> peek]
                    if not tans and t & m15 == 0:
                        break
                    x, s, c, v = one(t, v, s)
                    if p + c > pe:
                        break
                    p += c
                    if direct:
                        out[i] = x
                    else:
                        hbuf[i - first] = x
                    if j == 0:
                        p0, s0 = p, s
                    elif j == 1:
                        p1, s1 = p, s
                    elif j == 2:
                        p2, s2 = p, s
                    else:
                        p3, s3 = p, s
                    i += 1
                if i < stop:
                    codes[b] = 2
                    return
                if not direct:
                    a = hbuf[: i - first]
                    oo = out[first:i]
                    if planes == 1:
                        b0 = data[first:i]
                        for k in range(i - first):
                            u = a[k] | np.uint32(b0[k])
                            oo[k] = (u >> np.uint32(1)) | ((u & np.uint32(1)) << np.uint32(
                                8 * out.itemsize - 1))
                    else:
                        b0, b1 = data[first:i], data[n + first : n + i]
                        for k in range(i - first):
                            u = a[k] | np.uint32(b0[k]) | (np.uint32(b1[k]) << np.uint32(8))
                            oo[k] = (u >> np.uint32(1)) | ((u & np.uint32(1)) << np.uint32(31))
            if (p0, p1, p2, p3) != (e0, e1, e2, e3) or s0 != 0 or s1 != 0 or s2 != 0 \
                    or s3 != 0:
                codes[b] = 2
                return

    _KERNELS[key] = run
    return run


@numba.njit(cache=True, nogil=True)
def _tans_entries(freq, low, direct, table):
    """`_kernel`'s tANS table: nb | base << 4 | head << 16 (rotated into place when
    ``direct``)."""
    symbols = _spread(freq)
    following = freq.copy()
    for state in range(TOTAL):
        s = symbols[state]
        x = following[s]
        following[s] += 1
        high = 0
        while (x >> (high + 1)) > 0:
            high += 1
        nb = PREC - high
        value = ((s << low) >> 1) if direct else s
        table[state] = np.uint32(nb | (((x << nb) - TOTAL) << 4) | (value << 16))


@numba.njit(cache=True, nogil=True)
def _huffman_entries(lengths, low, direct, table):
    """`_kernel`'s Huffman table (canonical codes: by length, then head): the code's
    length | head << 16 (rotated into place when ``direct``) at every index the code
    starts; 0 (refused) where no code starts."""
    table[:] = 0
    code = 0
    for length in range(1, HUFF_LOG + 1):
        for s in range(lengths.size):
            if lengths[s] == length:
                span = 1 << (HUFF_LOG - length)
                value = ((s << low) >> 1) if direct else s
                entry = np.uint32(length | (value << 16))
                for k in range(code * span, (code + 1) * span):
                    table[k] = entry
                code += 1
        code <<= 1


def decode_fast(params: dict, sections: dict[str, bytes], dtype: str, count: int,
                where: str) -> np.ndarray:
    """The bytes `encode_tans` or `encode_huffman` (by params["heads"]) coded, through
    `_kernel`. A measurement: it checks what keeps every read in bounds (each read inside
    its stream, the streams' ends and final states), not all a codec's reader would (the
    tables' sums, the words section's size)."""
    width, eb, _ = LAYOUTS[dtype]
    tans = params["heads"] == "tans"
    k, block = params["mantissa_bits"], params["block"]
    low = width - eb - k
    planes, rbits = _raw_layout(low)
    nblocks = -(-count // block)
    nhead = 1 << (eb + k)
    per = 2 if tans else 1
    tables = decompress_bytes(sections["tables"], per * nhead + 4 * LANES * nblocks, where)
    lane_bits = np.frombuffer(tables, dtype="<u4", offset=per * nhead).astype(np.int64)
    table = np.empty(1 << (PREC if tans else HUFF_LOG), dtype=np.uint32)
    if tans:
        _tans_entries(np.frombuffer(tables, dtype="<u2", count=nhead).astype(np.int64), low,
                      planes == 0, table)
    else:
        _huffman_entries(np.frombuffer(tables, dtype=np.uint8, count=nhead).astype(np.int64),
                         low, planes == 0, table)
    words = np.frombuffer(sections["words"], dtype="<u8")
    data = sections["low"]
    if params["low_zstd"]:
        data = decompress_bytes(data, _low_bytes(count, planes), where)
    out = np.empty(count, dtype=np.uint32 if width == 32 else np.uint16)
    starts = np.zeros((nblocks, LANES + 1), dtype=np.int64)
    starts[:, 1:] = np.cumsum(lane_bits).reshape(nblocks, LANES)
    starts[1:, 0] = starts[:-1, LANES]
    bad = np.zeros(nblocks, dtype=np.int64)
    if count:
        _kernel("tans" if tans else "huffman", low, planes, rbits)(
            words, out, starts, table, block, np.frombuffer(data, dtype=np.uint8), bad)
    if bad.any():
        raise CorruptFileError(f"{where}: damaged")
    return out.view(np.uint8)


# ---- two heads a lookup (zstd's X2 tables), the heads alone: how fast can they go? ------


@numba.njit(cache=True, nogil=True)
def _encode_one_stream(symbols, lengths, codes, out):
    """``symbols``' canonical codes, first bit highest, in ``out``; the words written."""
    w, acc, used = 0, np.uint64(0), 0
    for i in range(symbols.size):
        s = symbols[i]
        w, acc, used = _put(out, w, acc, used, codes[s], lengths[s])
    if used:
        out[w] = acc
        w += 1
    return w


def _x2_table(lengths: np.ndarray, codes: np.ndarray, pairs: bool = True) -> np.ndarray:
    """Per HUFF_LOG-bit index: the bits it takes | heads decoded (1 or 2) << 8 | the
    first head << 32 | the second << 48: two where both codes fit in the index (and
    ``pairs``)."""
    first = np.zeros(1 << HUFF_LOG, dtype=np.int64)
    length = np.zeros(1 << HUFF_LOG, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        span = 1 << (HUFF_LOG - int(lengths[s]))
        first[int(codes[s]) * span : (int(codes[s]) + 1) * span] = s
        length[int(codes[s]) * span : (int(codes[s]) + 1) * span] = lengths[s]
    index = np.arange(1 << HUFF_LOG)
    rest = (index << length) & ((1 << HUFF_LOG) - 1)
    two = (length + length[rest] <= HUFF_LOG) & pairs
    return np.where(two, (length + length[rest]) | (2 << 8) | (first << 32) | (first[rest] << 48),
                    length | (1 << 8) | (first << 32)).astype(np.uint64)


@numba.njit(cache=True, nogil=True)
def _x2_decode(words, starts, at, ends, table, out):
    """Four streams, stream j's heads into out[at[j]:ends[j]], 1 or 2 heads a lookup
    (both written, the pointer moved by the count), four lookups a 64-bit fetch, while
    every stream has room for 8 more; returns how far each got."""
    p0, p1, p2, p3 = starts[0], starts[1], starts[2], starts[3]
    q0, q1, q2, q3 = at[0], at[1], at[2], at[3]
    peek = np.uint64(64 - HUFF_LOG)
    last = words.size - 1
    while q0 + 8 <= ends[0] and q1 + 8 <= ends[1] and q2 + 8 <= ends[2] and q3 + 8 <= ends[3]:
        v0, v1 = _fetch(words, p0, last), _fetch(words, p1, last)
        v2, v3 = _fetch(words, p2, last), _fetch(words, p3, last)
        for _ in range(4):
            e0, e1 = table[v0 >> peek], table[v1 >> peek]
            e2, e3 = table[v2 >> peek], table[v3 >> peek]
            out[np.uint64(q0)] = np.uint16(e0 >> np.uint64(32))
            out[np.uint64(q0 + 1)] = np.uint16(e0 >> np.uint64(48))
            out[np.uint64(q1)] = np.uint16(e1 >> np.uint64(32))
            out[np.uint64(q1 + 1)] = np.uint16(e1 >> np.uint64(48))
            out[np.uint64(q2)] = np.uint16(e2 >> np.uint64(32))
            out[np.uint64(q2 + 1)] = np.uint16(e2 >> np.uint64(48))
            out[np.uint64(q3)] = np.uint16(e3 >> np.uint64(32))
            out[np.uint64(q3 + 1)] = np.uint16(e3 >> np.uint64(48))
            c0, c1 = e0 & np.uint64(31), e1 & np.uint64(31)
            c2, c3 = e2 & np.uint64(31), e3 & np.uint64(31)
            q0 += np.int64((e0 >> np.uint64(8)) & np.uint64(3))
            q1 += np.int64((e1 >> np.uint64(8)) & np.uint64(3))
            q2 += np.int64((e2 >> np.uint64(8)) & np.uint64(3))
            q3 += np.int64((e3 >> np.uint64(8)) & np.uint64(3))
            v0, v1, v2, v3 = v0 << c0, v1 << c1, v2 << c2, v3 << c3
            p0 += np.int64(c0)
            p1 += np.int64(c1)
            p2 += np.int64(c2)
            p3 += np.int64(c3)
    return np.array([q0, q1, q2, q3])


def x2_heads_only(t, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """(ns a head two a lookup, ns a head one a lookup) decoding bf16 ``t``'s heads alone
    (no raw bits) in four contiguous quarters, best of ``repeats``, the same loop."""
    import time

    import torch

    x = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).ravel()
    x = x.astype(np.int64)
    heads = ((((x << 1) | (x >> 15)) & 0xFFFF) >> 6)[: x.size // 4 * 4]
    lengths = huffman_lengths(np.bincount(heads, minlength=1024).astype(np.int64))
    codes = canonical_codes(lengths)
    quarter = heads.size // 4
    words = np.zeros(heads.size * HUFF_LOG // 64 + 8, dtype=np.uint64)
    starts, at = np.zeros(4, np.int64), 0
    for j in range(4):
        starts[j] = 64 * at
        at += _encode_one_stream(heads[j * quarter : (j + 1) * quarter], lengths, codes,
                                 words[at:])
    bounds = np.arange(5, dtype=np.int64) * quarter
    out = np.zeros(heads.size + 16, dtype=np.uint16)
    timings = []
    for table in (_x2_table(lengths, codes), _x2_table(lengths, codes, pairs=False)):
        reached = _x2_decode(words, starts, bounds[:4], bounds[1:], table, out)
        assert all(np.array_equal(out[bounds[j] : reached[j]], heads[bounds[j] : reached[j]])
                   for j in range(4))
        best = 9e9
        for _ in range(repeats):
            start = time.process_time()
            reached = _x2_decode(words, starts, bounds[:4], bounds[1:], table, out)
            best = min(best, time.process_time() - start)
        timings.append(1e9 * best / int((reached - bounds[:4]).sum()))
    return timings[0], timings[1]


CODERS = {
    "rANS (version 10)": ("weightdna.codec.lanes", "encode_lanes", "decode_lanes"),
    "tANS": (None, "encode_tans", "decode_fast"),
    "Huffman": (None, "encode_huffman", "decode_fast"),
}


def _zipnn_pass(raws: list[np.ndarray], kind: str, clock) -> tuple[int, float, float, bool]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import zipnn as z
    size, enc, dec, ok = 0, 0.0, 0.0, True
    for raw in raws:
        buffer = bytearray(raw.tobytes())  # it reorders its input in place: a copy
        start = clock()
        data = z.ZipNN(input_format="byte", bytearray_dtype=kind, threads=1).compress(buffer)
        middle = clock()
        back = z.ZipNN(input_format="byte", bytearray_dtype=kind, threads=1).decompress(data)
        enc, dec = enc + middle - start, dec + clock() - middle
        ok &= bytes(back) == raw.tobytes()
        size += len(data)
    return size, enc, dec, ok


def main() -> None:
    import argparse
    import importlib
    import os
    import time

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32,float16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--x2", action="store_true",
                        help="only: bf16 word embeddings' heads alone, two a lookup vs one")
    parser.add_argument("--largest", action="store_true",
                        help="the largest tensor alone (the word embeddings, 11.7M weights)")
    args = parser.parse_args()
    from safetensors.torch import load_file

    from weightdna.weights.minilm import minilm_path

    clock = time.process_time
    source = [t for t in load_file(str(minilm_path() / "model.safetensors")).values()
              if t.is_floating_point()]
    if args.largest or args.x2:
        source = [max(source, key=torch.Tensor.numel)]
    if args.x2:
        for _ in range(2):
            two, one = x2_heads_only(source[0], args.repeats)
            print(f"bf16 heads alone, four streams: two a lookup {two:.3f} ns a head, one a "
                  f"lookup {one:.3f} (load {os.getloadavg()[0]:.1f})")
        return
    functions = {}
    for label, (module, enc, dec) in CODERS.items():
        where = importlib.import_module(module) if module else sys.modules[__name__]
        functions[label] = (getattr(where, enc), getattr(where, dec))
    loads = [os.getloadavg()[0]]
    rows = []
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        width = torch.finfo(dtype).bits // 8
        bits_kind = torch.int32 if width == 4 else torch.int16
        raws = [t.to(dtype).contiguous().view(bits_kind).numpy().view(np.uint8).ravel()
                for t in source]
        n = sum(r.size for r in raws) // width
        for enc, dec in functions.values():  # compiled before anything is timed
            warm = max(raws, key=len)[: 4096 * width]
            dec(*enc(warm, name), name, warm.size // width, "warm")
        best = {label: [0, 9e9, 9e9] for label in [*functions, "ZipNN"]}
        for _ in range(args.repeats):
            for label, (enc, dec) in functions.items():
                start = clock()
                coded = [enc(r, name) for r in raws]
                middle = clock()
                back = [dec(p, s, name, r.size // width, "t")
                        for (p, s), r in zip(coded, raws, strict=True)]
                end = clock()
                assert all(b.tobytes() == r.tobytes()
                           for b, r in zip(back, raws, strict=True)), label
                size = sum(len(x) for _, s in coded for x in s.values())
                b = best[label]
                b[0], b[1], b[2] = size, min(b[1], middle - start), min(b[2], end - middle)
            size, e, d, ok = _zipnn_pass(raws, name, clock)
            assert ok
            b = best["ZipNN"]
            b[0], b[1], b[2] = size, min(b[1], e), min(b[2], d)
        loads.append(os.getloadavg()[0])
        zipnn_dec = best["ZipNN"][2]
        for label, (size, e, d) in best.items():
            rows.append((name, label, 8 * size / n, 100 * (size / best["ZipNN"][0] - 1),
                         1e9 * e / n, 1e9 * d / n, zipnn_dec / d))
            print(f"{name} {label}: {rows[-1][2]:.4f} bits/weight ({rows[-1][3]:+.2f}% vs "
                  f"ZipNN), encode {rows[-1][4]:.2f} ns, decode {rows[-1][5]:.2f} ns an "
                  f"element, decode / ZipNN {rows[-1][6]:.2f}", flush=True)
    print(f"load average: {' → '.join(f'{x:.1f}' for x in loads)}", file=sys.stderr)
    if args.markdown:
        print("| dtype | coder | bits/weight | vs ZipNN size | encode ns/weight | "
              "decode ns/weight | decode speed / ZipNN |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name, label, bpw, rel, e, d, ratio in rows:
            print(f"| {name} | {label} | {bpw:.4f} | {rel:+.2f}% | {e:.2f} | {d:.2f} | "
                  f"{ratio:.2f} |")


if __name__ == "__main__":
    main()
