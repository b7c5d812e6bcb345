"""Lossless coding of floats by their bit fields (format version 7, ``raw`` with
``"compression": "fields"``; docs/FORMAT.md).

A float is a sign, an exponent and a mantissa. Only the exponent and the top mantissa
bits are informative in trained weights; the low mantissa bits are near-uniform. Each
element is split into:

- the *head*: its exponent, plus a flag set when its low ``zero_bits`` mantissa bits are
  all zero (fp32 weights that are exactly fp16 or bf16 values: embedding rows never
  updated, a layer stored at lower precision), coded under a context: the previous
  element's flag and the class of a running average of the previous exponents (the local
  scale);
- the *top*: the sign and the top ``mantissa_bits`` mantissa bits, coded under a context
  chosen by the exponent (the shape of the density inside an octave depends on where the
  octave lies);
- the *rest*: the remaining mantissa bits, raw (the low 16 in a plane of 16-bit words
  when there are at least 16, the fp32 case; the others through the coder), minus the
  zero bits of a flagged element.

``mantissa_bits`` is 7 (every bf16 mantissa bit) or 3 (most of the gain, tables 16 times
smaller), whichever costs less with its tables.

Heads and tops are coded with static per-tensor tables (12-bit frequencies) by a rANS
coder (32-bit state, 16-bit words) in numba. The elements are cut into blocks of
``block`` elements, each its own stream from a fixed state back to it, so blocks can be
coded and decoded independently (in parallel) and a stream decoded with the wrong symbol
count or from forged words ends in another state. The encoder picks the options per
tensor from exact code lengths; `weightdna.codec.lossless` keeps the byte-plane zstd
form instead when that is smaller.

Speed (issue 15; the streams unchanged, byte for byte): the options are counted in one
pass over the sampled blocks (`_joint_counts`: one histogram from which every option's
counts follow), the encoder's quotients come from float64 reciprocals (`_push`), and the
decoder runs over every block in one call, a slot giving its symbol's rank in one byte and
the rank its symbol, frequency and cumulative frequency, the head context and the top's
bits in place read from small tables. Tried and not kept, no faster on
the shared 2-core machine (CPU time): decoding 2 to 64 blocks side by side (independent
rANS chains, also written for LLVM to vectorise), and branch-free refills.
"""

from __future__ import annotations

import numba
import numpy as np

from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.errors import CorruptFileError

# dtype: (width bits, exponent bits, mantissa bits)
LAYOUTS = {"float32": (32, 8, 23), "bfloat16": (16, 8, 7), "float16": (16, 5, 10)}
PREC = 12  # bits of the coder's probabilities
TOTAL = 1 << PREC
LOWER = 1 << 16  # the state stays in [LOWER, 2^32)
MAX_TOP_BITS = 8
MAX_CLASSES = 8
EMA_SHIFT = 3  # the running average of the exponents weighs the newest by 1/8
BLOCK = 1 << 18
MIN_BLOCK, MAX_BLOCK = 1 << 10, 1 << 24
# An exponent gets its own table of tops when it has at least this many elements per
# table entry; rarer ones share one.
TOP_MIN_PER_ENTRY = 8
# The options are chosen on at most this many blocks spread over the tensor.
SAMPLE_BLOCKS = 4
# Scale classes are tried from this many elements.
MIN_CLASSES_ELEMENTS = 1 << 14
TABLES_LEVEL = 19
PARAM_KEYS = {"compression", "mantissa_bits", "classes", "center", "top_contexts",
              "zero_bits", "block"}


def _layout(dtype: str) -> tuple[int, int, int]:
    return LAYOUTS[dtype]


@numba.njit(cache=True, nogil=True)
def _head_contexts(v, start, end, eb, mb, zero_bits, classes, center, heads, ctx):
    """Heads (exponent | flag << eb) and head contexts of elements start..end (one block),
    into heads[0:end-start] and ctx[0:end-start]."""
    emask = (1 << eb) - 1
    zmask = (1 << zero_bits) - 1
    avg = center << 4
    prev_flag = 0
    half = classes // 2
    for i in range(start, end):
        x = np.int64(v[i])
        e = (x >> mb) & emask
        flag = 1 if zero_bits > 0 and (x & zmask) == 0 else 0
        cls = ((avg + 8) >> 4) - center + half
        cls = 0 if cls < 0 else (classes - 1 if cls >= classes else cls)
        ctx[i - start] = prev_flag * classes + cls
        heads[i - start] = e | (flag << eb)
        avg += ((e << 4) - avg) >> EMA_SHIFT
        prev_flag = flag


@numba.njit(cache=True, nogil=True)
def _count(v, start, end, eb, mb, tbits, zero_bits, classes, center, hcounts, tcounts):
    """Add the heads of elements start..end (one block) to hcounts[context, head] and their
    tops to tcounts[exponent, top]."""
    emask = (1 << eb) - 1
    zmask = (1 << zero_bits) - 1
    rbits = mb - tbits
    sign_shift = mb + eb
    avg = center << 4
    prev_flag = 0
    half = classes // 2
    for i in range(start, end):
        x = np.int64(v[i])
        e = (x >> mb) & emask
        flag = 1 if zero_bits > 0 and (x & zmask) == 0 else 0
        cls = ((avg + 8) >> 4) - center + half
        cls = 0 if cls < 0 else (classes - 1 if cls >= classes else cls)
        hcounts[prev_flag * classes + cls, e | (flag << eb)] += 1
        top = (((x >> sign_shift) & 1) << tbits) | ((x >> rbits) & ((1 << tbits) - 1))
        tcounts[e, top] += 1
        avg += ((e << 4) - avg) >> EMA_SHIFT
        prev_flag = flag


@numba.njit(cache=True, nogil=True)
def _joint_counts(v, start, end, eb, mb, two_flags, center, joint):
    """Add elements start..end (one block) to ``joint[previous z, d, z, exponent]``, from
    which every option's head counts follow (`_option_counts`): z is 0, 1 when the low 13
    mantissa bits are zero, 2 when the low 16 are (``two_flags``; else always 0), and d the
    running average's class offset clamped to -4..3, plus 4."""
    emask = (1 << eb) - 1
    avg = center << 4
    prev = 0
    for i in range(start, end):
        x = np.int64(v[i])
        e = (x >> mb) & emask
        z = 0
        if two_flags:
            z = (1 if (x & 0x1FFF) == 0 else 0) + (1 if (x & 0xFFFF) == 0 else 0)
        d = ((avg + 8) >> 4) - center
        d = 0 if d < -4 else (7 if d > 3 else d + 4)
        joint[prev, d, z, e] += 1
        avg += ((e << 4) - avg) >> EMA_SHIFT
        prev = z


def _option_counts(joint: np.ndarray, eb: int, zero_bits: int, classes: int) -> np.ndarray:
    """The head counts (contexts by heads) of the option (``zero_bits``, ``classes``) from
    `_joint_counts`' histogram: exactly what `_count` gives for it."""
    flag = np.array([0, zero_bits == 13, zero_bits > 0], dtype=np.int64) if zero_bits \
        else np.zeros(3, dtype=np.int64)
    prev, d, z = np.meshgrid(np.arange(3), np.arange(8), np.arange(3), indexing="ij")
    context = flag[prev] * classes + np.clip(d - 4 + classes // 2, 0, classes - 1)
    rows = classes * (2 if zero_bits else 1)
    at = ((context * 2 + flag[z]) << eb).reshape(-1, 1) + np.arange(1 << eb)
    hcounts = np.bincount(at.ravel(), weights=joint.reshape(-1), minlength=rows << (eb + 1))
    return np.rint(hcounts).astype(np.int64).reshape(rows, 2 << eb)  # counts below 2^53


@numba.njit(cache=True, nogil=True, inline="always")
def _push(x, f, inv, cum):
    """The rANS step x -> (x // f) * 2^PREC + x % f + cum, the quotient by a float64
    reciprocal (``inv`` = 1 / f; x < 2^32, so it is off by at most one) put right."""
    q = np.int64(np.float64(x) * inv)
    r = x - q * f
    if r < 0:
        q -= 1
        r += f
    elif r >= f:
        q += 1
        r -= f
    return (q << PREC) + r + cum


@numba.njit(cache=True, nogil=True)
def _encode_block(v, start, end, eb, mb, tbits, zero_bits, classes, center, hfreq, hcum,
                  hinv, emap, tfreq, tcum, tinv, heads, ctx, words, plane, plane_pos):
    """rANS-code elements start..end; returns (words written, plane words written). The
    words come out last first (the caller reverses them)."""
    _head_contexts(v, start, end, eb, mb, zero_bits, classes, center, heads, ctx)
    rbits = mb - tbits
    rmask = (1 << rbits) - 1
    emask = (1 << eb) - 1
    sign_shift = mb + eb
    use_plane = rbits >= 16
    # The plane is written forwards: count this block's entries first.
    n_plane = 0
    if use_plane:
        for i in range(end - start):
            if (heads[i] >> eb) == 0:
                n_plane += 1
    p = plane_pos + n_plane
    x = np.int64(LOWER)
    n = 0
    for i in range(end - 1, start - 1, -1):
        val = np.int64(v[i])
        h = np.int64(heads[i - start])
        flag = h >> eb
        rest = val & rmask
        # the rest, raw: its low 16 bits in the plane (unflagged, R >= 16), the others
        # through the coder
        if use_plane and flag == 0:
            p -= 1
            plane[p] = rest & 0xFFFF
            k = rbits - 16
        else:
            k = rbits - zero_bits if flag else rbits
        if k > 0:
            if x >= (np.int64(1) << (32 - k)):
                words[n] = x & 0xFFFF
                n += 1
                x >>= 16
            x = (x << k) | (rest >> (rbits - k))
        # the top: sign and top mantissa bits, under the exponent's table
        top = (((val >> sign_shift) & 1) << tbits) | ((val >> rbits) & ((1 << tbits) - 1))
        c = emap[h & emask]
        if c < 0:
            k = tbits + 1
            if x >= (np.int64(1) << (32 - k)):
                words[n] = x & 0xFFFF
                n += 1
                x >>= 16
            x = (x << k) | top
        else:
            f = np.int64(tfreq[c, top])
            if x >= (f << (32 - PREC)):
                words[n] = x & 0xFFFF
                n += 1
                x >>= 16
            x = _push(x, f, tinv[c, top], tcum[c, top])
        # the head
        c = np.int64(ctx[i - start])
        f = np.int64(hfreq[c, h])
        if x >= (f << (32 - PREC)):
            words[n] = x & 0xFFFF
            n += 1
            x >>= 16
        x = _push(x, f, hinv[c, h], hcum[c, h])
    words[n] = x & 0xFFFF
    words[n + 1] = x >> 16
    return n + 2, n_plane


@numba.njit(cache=True, nogil=True)
def _decode_blocks(words, plane, out, blocks, eb, mb, tbits, zero_bits, center, contexts,
                   hlut, hsym, hfc, emap, tlut, tsym, tfc, tops, codes):
    """Decode the blocks ``blocks`` names (rows: first word, end word, first plane word,
    end plane word, first element, end element) into ``out``; ``codes``: per block 0, or
    nonzero when its stream is not one this encoder wrote; the tables as `_lookup` gives
    them; ``contexts[previous flag, running average]``: the head context, -1 where that
    table is empty; ``emap``: -2 for an empty top table; ``tops[s·2^T + t]``: the sign
    and top mantissa bits in place (``tsym`` holds those too). Every read stays inside
    ``words`` and ``plane`` whatever they hold: a stream that runs past its own words or
    plane words ends with the wrong counts."""
    wlast = max(words.size - 1, 0)
    plast = max(plane.size - 1, 0)
    rbits = mb - tbits
    emask = (1 << eb) - 1
    pmask = TOTAL - 1
    for b in range(blocks.shape[0]):
        w, w1, p, p1, start, end = blocks[b, 0], blocks[b, 1], blocks[b, 2], blocks[b, 3], \
            blocks[b, 4], blocks[b, 5]
        if w1 - w < 2:
            codes[b] = 1
            continue
        x = (np.int64(words[w]) << 16) | np.int64(words[w + 1])
        w += 2
        if x < LOWER:
            codes[b] = 2
            continue
        err = 0
        avg = center << 4
        prev_flag = 0
        for i in range(start, end):
            c = contexts[prev_flag, avg]
            if c < 0:
                err = 3
                break
            slot = x & pmask
            rank = hlut[c, slot]
            h = hsym[c, rank]
            fc = hfc[c, rank]
            x = (fc >> 16) * (x >> PREC) + slot - (fc & 0xFFFF)
            if x < LOWER:
                x = (x << 16) | np.int64(words[min(w, wlast)])
                w += 1
            e = h & emask
            flag = h >> eb
            if flag and zero_bits == 0:
                err = 7
                break
            c = emap[e]
            if c == -1:
                top = tops[x & ((2 << tbits) - 1)]
                x >>= tbits + 1
            else:
                if c < 0:
                    err = 3
                    break
                slot = x & pmask
                rank = tlut[c, slot]
                top = tsym[c, rank]
                fc = tfc[c, rank]
                x = (fc >> 16) * (x >> PREC) + slot - (fc & 0xFFFF)
            if x < LOWER:
                x = (x << 16) | np.int64(words[min(w, wlast)])
                w += 1
            if rbits >= 16:
                rest = np.int64(plane[min(p, plast)]) * (1 - flag)
                p += 1 - flag
                k = rbits - 16 + flag * (16 - zero_bits)
            else:
                rest = np.int64(0)
                k = rbits - flag * zero_bits
            if k > 0:
                rest |= (x & ((1 << k) - 1)) << (rbits - k)
                x >>= k
                if x < LOWER:
                    x = (x << 16) | np.int64(words[min(w, wlast)])
                    w += 1
            out[i] = top | (e << mb) | rest
            avg += ((e << 4) - avg) >> EMA_SHIFT
            prev_flag = flag
        if err:
            codes[b] = err
        elif x != LOWER or w != w1 or p != p1:
            codes[b] = 6


def _normalise(counts: np.ndarray) -> np.ndarray:
    """Frequencies summing to TOTAL, at least 1 where a count is positive (rows of zeros
    stay zero): counts scaled and rounded (half to even), the rounding's excess taken from
    (or given to) each row's most frequent symbol (the first, on a tie), or spread over its
    largest ones (in order of count, ties in symbol order) when that is not enough."""
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    out = np.empty_like(counts)
    _normalise_rows(counts.reshape(-1, counts.shape[-1]), out.reshape(-1, counts.shape[-1]))
    return out


@numba.njit(cache=True, nogil=True)
def _normalise_rows(counts, out):
    """`_normalise` row by row into ``out`` (in numba: the numpy form cost about 85 µs a
    call, a lossless tensor's main cost under 2^12 elements, issue 15)."""
    for r in range(counts.shape[0]):
        c = counts[r]
        total = np.int64(0)
        for k in range(c.size):
            total += c[k]
        scale = TOTAL / max(total, 1)
        placed = np.int64(0)
        top = 0
        for k in range(c.size):
            v = np.int64(max(1.0, np.rint(c[k] * scale))) if c[k] > 0 else np.int64(0)
            out[r, k] = v
            placed += v
            if c[k] > c[top]:
                top = k
        diff = TOTAL - placed if total > 0 else 0
        if diff == 0 or out[r, top] + diff >= 1:
            out[r, top] += diff
            continue
        d = diff
        for k in np.argsort(-c, kind="mergesort"):
            take = min(-d, out[r, k] - 1)
            out[r, k] -= take
            d += take
            if d == 0:
                break


def _code_bits(counts: np.ndarray, freqs: np.ndarray) -> float:
    used = counts > 0
    return float(-(counts[used] * np.log2(freqs[used] / TOTAL)).sum())


def _cumulative(freqs: np.ndarray) -> np.ndarray:
    cum = np.zeros_like(freqs)
    cum[:, 1:] = np.cumsum(freqs, axis=1)[:, :-1]
    return cum


def _lookup(freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The decoder's tables of the rows that sum to TOTAL: per slot the rank of its symbol
    among the row's symbols of nonzero frequency (one byte where no row has more than 256
    of them: the lookups take less cache), per rank the symbol and its frequency << 16 |
    cumulative frequency; and which rows sum to TOTAL (the others are all zero)."""
    valid = freqs.sum(axis=1) == TOTAL
    used = freqs > 0
    ranks = max(1, int(used.sum(axis=1).max(initial=0)))
    lut = np.zeros((freqs.shape[0], TOTAL), dtype=np.uint8 if ranks <= 256 else np.uint16)
    sym = np.zeros((freqs.shape[0], ranks), dtype=np.int64)
    fc = np.zeros((freqs.shape[0], ranks), dtype=np.int64)
    cum = _cumulative(freqs)
    for r in np.flatnonzero(valid):
        symbols = np.flatnonzero(used[r])
        lut[r] = np.repeat(np.arange(symbols.size), freqs[r, symbols])
        sym[r, : symbols.size] = symbols
        fc[r, : symbols.size] = (freqs[r, symbols] << 16) | cum[r, symbols]
    return lut, sym, fc, valid


def _bits_view(raw: np.ndarray, width: int) -> np.ndarray:
    return raw.view(np.uint32 if width == 32 else np.uint16).reshape(-1)


def _table_bytes(emap: np.ndarray, hfreq: np.ndarray, tfreq: np.ndarray,
                 block_words: np.ndarray, block_plane: np.ndarray) -> bytes:
    return (emap.astype("<i2").tobytes() + hfreq.astype("<u2").tobytes()
            + tfreq.astype("<u2").tobytes() + block_words.astype("<u4").tobytes()
            + block_plane.astype("<u4").tobytes())


def _counts(v, blocks, block, eb, mb, tbits, zero_bits, classes, center):
    hcounts = np.zeros((classes * (2 if zero_bits else 1), 2 << eb), dtype=np.int64)
    tcounts = np.zeros((1 << eb, 2 << tbits), dtype=np.int64)
    for b in blocks:
        _count(v, b * block, min(v.size, (b + 1) * block), eb, mb, tbits, zero_bits, classes,
               center, hcounts, tcounts)
    return hcounts, tcounts


def _table_cost(freqs: np.ndarray) -> int:
    """About the bits the tables take in the file: zstd of their 16-bit frequencies, at a
    fast level (the file's, at TABLES_LEVEL, are a few percent smaller)."""
    return 8 * len(compress_bytes(freqs.astype("<u2").tobytes(), 3)) if freqs.size else 0


def _top_tables(tcounts: np.ndarray, tbits: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The exponent-to-table map and the tables of tops: one per exponent with enough
    elements, one shared by the rest; or none (-1 everywhere: tops raw) when tables
    would cost more than they save; and the bits they take."""
    eb_size = tcounts.shape[0]
    ecounts = tcounts.sum(axis=1)
    own = ecounts >= TOP_MIN_PER_ENTRY * (2 << tbits)
    emap = np.full(eb_size, -1, dtype=np.int64)
    emap[own] = np.arange(int(own.sum()))
    rows = [tcounts[own]]
    rare = (ecounts > 0) & ~own
    if rare.any():
        emap[rare] = int(own.sum())
        rows.append(tcounts[rare].sum(axis=0)[None])
    rows = np.concatenate(rows)
    freqs = _normalise(rows)
    modelled = _code_bits(rows, freqs) + _table_cost(freqs)
    raw = float(ecounts.sum()) * (tbits + 1)
    if modelled >= raw:
        return np.full(eb_size, -1, dtype=np.int64), np.zeros((0, 2 << tbits), np.int64), raw
    return emap, freqs, modelled


def encode_fields(raw: np.ndarray, dtype: str, block: int | None = None
                  ) -> tuple[dict, dict[str, bytes]]:
    """Params and sections of the fields coding of ``raw`` (the tensor's bytes, a flat
    uint8 array) in blocks of ``block`` elements (default BLOCK)."""
    width, eb, mb = _layout(dtype)
    v = _bits_view(raw, width)
    n = v.size
    tbits = min(mb, MAX_TOP_BITS - 1)
    block = BLOCK if block is None else block
    nblocks = -(-n // block)
    sample = np.unique(np.linspace(0, nblocks - 1, min(nblocks, SAMPLE_BLOCKS)).astype(int))
    picked = np.concatenate([v[b * block : (b + 1) * block] for b in sample])
    center = int(np.argmax(np.bincount((picked >> mb) & ((1 << eb) - 1), minlength=1 << eb)))
    # options worth trying: zero bits (fp32 elements that are exact fp16, 13 low zeros, or
    # bf16, 16, values) that at least 1% of the sampled elements have, and scale classes on
    # tensors large enough to pay for their tables; all counted in one pass
    zero_options = [z for z in ((0, 13, 16) if width == 32 else (0,))
                    if z == 0 or np.count_nonzero(picked & ((1 << z) - 1) == 0) > picked.size / 100]
    class_options = (1, 4, 8) if n >= MIN_CLASSES_ELEMENTS else (1,)
    joint = np.zeros((3, 8, 3, 1 << eb), dtype=np.int64)
    for b in sample:
        _joint_counts(v, b * block, min(n, (b + 1) * block), eb, mb, width == 32, center, joint)
    best = None
    for zero_bits in zero_options:
        for classes in class_options:
            hcounts = _option_counts(joint, eb, zero_bits, classes)
            hfreq = _normalise(hcounts)
            bits = _code_bits(hcounts, hfreq) + _table_cost(hfreq)
            bits -= int(hcounts[:, 1 << eb:].sum()) * zero_bits
            if best is None or bits < best[0]:
                best = (bits, zero_bits, classes)
    _, zero_bits, classes = best
    hcounts, tcounts = _counts(v, range(nblocks), block, eb, mb, tbits, zero_bits, classes,
                               center)
    hfreq = _normalise(hcounts)
    # tops: all the mantissa's top bits modelled, or only its top 3 (most of the gain,
    # 16 times smaller tables), whichever costs less
    choices = []
    for t in sorted({tbits, min(tbits, 3)}):
        counts = tcounts.reshape(-1, 2, 1 << t, 1 << (tbits - t)).sum(axis=3)
        choices.append((t, *_top_tables(counts.reshape(-1, 2 << t), t)))
    tbits, emap, tfreq, _ = min(choices, key=lambda c: c[3])
    rbits = mb - tbits
    hcum, tcum = _cumulative(hfreq), _cumulative(tfreq)
    hinv, tinv = 1.0 / np.maximum(hfreq, 1), 1.0 / np.maximum(tfreq, 1)
    words = np.empty(2 * n + 2 * nblocks + 2, dtype=np.uint16)
    plane = np.empty(n if rbits >= 16 else 0, dtype=np.uint16)
    length = min(block, n)
    heads, ctx = np.empty(length, dtype=np.int16), np.empty(length, dtype=np.int16)
    scratch = np.empty(2 * length + 2, dtype=np.uint16)
    block_words = np.zeros(nblocks, dtype=np.int64)
    block_plane = np.zeros(nblocks, dtype=np.int64)
    w = p = 0
    for b in range(nblocks):
        s, e = b * block, min(n, (b + 1) * block)
        nw, npl = _encode_block(v, s, e, eb, mb, tbits, zero_bits, classes, center, hfreq,
                                hcum, hinv, emap, tfreq, tcum, tinv, heads, ctx, scratch,
                                plane, p)
        words[w : w + nw] = scratch[:nw][::-1]
        block_words[b], block_plane[b] = nw, npl
        w += nw
        p += npl
    params = {"compression": "fields", "mantissa_bits": tbits, "classes": classes,
              "center": center, "top_contexts": int(tfreq.shape[0]), "zero_bits": zero_bits,
              "block": block}
    tables = _table_bytes(emap, hfreq, tfreq, block_words, block_plane)
    sections = {"tables": compress_bytes(tables, TABLES_LEVEL),
                "words": words[:w].astype("<u2", copy=False).tobytes(),
                "plane": plane[:p].astype("<u2", copy=False).tobytes()}
    return params, sections


def check_fields_params(params: object, dtype: str, where: str) -> dict:
    """Validate the params of a fields-coded ``raw`` tensor of ``dtype``."""
    if dtype not in LAYOUTS:
        raise CorruptFileError(f"{where}: fields coding is for float32, bfloat16 and float16.")
    width, eb, mb = _layout(dtype)
    if not isinstance(params, dict) or set(params) != PARAM_KEYS:
        raise CorruptFileError(f"{where}: fields params must have the keys {sorted(PARAM_KEYS)}.")
    for key in PARAM_KEYS - {"compression"}:
        if type(params[key]) is not int:
            raise CorruptFileError(f"{where}: fields param {key!r} must be an integer.")
    tbits = params["mantissa_bits"]
    if not 0 <= tbits <= min(mb, MAX_TOP_BITS):
        raise CorruptFileError(f"{where}: mantissa_bits {tbits} is out of range for {dtype}.")
    rbits, zero_bits = mb - tbits, params["zero_bits"]
    if not 1 <= params["classes"] <= MAX_CLASSES:
        raise CorruptFileError(f"{where}: classes must be 1 to {MAX_CLASSES}.")
    if not 0 <= params["center"] < 1 << eb:
        raise CorruptFileError(f"{where}: center must be an exponent of {dtype}.")
    if not 0 <= params["top_contexts"] <= 1 << eb:
        raise CorruptFileError(f"{where}: top_contexts must be 0 to {1 << eb}.")
    if zero_bits and not max(1, rbits - 16) <= zero_bits <= min(16, rbits):
        raise CorruptFileError(f"{where}: zero_bits must be 0 or {max(1, rbits - 16)} to "
                               f"{min(16, rbits)}.")
    if not 0 <= zero_bits <= 16:
        raise CorruptFileError(f"{where}: zero_bits must be 0 to 16.")
    if not MIN_BLOCK <= params["block"] <= MAX_BLOCK:
        raise CorruptFileError(f"{where}: block must be {MIN_BLOCK} to {MAX_BLOCK} elements.")
    return params


def decode_fields(params: dict, sections: dict[str, bytes], dtype: str, count: int,
                  where: str) -> np.ndarray:
    """The little-endian bytes (uint8) of the ``count`` elements a fields-coded tensor
    holds."""
    check_fields_params(params, dtype, where)
    if set(sections) != {"tables", "words", "plane"}:
        raise CorruptFileError(f"{where}: a fields-coded tensor has the sections tables, "
                               "words and plane.")
    width, eb, mb = _layout(dtype)
    tbits, classes, zero_bits = params["mantissa_bits"], params["classes"], params["zero_bits"]
    rbits = mb - tbits
    tctx, block = params["top_contexts"], params["block"]
    hctx = classes * (2 if zero_bits else 1)
    nblocks = -(-count // block)
    sizes = (2 << eb, 2 * hctx * (2 << eb), 2 * tctx * (2 << tbits), 4 * nblocks, 4 * nblocks)
    tables = decompress_bytes(sections["tables"], sum(sizes), where)
    parts, at = [], 0
    for size in sizes:
        parts.append(tables[at : at + size])
        at += size
    emap = np.frombuffer(parts[0], dtype="<i2").astype(np.int64)
    hfreq = np.frombuffer(parts[1], dtype="<u2").astype(np.int64).reshape(hctx, 2 << eb)
    tfreq = np.frombuffer(parts[2], dtype="<u2").astype(np.int64).reshape(tctx, 2 << tbits)
    block_words = np.frombuffer(parts[3], dtype="<u4").astype(np.int64)
    block_plane = np.frombuffer(parts[4], dtype="<u4").astype(np.int64)
    if ((emap < -1) | (emap >= tctx)).any():
        raise CorruptFileError(f"{where}: the exponent map names a missing table.")
    for name, freqs in (("head", hfreq), ("top", tfreq)):
        sums = freqs.sum(axis=1)
        if ((sums != 0) & (sums != TOTAL)).any():
            raise CorruptFileError(f"{where}: a {name} table does not sum to {TOTAL}.")
    words_raw, plane_raw = sections["words"], sections["plane"]
    if len(words_raw) % 2 or len(plane_raw) % 2:
        raise CorruptFileError(f"{where}: the words and plane sections hold 16-bit words.")
    words = np.frombuffer(words_raw, dtype="<u2").astype(np.uint16)
    plane = np.frombuffer(plane_raw, dtype="<u2").astype(np.uint16)
    if int(block_words.sum()) != words.size or int(block_plane.sum()) != plane.size:
        raise CorruptFileError(f"{where}: the block sizes do not add up to the sections.")
    if rbits < 16 and plane.size:
        raise CorruptFileError(f"{where}: fewer than 16 raw mantissa bits use no plane.")
    hlut, hsym, hfc, hvalid = _lookup(hfreq)
    tlut, tsym, tfc, tvalid = _lookup(tfreq)
    out = np.empty(count, dtype=np.uint32 if width == 32 else np.uint16)
    wends, pends = np.cumsum(block_words), np.cumsum(block_plane)
    blocks = np.empty((nblocks, 6), dtype=np.int64)
    blocks[:, 0], blocks[:, 1] = wends - block_words, wends
    blocks[:, 2], blocks[:, 3] = pends - block_plane, pends
    blocks[:, 4] = np.arange(nblocks) * block
    blocks[:, 5] = np.minimum(blocks[:, 4] + block, count)
    over = np.flatnonzero(block_plane > blocks[:, 5] - blocks[:, 4])
    if over.size:
        raise CorruptFileError(f"{where}: block {over[0]} claims more plane words than elements.")
    # the head context of each previous flag and running average (which stays within
    # 0 … 16·(2^E − 1)), -1 where its table is empty; the top table of each exponent, -2
    # where it is empty
    center, avg = params["center"], np.arange(16 << eb)
    cls = np.clip(((avg + 8) >> 4) - center + classes // 2, 0, classes - 1)
    contexts = np.stack([cls, cls + classes if zero_bits else cls])
    contexts = np.where(hvalid[contexts], contexts, -1)
    emap = np.where((emap >= 0) & ~tvalid[np.maximum(emap, 0)], -2, emap) if tvalid.size \
        else emap
    top = np.arange(2 << tbits)
    tops = ((top >> tbits) << (mb + eb)) | ((top & ((1 << tbits) - 1)) << rbits)
    codes = np.zeros(nblocks, dtype=np.int64)
    _decode_blocks(words, plane, out, blocks, eb, mb, tbits, zero_bits, center, contexts,
                   hlut, hsym, hfc, emap, tlut, tops[tsym], tfc, tops, codes)
    bad = np.flatnonzero(codes)
    if bad.size:
        raise CorruptFileError(f"{where}: block {bad[0]}'s coded stream is damaged "
                               f"(code {codes[bad[0]]}).")
    return out.astype("<u4" if width == 32 else "<u2", copy=False).view(np.uint8)
