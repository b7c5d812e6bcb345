"""More trellis states: 8 against 16, 32, 64 at equal rate on MiniLM's tensors.

    .venv/bin/python bench/trellis_states.py [--dna m3.dna] [--states 8,16,32,64]
        [--factors 0.84,0.92,1,1.09,1.19] [--tensors query,ffn_in,ffn_out,embed]
    .venv/bin/python bench/trellis_states.py --tables   # the tables and their granular gain

A dependent-quantisation (DQ) table of N = 2^ν states is derived from Ungerboeck's
rate-1/2 one-dimensional code with parity-check polynomials (h1, h0) (octal) in the
observer form of its systematic feedback encoder: the state is ν bits s_1 … s_ν, the
quantiser of a state is s_1 (z0: Q0 = even multiples of Δ, Q1 = odd multiples and zero,
as `weightdna.codec.trellis`), the parity of the symbol is z1, and the next state is
s'_j = s_{j+1} ⊕ h0_j·z0 ⊕ h1_j·z1 (s_{ν+1} = 0). Numbered with s_1 as bit 0, a state's
quantiser is its low bit and state 0 is the all-zero state (`weightdna.codec.trellis.
dq_table`). (2, 5) gives VVC's 4-state table up to the states' numbering, and (04, 13) with
Q1's parities swapped NNCodec's 8-state one exactly. For each ν every (h1, h0) with
h0_0 = h0_ν = 1, h1_0 = h1_1 = h1_ν = 0 (so that a state's two successors use one
quantiser, as in NNCodec's) is tried, with and without Q1's parities swapped, by the
granular gain at high rate (λ = 0, values uniform over a wide range: the MSE against a
scalar grid of step 2Δ, Δ²/3); the best is kept.

The search is a generic table-driven Viterbi (numba) with the codec's cost model:
Σ (x − level)² + λ·bits, x = w / Δ_row (the steps and column factors the 3-bpw file gave
the tensor), the bits from context models learnt on the data as the codec learns them
(`weightdna.codec.trellis.learn_rates`: a sample, a Laplace start, two passes), the
contexts a state group × row class. With N > 8 the states are mapped onto 8 context
groups (state mod 8, which keeps the quantiser), so the one adaptive coder's layout is
unchanged; the rate is that coder's ideal bits (`weightdna.codec.adaptive`, its real
binarisation and counts, no neighbours) with the mapped state as its ``sig`` context.
The 8-state generic search is checked to give the codec's own symbols first.

Each state count is run at a few step factors (Δ × f); SNR (of the tensor as coded, w/c)
is interpolated at the 8-state f = 1 rate.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numba
import numpy as np

from weightdna.codec import adaptive, tensor, trellis
from weightdna.codec.container import read_dna_file
from weightdna.codec.rowsteps import decode_grid
from weightdna.codec.zstdframes import decompress_bytes
from weightdna.weights import load_weights, minilm_path

TENSORS = {
    "query": ("encoder.layer.0.attention.self.query.weight", None),
    "ffn_in": ("encoder.layer.0.intermediate.dense.weight", None),
    "ffn_out": ("encoder.layer.0.output.dense.weight", None),
    "embed": ("embeddings.word_embeddings.weight", 5000),
}
# Ungerboeck's one-dimensional rate-1/2 codes (h1, h0), octal, for comparison.
UNGERBOECK = {2: (0o2, 0o5), 3: (0o4, 0o13), 4: (0o4, 0o23), 5: (0o10, 0o45),
              6: (0o24, 0o103)}
# The best (h1, h0, Q1's parities swapped) of each state count by `best_tables` (100,000
# values, seed 1; ``--tables`` searches again), those of the codec where it has them
# (`weightdna.codec.trellis.TABLES`).
TABLES = {16: (0o10, 0o23, False), 32: (0o24, 0o43, True), 64: (0o54, 0o135, True)}


# ---------------------------------------------------------------------------------------
# Tables


def isomorphic(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two tables are one up to numbering (state 0 fixed, quantisers kept)."""
    n = a.shape[0]
    rest = list(range(1, n))
    for perm in itertools.permutations(rest):
        p = np.array([0, *perm])
        if np.any((p & 1) != (np.arange(n) & 1)):
            continue
        if np.array_equal(p[a], b[p]):
            return True
    return False


@numba.njit(cache=True)
def _distortion(x: np.ndarray, next_state: np.ndarray) -> float:
    """Mean (x − level)² of the λ = 0 search of one long sequence from state 0 (the
    quantiser of a state its low bit)."""
    n = next_state.shape[0]
    length = x.size
    cost = np.full(n, np.inf)
    cost[0] = 0.0
    new = np.empty(n)
    for t in range(length):
        a = x[t]
        new[:] = np.inf
        for s in range(n):
            c = cost[s]
            q = s & 1
            base = int(np.floor(a / 2.0)) if q == 0 else int(np.floor((a + 1.0) / 2.0))
            for m in range(base - 1, base + 2):
                if m <= 0:
                    continue
                e = a - (2.0 * m - q)
                total = c + e * e
                ns = next_state[s, m & 1]
                if total < new[ns]:
                    new[ns] = total
        cost[:] = new
    return cost.min() / length


def granular_gain(table: np.ndarray, x: np.ndarray) -> float:
    """dB of the scalar grid of step 2 (MSE 1/3) over the table's λ = 0 MSE."""
    return 10 * np.log10((1.0 / 3.0) / _distortion(x, table))


def best_tables(nus: list[int], samples: int = 40000) -> dict[int, tuple]:
    """For each ν: (gain dB, h1, h0, swap, table) of the best code by `granular_gain`, and
    Ungerboeck's own figure beside it."""
    rng = np.random.default_rng(1)
    x = rng.uniform(20.0, 2000.0, samples)
    out = {}
    for nu in nus:
        best = None
        for h0 in range((1 << nu) + 1, 1 << (nu + 1), 2):  # h0_0 = h0_ν = 1
            for h1 in range(0, 1 << nu, 4):  # h1_0 = h1_1 = h1_ν = 0
                for swap in (False, True):
                    table = trellis.dq_table(nu, h1, h0, swap)
                    gain = granular_gain(table, x)
                    if best is None or gain > best[0] + 1e-9:
                        best = (gain, h1, h0, swap, table)
        out[nu] = best
    return out


# ---------------------------------------------------------------------------------------
# The generic search


@numba.njit(cache=True, nogil=True)
def _search_n(x: np.ndarray, row_class: np.ndarray, classes: int, group: np.ndarray,
              next_state: np.ndarray, bits: np.ndarray, lam: float, out: np.ndarray,
              states: np.ndarray) -> None:
    """The Viterbi search of `weightdna.codec.trellis._search` for any table (a state's
    quantiser: its low bit): every state weighs 0 and the magnitudes base − 1, base,
    base + 1 (> 0) of its quantiser, the cheapest arrival at each next state wins, the
    first on a tie (states in order, then the symbols). ``states``: the state each symbol
    was coded in."""
    n, length = x.shape
    ns_count = next_state.shape[0]
    width = (bits.shape[1] - 1) // 2
    top = 2 * width
    lam_bits = lam * bits
    cost = np.empty(ns_count)
    new = np.empty(ns_count)
    came_state = np.empty((length, ns_count), dtype=np.int16)
    came_k = np.empty((length, ns_count), dtype=np.int32)
    context = np.empty(ns_count, dtype=np.int64)
    for b in range(n):
        klass = row_class[b]
        for s in range(ns_count):
            context[s] = group[s] * classes + klass
            cost[s] = np.inf
        cost[0] = 0.0
        for t in range(length):
            v = x[b, t]
            a = abs(v)
            sign = -1 if v < 0 else 1
            e0 = a * a
            for s in range(ns_count):
                new[s] = np.inf
            for s in range(ns_count):
                c = cost[s]
                if c == np.inf:
                    continue
                q = s & 1
                ctx = context[s]
                total = c + e0 + trellis._rate(lam, bits, lam_bits, ctx, 0, width, top)
                nxt = next_state[s, 0]
                if total < new[nxt]:
                    new[nxt] = total
                    came_state[t, nxt] = s
                    came_k[t, nxt] = 0
                base = int(np.floor(a / 2.0)) if q == 0 else int(np.floor((a + 1.0) / 2.0))
                for m in range(base - 1, base + 2):
                    if m <= 0:
                        continue
                    level = 2.0 * m - q
                    k = sign * m
                    total = c + (a - level) * (a - level) + trellis._rate(
                        lam, bits, lam_bits, ctx, k, width, top)
                    nxt = next_state[s, m & 1]
                    if total < new[nxt]:
                        new[nxt] = total
                        came_state[t, nxt] = s
                        came_k[t, nxt] = k
            for s in range(ns_count):
                cost[s] = new[s]
        state = 0
        best = cost[0]
        for s in range(1, ns_count):
            if cost[s] < best:
                best = cost[s]
                state = s
        for t in range(length - 1, -1, -1):
            out[b, t] = came_k[t, state]
            state = came_state[t, state]
            states[b, t] = state


def search(x: np.ndarray, classes: np.ndarray, n_classes: int, group: np.ndarray,
           table: np.ndarray, bits: np.ndarray, lam: float = trellis.DEFAULT_LAMBDA
           ) -> tuple[np.ndarray, np.ndarray]:
    """(symbols int32, the state of each) of the search over (rows × columns) ``x``."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.int32)
    states = np.empty(x.shape, dtype=np.int16)
    _search_n(x, np.ascontiguousarray(classes), n_classes, group, table, bits, lam, out,
              states)
    return out, states


def learn(x: np.ndarray, classes: np.ndarray, n_classes: int, group: np.ndarray,
          groups: int, table: np.ndarray, lam: float = trellis.DEFAULT_LAMBDA) -> np.ndarray:
    """`weightdna.codec.trellis.learn_rates` with the generic search."""
    count = groups * n_classes
    stride = max(1, x.size // trellis.SAMPLE_ELEMENTS)
    picked = np.arange(0, x.shape[0], stride)
    sample = np.ascontiguousarray(x[picked], dtype=np.float64)
    sample_classes = np.ascontiguousarray(classes[picked])
    bits = trellis._laplace_table(float(np.mean(np.abs(sample))) / 2.0 if sample.size else 1.0,
                                  count)
    first = max(1, sample.size // trellis.FIRST_PASS_ELEMENTS)
    for learning_pass in range(trellis.LEARNING_PASSES):
        step = first if learning_pass == 0 else 1
        part = np.ascontiguousarray(sample[::step])
        part_classes = np.ascontiguousarray(sample_classes[::step])
        symbols, states = search(part, part_classes, n_classes, group, table, bits, lam)
        contexts = (group[states] * n_classes + part_classes[:, None]).astype(np.int16)
        bits = trellis._rate_table(symbols, contexts, count)
    return bits


@numba.njit(cache=True, nogil=True)
def _coder_cost(symbols: np.ndarray, states: np.ndarray, row_class: np.ndarray, classes: int,
                cmap: np.ndarray, counts: np.ndarray, reciprocal: np.ndarray,
                log2: np.ndarray) -> float:
    """The one adaptive coder's ideal bits (no neighbours: the left symbol's sign only) with
    the state ``cmap[state]`` as its context state."""
    n, length = symbols.shape
    cost = 0.0
    at = 0
    probs = np.zeros(0, dtype=np.uint16)
    bins = np.zeros(0, dtype=np.uint8)
    for b in range(n):
        klass = row_class[b]
        left = 0
        for t in range(length):
            sig, sign, gt, prefix = trellis._coder_context(cmap[states[b, t]], klass, classes,
                                                           left, 0, 0, 0)
            k = np.int64(symbols[b, t])
            at, c = adaptive.forward_symbol(k, counts, sig, sign, gt, prefix, reciprocal, probs,
                                            bins, at, log2)
            cost += c
            left = k
    return cost


def coder_bits(symbols: np.ndarray, states: np.ndarray, classes: np.ndarray, n_classes: int,
               cmap: np.ndarray) -> float:
    counts = np.zeros((trellis.coder_contexts(n_classes, 0, 0), 2), dtype=np.int64)
    return _coder_cost(symbols, states.astype(np.int64), np.ascontiguousarray(classes),
                       n_classes, cmap, counts, adaptive.RECIPROCAL, adaptive.LOG2)


def static_bits(symbols: np.ndarray, contexts: np.ndarray) -> float:
    """Σ of each context's empirical entropy (no model cost)."""
    width = int(np.abs(symbols).max(initial=0)) + 1
    pairs = contexts.reshape(-1).astype(np.int64) * (2 * width + 1) + symbols.reshape(-1) + width
    counts = np.bincount(pairs).astype(np.float64)
    counts = counts.reshape(-1)
    total = 0.0
    span = 2 * width + 1
    padded = np.zeros(-(-counts.size // span) * span)
    padded[: counts.size] = counts
    for row in padded.reshape(-1, span):
        used = row[row > 0]
        if used.size:
            total -= float((used * np.log2(used / used.sum())).sum())
    return total


# ---------------------------------------------------------------------------------------
# The tensors as the 3-bpw file codes them


def coded_values(dna: str, names: dict[str, tuple[str, int | None]]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{key: (x = w / (c_j · Δ_r) float64, Δ_r per row, the file's levels or None)} of
    each tensor, as the file's steps and column factors give them."""
    f = read_dna_file(dna)
    weights = load_weights(minilm_path())
    entries = {e["name"]: e for e in f.entries}
    out = {}
    for key, (name, rows) in names.items():
        entry = entries[name]
        params = entry["params"]
        sections = f.read_sections(name)
        shape = entry["shape"]
        n = shape[0]
        if "grid" in params:
            steps = decode_grid(params["grid"], sections["steps"], params["rows"], name)
        else:
            steps = np.full(n, float(params["step"]))
        w = weights.tensor(name).double().numpy().reshape(n, -1)
        if "columns" in params:
            raw = decompress_bytes(sections["columns"], 4 * params["columns"], name)
            factors = np.frombuffer(raw, dtype="<f4").astype(np.float64)
            w = (weights.tensor(name).float().numpy().reshape(n, -1)
                 / factors.astype(np.float32)).astype(np.float64)
        x = w / steps[:, None]
        levels = None
        if rows is None:
            levels = np.concatenate(list(tensor._trellis_rows(params["model"], sections, n,
                                                              x.shape[1], name, f.version)))
        else:
            x, steps = x[:rows], steps[:rows]
        out[key] = (np.ascontiguousarray(x), steps, levels)
    return out


# ---------------------------------------------------------------------------------------
# The comparison


def context_map(states: int, groups: int) -> np.ndarray:
    """Each state's context group: state mod ``groups`` (keeps the quantiser)."""
    return np.arange(states, dtype=np.int64) % groups


def measure(x: np.ndarray, steps: np.ndarray, table: np.ndarray, factor: float,
            lam: float) -> dict:
    """One coding of x / factor with ``table``: bits (the one coder's, the static
    contexts' entropy with the codec's groups, and with every state its own), SNR dB of the
    tensor as coded, the search's CPU seconds."""
    rows, columns = x.shape
    n = table.shape[0]
    xf = x / factor
    n_classes = tensor.trellis_classes(rows * columns, rows)
    groups = tensor.trellis_groups(rows * columns)
    classes = trellis.class_of(np.abs(xf).mean(axis=1), n_classes)
    group = context_map(n, groups)
    bits = learn(xf, classes, n_classes, group, groups, table, lam)
    start = time.process_time()
    symbols, states = search(xf, classes, n_classes, group, table, bits, lam)
    cpu = time.process_time() - start
    q = (states & 1).astype(np.float64)
    levels = 2.0 * symbols - q * np.sign(symbols)
    scale = steps[:, None] * factor
    noise = float((((xf - levels) * scale) ** 2).sum())
    signal = float(((x * steps[:, None]) ** 2).sum())
    contexts = group[states] * n_classes + classes[:, None]
    full = states.astype(np.int64) * n_classes + classes[:, None]
    return {"coder": coder_bits(symbols, states, classes, n_classes, context_map(n, 8))
            / x.size,
            "static": static_bits(symbols, contexts) / x.size,
            "static_full": static_bits(symbols, full) / x.size,
            "snr": 10 * np.log10(signal / noise), "cpu": cpu}


def at_rate(points: list[dict], rate: float, key: str) -> float:
    """SNR at ``rate`` (bits/weight by ``key``) on the points' curve: linear
    interpolation, or the end segment's line beyond it."""
    pts = sorted((p[key], p["snr"]) for p in points)
    r = np.array([p[0] for p in pts])
    s = np.array([p[1] for p in pts])
    if rate <= r[0]:
        return float(s[0] + (rate - r[0]) * (s[1] - s[0]) / (r[1] - r[0]))
    if rate >= r[-1]:
        return float(s[-1] + (rate - r[-1]) * (s[-1] - s[-2]) / (r[-1] - r[-2]))
    return float(np.interp(rate, r, s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dna", default="m3.dna", help="MiniLM coded at 3 bits per weight")
    parser.add_argument("--states", default="8,16,32,64")
    parser.add_argument("--factors", default="0.9,0.95,1,1.05,1.1")
    parser.add_argument("--lambdas", default="0.14",
                        help="λs of the search (the best of their curves at each rate); 0.14 "
                        "must be one")
    parser.add_argument("--tensors", default=",".join(TENSORS))
    parser.add_argument("--samples", type=int, default=100000,
                        help="values of the tables' granular-gain search")
    parser.add_argument("--tables", action="store_true", help="only the tables")
    args = parser.parse_args()
    counts = [int(s) for s in args.states.split(",")]
    if args.tables:
        nus = [int(np.log2(c)) for c in counts]
        start = time.process_time()
        found = best_tables(nus, args.samples)
        print(f"tables ({time.process_time() - start:.0f} CPU s):")
        rng = np.random.default_rng(1)
        check = rng.uniform(20.0, 2000.0, args.samples)
        for nu, (gain, h1, h0, swap, table) in found.items():
            ung = UNGERBOECK.get(nu)
            figure = "" if ung is None else \
                f", Ungerboeck ({ung[0]:o}, {ung[1]:o}): " + " / ".join(
                    f"{granular_gain(trellis.dq_table(nu, *ung, sw), check):.3f}"
                    for sw in (False, True))
            print(f"  {1 << nu} states: h1 {h1:o}, h0 {h0:o}, Q1 parities swapped {swap}: "
                  f"granular gain {gain:.3f} dB{figure}")
            print(f"    NEXT_STATE {table.tolist()}")
        same = np.array_equal(trellis.dq_table(3, 0o4, 0o13, True), trellis.NEXT_STATE)
        print(f"  NNCodec's 8-state table: {granular_gain(trellis.NEXT_STATE, check):.3f} dB, "
              f"= Ungerboeck's (04, 13) with Q1 swapped: {same}")
        return
    tables = {c: trellis.TABLES[c] if c in trellis.TABLES
              else trellis.dq_table(int(np.log2(c)), *TABLES[c]) for c in counts}
    factors = [float(f) for f in args.factors.split(",")]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    keys = args.tensors.split(",")
    values = coded_values(args.dna, {k: TENSORS[k] for k in keys})
    print("\n| tensor | elements | states | bits/weight (coder) at f = 1 | SNR dB at f = 1 "
          "| ΔSNR dB at the 8-state rate: coder | static | static, all states | "
          "search CPU ×8 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[int, list[tuple[int, float]]] = {c: [] for c in counts}
    for key in keys:
        x, steps, levels = values[key]
        if levels is not None:
            rows, columns = x.shape
            saved = tensor.TRELLIS_STATES
            tensor.TRELLIS_STATES = trellis.STATES  # the 3-bpw file's
            try:
                search_ = tensor._learnt_trellis(
                    np.abs(x).mean(axis=1), x[:: tensor.trellis_stride(rows, columns)].copy(),
                    rows, columns)
            finally:
                tensor.TRELLIS_STATES = saved
            sym, states = search(x, search_.classes, search_.n_classes,
                                 trellis.state_groups(search_.groups), trellis.NEXT_STATE,
                                 search_.bits)
            own = trellis.quantize(x, search_.classes, search_.n_classes, search_.groups,
                                   search_.bits)
            mine = 2.0 * sym - (states & 1) * np.sign(sym)
            print(f"<!-- {key}: the generic 8-state search gives the codec's symbols: "
                  f"{np.array_equal(sym, own)}, the file's levels: "
                  f"{np.array_equal(mine, levels)} -->")
        grid = list(itertools.product(lambdas, factors))
        points = {c: [measure(x, steps, tables[c], f, lam) for lam, f in grid] for c in counts}
        home = grid.index((trellis.DEFAULT_LAMBDA, 1.0))
        ref = points[8][home]
        for c in counts:
            one = points[c][home]
            gains = [envelope(points[c], ref[k], k, lambdas, factors)
                     - envelope(points[8], ref[k], k, lambdas, factors)
                     for k in ("coder", "static", "static_full")]
            cpu = np.mean([p["cpu"] for p in points[c]]) / np.mean([p["cpu"] for p in points[8]])
            summary[c].append((x.size, gains[0]))
            print(f"| {key} | {x.size} | {c} | {one['coder']:.3f} | {one['snr']:.2f} | "
                  f"{gains[0]:+.3f} | {gains[1]:+.3f} | {gains[2]:+.3f} | {cpu:.1f} |",
                  flush=True)
    print()
    for c in counts:
        sizes = np.array([n for n, _ in summary[c]], dtype=np.float64)
        gains = np.array([g for _, g in summary[c]])
        print(f"{c} states: element-weighted ΔSNR (coder) "
              f"{np.sum(sizes * gains) / sizes.sum():+.3f} dB over {', '.join(keys)}")


def envelope(points: list[dict], rate: float, key: str, lambdas: list[float],
             factors: list[float]) -> float:
    """The best SNR at ``rate`` over the λ curves (each over the factors)."""
    per = len(factors)
    return max(at_rate(points[i * per:(i + 1) * per], rate, key) for i in range(len(lambdas)))


if __name__ == "__main__":
    main()
