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

Speed (CPU time, BENCHMARKS.md "Lossless vs ZipNN" and its issue-15 subsection of
2026-12-05): the decoder's four chains run unchecked in groups of four while every state
has words enough left (a state reads at most one word a step), index without the test for
a negative index, and look up one 64-bit entry a slot (frequency, offset, head in place),
refill by a select: 1.5 ns an element on MiniLM's word embeddings in bf16, 2.7 before (a
branching refill: 6.0). They decode CHUNK heads into a buffer; the low bits are then
joined in loops LLVM vectorises (a byte table spreads the 4-, 2- and 1-bit planes'
bytes). The encoder splits each chunk in vectorised loops too, and divides by a float64
reciprocal (`_quotient`). 8 states were no faster than 4 (the version-10 coder), nor one
shared stream with branching refills; 32 states in a numba array, 2.2 ns; LLVM vectorises
none of these (no gathers). The chains alone take as long as ZipNN's whole bf16 or fp16
decode (1.4-1.6 ns an element), so its rate there is out of reach here. zstd's Huffman
decoding of a plane of exponent bytes took 1.4 ns an element, but a byte plane of heads
(the exponent and top 3 mantissa bits, ranked) coded so came out no smaller than ZipNN on
fp16 (+0.15%) and fp32 (-0.05%).

Each block's streams run from fixed states back to them, so a stream decoded from forged
words ends in other states or at another word count, which the decoder checks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numba
import numpy as np

from weightdna.codec.floatfields import LOWER, PREC, TOTAL, _normalise
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
# Elements the coder splits (and the decoder joins) at a time, in buffers that stay in
# cache; a multiple of 8 (a chunk starts on a whole byte of every plane).
CHUNK = 1 << 12
PARAM_KEYS = {"compression", "mantissa_bits", "block", "low_zstd"}
MASK = TOTAL - 1
LITTLE = sys.byteorder == "little"  # bytes read as wider words: the first is the lowest


def _planes(low: int) -> list[int]:
    """The bit widths of the planes ``low`` low bits are stored in, lowest bits first.

    The low section's layout: the planes one after the other, each of `_plane_bytes`; a
    plane of width w < 8 holds 8 // w elements a byte, the first in the lowest bits, the
    last byte's unused bits zero."""
    return [8] * (low // 8) + [w for w in (4, 2, 1) if low % 8 & w]


def _plane_bytes(n: int, width: int) -> int:
    return -(-n * width // 8)


def _low_bytes(n: int, low: int) -> int:
    return sum(_plane_bytes(n, w) for w in _planes(low))


@numba.njit(cache=True, nogil=True)
def _split(v, width, low, heads, data, bytes8, offsets, counts):
    """Each element rotated left by one bit (the sign to the bottom): its bits from
    ``low`` up into heads (and counts: four histograms, counts[i % 4], so that repeats do
    not wait on each other), the others into the planes of ``data`` (`_planes`' layout:
    ``bytes8`` byte planes of n bytes, then the 4-, 2- and 1-bit planes at ``offsets``,
    -1 where absent), CHUNK elements at a time, each step a loop LLVM vectorises."""
    n = v.size
    top = width - 1
    full = (np.int64(1) << width) - 1
    rot = np.empty(CHUNK, dtype=np.uint32)
    fields = np.zeros(CHUNK + 8, dtype=np.uint8)
    for cs in range(0, n, CHUNK):
        m = min(CHUNK, n - cs)
        src = v[cs : cs + m]
        u = rot[:m]
        h = heads[cs : cs + m]
        for k in range(m):
            x = np.int64(src[k])
            u[k] = ((x << 1) | (x >> top)) & full
        for k in range(m):
            h[k] = u[k] >> low
        for k in range(m):
            counts[k & 3, h[k]] += 1
        if bytes8 >= 1:
            d = data[cs : cs + m]
            for k in range(m):
                d[k] = u[k] & 255
        if bytes8 >= 2:
            d = data[n + cs : n + cs + m]
            for k in range(m):
                d[k] = (u[k] >> 8) & 255
        if bytes8 >= 3:
            d = data[2 * n + cs : 2 * n + cs + m]
            for k in range(m):
                d[k] = (u[k] >> 16) & 255
        shift = 8 * bytes8
        for q in range(3):
            if offsets[q] < 0:
                continue
            pw = 4 >> q
            mask = (1 << pw) - 1
            f = fields[:m]
            for k in range(m):
                f[k] = (u[k] >> shift) & mask
            fields[m : m + 8] = 0
            per = 8 // pw
            nb = -(-m // per)  # a chunk starts on a whole byte (CHUNK % 8 == 0)
            d = data[offsets[q] + cs // per : offsets[q] + cs // per + nb]
            if pw == 4 and LITTLE:  # two fields' bytes read as one 16-bit word
                pairs = fields.view(np.uint16)
                for j in range(nb):
                    word = pairs[j]
                    d[j] = (word | (word >> 4)) & 255
            elif pw == 4:
                for j in range(nb):
                    d[j] = fields[2 * j] | (fields[2 * j + 1] << 4)
            elif pw == 2 and LITTLE:  # four fields' bytes read as one 32-bit word
                quads = fields.view(np.uint32)
                for j in range(nb):
                    word = quads[j]
                    word |= word >> 6  # fields 0, 1 into bits 0-3; 2, 3 into bits 16-19
                    d[j] = (word | (word >> 12)) & 255
            elif pw == 2:
                for j in range(nb):
                    d[j] = (fields[4 * j] | (fields[4 * j + 1] << 2) | (fields[4 * j + 2] << 4)
                            | (fields[4 * j + 3] << 6))
            else:
                for j in range(nb):
                    byte = 0
                    for t in range(8):
                        byte |= fields[8 * j + t] << t
                    d[j] = byte
            shift += pw


def _offsets(n: int, low: int) -> np.ndarray:
    """Where the 4-, 2- and 1-bit planes of n elements' ``low`` low bits begin in the low
    section (after its low // 8 byte planes), -1 where absent."""
    offsets, at = np.full(3, -1, dtype=np.int64), n * (low // 8)
    for pw in _planes(low)[low // 8:]:
        offsets[(4, 2, 1).index(pw)] = at
        at += _plane_bytes(n, pw)
    return offsets


# q = x // f, for 0 <= x < 2^32 and 1 <= f <= 2^PREC, as int(x * (1 / f) + QUOTIENT_NUDGE)
# in float64: x / f's fraction is 0 or at least 2^-PREC below 1, the product is within
# 2^-20 of x / f, so the nudge (2^-13) lifts an exact quotient's product over it and
# leaves every other below the next integer (no integer division: 4 chains of it were
# the encoder's limit).
QUOTIENT_NUDGE = 2.0 ** -(PREC + 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _quotient(x, r):
    """x // f for 0 <= x < 2^32, r = 1 / f (1 <= f <= 2^PREC), QUOTIENT_NUDGE."""
    return np.int64(x * r + QUOTIENT_NUDGE)


@numba.njit(cache=True, nogil=True, inline="always")
def _put(x, f, r, cum, words, n):
    """Renormalise (a word out at words[n], without a branch) and push a symbol of
    frequency f (r: 1 / f); (x, n)."""
    out = np.int64(x >= (f << (32 - PREC)))
    words[np.uint64(n)] = x & 0xFFFF
    n += out
    x >>= out << 4
    q = _quotient(x, r)
    return (q << PREC) + x - q * f + cum, n


@numba.njit(cache=True, nogil=True)
def _encode_blocks(heads, block, freq, cum, scratch, words, counts):
    """rANS-code each block of ``block`` heads on LANES states (state j takes elements j,
    j + LANES, ... of the block; the four interleaved), each state's words in reading
    order (its final state, then the refills) after the previous one's; counts[b, j]:
    state j of block b's words. ``scratch``: room for LANES states' words of a block.
    Returns the words written."""
    n = heads.size
    w = 0
    rcp = 1.0 / np.maximum(freq, 1)
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
                x0, k0 = _put(x0, freq[s], rcp[s], cum[s], scratch, k0)
            elif j == 1:
                x1, k1 = _put(x1, freq[s], rcp[s], cum[s], scratch, k1)
            else:
                x2, k2 = _put(x2, freq[s], rcp[s], cum[s], scratch, k2)
            i -= 1
        while i > start:
            s3, s2 = heads[np.uint64(i)], heads[np.uint64(i - 1)]
            s1, s0 = heads[np.uint64(i - 2)], heads[np.uint64(i - 3)]
            x3, k3 = _put(x3, freq[s3], rcp[s3], cum[s3], scratch, k3)
            x2, k2 = _put(x2, freq[s2], rcp[s2], cum[s2], scratch, k2)
            x1, k1 = _put(x1, freq[s1], rcp[s1], cum[s1], scratch, k1)
            x0, k0 = _put(x0, freq[s0], rcp[s0], cum[s0], scratch, k0)
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
    """Pop the symbol of table entry e (`_decode_blocks`) from state x, refill without a
    branch; (x, w). Indexes unsigned: no test for a negative index."""
    x = (e & 0xFFFF) * (x >> PREC) + ((e >> 16) & 0xFFFF)
    refilled = (x << 16) | np.int64(words[np.uint64(w)])
    need = x < LOWER
    return (refilled if need else x), w + np.int64(need)  # a select: 1.52 ns, 1.69 masked


@numba.njit(cache=True, nogil=True, inline="always")
def _state(words, w):
    return (np.int64(words[w]) << 16) | words[w + 1]


def _spread(width: int) -> np.ndarray:
    """Per byte value, its 8 // width fields of ``width`` bits (the first lowest), a byte
    each, as one native integer of 8 // width bytes (so one load and one store a byte)."""
    per = 8 // width
    values = np.arange(256)
    fields = (values[:, None] >> (np.arange(per) * width)) & ((1 << width) - 1)
    return fields.astype(np.uint8).view({2: np.uint16, 4: np.uint32, 8: np.uint64}[per])[:, 0]


SPREAD4, SPREAD2, SPREAD1 = _spread(4), _spread(2), _spread(1)


@numba.njit(cache=True, nogil=True, inline="always")
def _spread_bytes(data, base, count, spread, dest):
    for g in range(count):
        dest[g] = spread[data[base + g]]


@numba.njit(cache=True, nogil=True)
def _expand(data, at, width, start, m, dest):
    """dest[:m]: the ``width``-bit fields (width 4, 2 or 1: `_planes`' layout, the plane at
    data[at:]) of elements start … start + m − 1, a byte each; whole bytes at a time
    (SPREAD tables) where ``start`` begins one and ``dest`` holds whole bytes' fields."""
    per = 8 // width
    mask = (1 << width) - 1
    j = 0
    if start % per == 0 and dest.size % 8 == 0:
        base = at + start // per
        if width == 4:
            _spread_bytes(data, base, m // 2, SPREAD4, dest.view(np.uint16))
        elif width == 2:
            _spread_bytes(data, base, m // 4, SPREAD2, dest.view(np.uint32))
        else:
            _spread_bytes(data, base, m // 8, SPREAD1, dest.view(np.uint64))
        j = m // per * per
    for k in range(j, m):
        i = start + k
        dest[k] = (data[at + i // per] >> ((i % per) * width)) & mask


@numba.njit(cache=True, nogil=True)
def _finish(out, acc, start, m, data, n, bytes8, offsets, fields):
    """out[start : start + m]: acc[:m] (the heads in place) with each element's low bits
    (byte planes at data[q * n:], the 4-, 2- and 1-bit planes at ``offsets``, -1 where
    absent), rotated right by one (bit 0, the sign, to the top); ``fields``: room for
    two planes' m bytes, a multiple of 8 each. The 4-, 2- and 1-bit fields are first
    spread to a byte each (`_expand`), then joined in one loop that LLVM vectorises: with
    constant shifts (in 32 bits) for the usual layouts (float32 and bfloat16 with 2 head
    mantissa bits, float16 with 3), in steps for the others."""
    a = acc[:m]
    o = out[start : start + m]
    f4, f2 = fields[0, :m], fields[1, :m]
    if out.itemsize == 4 and bytes8 == 2 and offsets[0] >= 0 and offsets[1] >= 0 \
            and offsets[2] < 0:  # float32, 22 low bits: 8, 8, 4, 2
        _expand(data, offsets[0], 4, start, m, fields[0])
        _expand(data, offsets[1], 2, start, m, fields[1])
        b0, b1 = data[start : start + m], data[n + start : n + start + m]
        for k in range(m):
            u = (a[k] | np.uint32(b0[k]) | (np.uint32(b1[k]) << 8)
                 | (np.uint32(f4[k]) << 16) | (np.uint32(f2[k]) << 20))
            o[k] = (u >> 1) | ((u & 1) << 31)
        return
    if out.itemsize == 2 and bytes8 == 0 and offsets[0] >= 0 and offsets[1] >= 0 \
            and offsets[2] < 0:  # bfloat16, 6 low bits: 4, 2
        _expand(data, offsets[0], 4, start, m, fields[0])
        _expand(data, offsets[1], 2, start, m, fields[1])
        for k in range(m):
            u = a[k] | np.uint32(f4[k]) | (np.uint32(f2[k]) << 4)
            o[k] = (u >> 1) | ((u & 1) << 15)
        return
    if out.itemsize == 2 and bytes8 == 1 and offsets[0] < 0 and offsets[1] < 0 \
            and offsets[2] < 0:  # float16 with 3 head mantissa bits: 8 low bits
        b0 = data[start : start + m]
        for k in range(m):
            u = a[k] | np.uint32(b0[k])
            o[k] = (u >> 1) | ((u & 1) << 15)
        return
    for q in range(bytes8):
        bq = data[q * n + start : q * n + start + m]
        for k in range(m):
            a[k] |= np.uint32(bq[k]) << (8 * q)
    shift = 8 * bytes8
    for q in range(3):
        if offsets[q] >= 0:
            width = 4 >> q
            _expand(data, offsets[q], width, start, m, fields[0])
            for k in range(m):
                a[k] |= np.uint32(f4[k]) << shift
            shift += width
    if out.itemsize == 4:
        for k in range(m):
            o[k] = (a[k] >> 1) | ((a[k] & 1) << 31)
    else:
        for k in range(m):
            o[k] = (a[k] >> 1) | ((a[k] & 1) << 15)


@numba.njit(cache=True, nogil=True)
def _tables(freq, low, lane_words, table, starts):
    """The decoder's table (`_decode_blocks`) of the frequencies ``freq`` (summing to
    TOTAL), and starts[b, j]: where state j of block b's words begin (lane_words[b, j]
    of them; starts[b, LANES]: the next block's)."""
    slot = 0
    for s in range(freq.size):
        entry = freq[s] | (s << (32 + low))
        for k in range(freq[s]):
            table[slot + k] = entry | (k << 16)
        slot += freq[s]
    at = 0
    for b in range(lane_words.shape[0]):
        for j in range(LANES):
            starts[b, j] = at
            at += lane_words[b, j]
        starts[b, LANES] = at


@numba.njit(cache=True, nogil=True)
def _decode_blocks(words, out, starts, table, block, codes, data, bytes8, offsets):
    """Decode each block's elements into ``out``, CHUNK at a time: the heads into a
    buffer, then joined with their low bits (`_finish`). starts[b, j]: where state j of
    block b's words begin (starts[b, LANES]: the next block's). ``table`` per slot:
    frequency | (slot - cumulative) << 16 | head << (32 + its low bits) (`_tables`).
    codes[b] is set non-zero where block b's streams are damaged; the decoding stops
    there.

    Groups of four elements (one a state) run unchecked while every state has words
    enough left for them (a state reads at most one word a step); the rest one element
    at a time, each refill checked."""
    n = out.size
    hbuf = np.empty(CHUNK, dtype=np.uint32)
    fields = np.empty((2, CHUNK), dtype=np.uint8)
    for b in range(starts.shape[0]):
        start, end = b * block, min(n, (b + 1) * block)
        w0, w1, w2, w3 = starts[b, 0], starts[b, 1], starts[b, 2], starts[b, 3]
        e0, e1, e2, e3 = w1, w2, w3, starts[b, 4]
        if w0 + 2 > e0 or w1 + 2 > e1 or w2 + 2 > e2 or w3 + 2 > e3:
            codes[b] = 1
            return
        x0, x1 = _state(words, w0), _state(words, w1)
        x2, x3 = _state(words, w2), _state(words, w3)
        if x0 < LOWER or x1 < LOWER or x2 < LOWER or x3 < LOWER:
            codes[b] = 3  # then one refill would not always bring a state back up
            return
        w0, w1, w2, w3 = w0 + 2, w1 + 2, w2 + 2, w3 + 2
        i = start
        while i < end:
            first = i
            stop = min(end, i + CHUNK)
            while i < stop:
                g = min(e0 - w0, e1 - w1, e2 - w2, e3 - w3, (stop - i) // 4)
                if g > 0 and (i - start) & 3 == 0:
                    o = hbuf[np.uint64(i - first) : np.uint64(i - first + 4 * g)]
                    for k in range(g):
                        t0, t1 = table[np.uint64(x0 & MASK)], table[np.uint64(x1 & MASK)]
                        t2, t3 = table[np.uint64(x2 & MASK)], table[np.uint64(x3 & MASK)]
                        x0, w0 = _take(x0, t0, words, w0)
                        x1, w1 = _take(x1, t1, words, w1)
                        x2, w2 = _take(x2, t2, words, w2)
                        x3, w3 = _take(x3, t3, words, w3)
                        o[np.uint64(4 * k)] = t0 >> 32
                        o[np.uint64(4 * k + 1)] = t1 >> 32
                        o[np.uint64(4 * k + 2)] = t2 >> 32
                        o[np.uint64(4 * k + 3)] = t3 >> 32
                    i += 4 * g
                    continue
                j = (i - start) & 3
                x = x0 if j == 0 else (x1 if j == 1 else (x2 if j == 2 else x3))
                w = w0 if j == 0 else (w1 if j == 1 else (w2 if j == 2 else w3))
                we = e0 if j == 0 else (e1 if j == 1 else (e2 if j == 2 else e3))
                t = table[x & MASK]
                x = (t & 0xFFFF) * (x >> PREC) + ((t >> 16) & 0xFFFF)
                if x < LOWER:
                    if w >= we:
                        break
                    x = (x << 16) | words[w]
                    w += 1
                hbuf[i - first] = t >> 32
                if j == 0:
                    x0, w0 = x, w
                elif j == 1:
                    x1, w1 = x, w
                elif j == 2:
                    x2, w2 = x, w
                else:
                    x3, w3 = x, w
                i += 1
            if i < stop:
                codes[b] = 2
                return
            _finish(out, hbuf, first, i - first, data, n, bytes8, offsets, fields)
        if (w0, w1, w2, w3) != (e0, e1, e2, e3) or x0 != LOWER or x1 != LOWER \
                or x2 != LOWER or x3 != LOWER:
            codes[b] = 2
            return


def low_planes(data: np.ndarray) -> tuple[bytes, bool]:
    """The ``low`` section of the raw low bits' planes ``data`` (uint8), and whether it is
    zstd'd: only where a sample of the planes (their first bytes: float32's lowest byte)
    shrinks, and the whole then does; most tensors' low bits are noise."""
    if data.size >= 1 << 12 and len(compress_bytes(data[:LOW_SAMPLE], LOW_LEVEL)) < \
            0.98 * min(data.size, LOW_SAMPLE):
        coded = compress_bytes(data, LOW_LEVEL)
        if len(coded) < data.size:
            return coded, True
    return data.tobytes(), False


def smallest_head(encode: Callable[..., tuple[dict, dict[str, bytes]]], raw: np.ndarray,
                  dtype: str, block: int | None, mantissa_bits: int | None
                  ) -> tuple[dict, dict[str, bytes]] | None:
    """For a tensor of fewer than SMALL elements and no ``mantissa_bits`` asked: ``encode``
    (`encode_lanes`, or a bench's coder of the same heads) at each number of head mantissa
    bits up to the dtype's default (LAYOUTS), the smallest (its table is a large part of
    it); else None."""
    width, _, default = LAYOUTS[dtype]
    if mantissa_bits is not None or raw.size // (width // 8) >= SMALL:
        return None
    return min((encode(raw, dtype, block, k) for k in range(default + 1)),
               key=lambda coded: sum(map(len, coded[1].values())))


def encode_lanes(raw: np.ndarray, dtype: str, block: int | None = None,
                 mantissa_bits: int | None = None) -> tuple[dict, dict[str, bytes]]:
    """Params and sections of the lanes coding of ``raw`` (the tensor's bytes, a flat
    uint8 array) in blocks of ``block`` elements (default BLOCK), with ``mantissa_bits``
    of the mantissa in the head (default: the dtype's, LAYOUTS; fewer where the heads
    would take more than MAX_RANKS values). A tensor of fewer than SMALL elements is coded
    with each number of head mantissa bits up to the default, and the smallest kept: its
    table is a large part of it."""
    smallest = smallest_head(encode_lanes, raw, dtype, block, mantissa_bits)
    if smallest is not None:
        return smallest
    width, eb, default = LAYOUTS[dtype]
    k = default if mantissa_bits is None else mantissa_bits
    v = raw.view(np.uint32 if width == 32 else np.uint16).reshape(-1)
    n = v.size
    block = BLOCK if block is None else block
    low = width - eb - k
    heads = np.empty(n, dtype=np.uint16)
    counts = np.zeros((4, 1 << (eb + k)), dtype=np.int64)
    data = np.empty(_low_bytes(n, low), dtype=np.uint8)
    _split(v, width, low, heads, data, low // 8, _offsets(n, low), counts)
    counts = counts.sum(axis=0)
    if np.count_nonzero(counts) > MAX_RANKS:  # fewer mantissa bits in the head
        while np.count_nonzero(counts) > MAX_RANKS:
            k -= 1
            low += 1
            counts = counts.reshape(-1, 2).sum(axis=1)
        data = np.empty(_low_bytes(n, low), dtype=np.uint8)
        _split(v, width, low, heads, data, low // 8, _offsets(n, low),
               np.zeros((4, counts.size), dtype=np.int64))
    freq = _normalise(counts[None])[0]
    cum = np.cumsum(freq) - freq  # cumulative frequencies (`_cumulative`, one row)
    nblocks = -(-n // block)
    words = np.empty(n + 2 * LANES * nblocks, dtype=np.uint16)
    scratch = np.empty(LANES * (min(n, block) // LANES + 4), dtype=np.uint16)
    lane_words = np.zeros((nblocks, LANES), dtype=np.int64)
    w = _encode_blocks(heads, block, freq, cum, scratch, words, lane_words)
    planes, low_zstd = low_planes(data)
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
    if count and (int(freq.sum()) != TOTAL or np.count_nonzero(freq) > MAX_RANKS):
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
    starts = np.empty((nblocks, LANES + 1), dtype=np.int64)
    table = np.empty(TOTAL, dtype=np.int64)
    _tables(freq, low, lane_words.reshape(nblocks, LANES), table, starts)
    codes = np.zeros(nblocks, dtype=np.int64)
    _decode_blocks(words, out, starts, table, block, codes,
                   np.frombuffer(planes, dtype=np.uint8), low // 8, _offsets(count, low))
    bad = np.flatnonzero(codes)
    if bad.size:
        raise CorruptFileError(f"{where}: block {bad[0]}'s coded stream is damaged "
                               f"(code {codes[bad[0]]}).")
    return out.astype("<u4" if width == 32 else "<u2", copy=False).view(np.uint8)
