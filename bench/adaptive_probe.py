"""What adaptive context models would save on the symbols the codec codes today (issues
15 and 11): ideal code lengths on the real symbols of real files, against their coded bytes.

    .venv/bin/python bench/adaptive_probe.py [--models minilm,silero,ocrcls] [--rates 2,3,4]
        [--out results/adaptive-probe.json]

Each model is compressed by `compress_model` at a bits-per-weight target (no
sensitivities, no calibration: the plain library call; the static models only,
``AUTO_ADAPTIVE`` off); every tensor coded with symbols
(``quantized`` or a prediction's residual; trellis or scalar) is decoded back to its
symbols in element order, with each element's trellis state and row class. Today's cost
is the tensor's ``symbols`` + ``histogram`` section bytes; its stream descriptors in the
header (their JSON, zstd-compressed alone: an upper bound on their share of the compressed
header) are shown beside it, not counted (every alternative but one stream per tensor
still stores one per stream). The alternatives are ideal code lengths (Σ −log2 p, p as
the coder would hold it) of the same symbols, plus 8 bytes (the range, the rANS state):

- ``static``: today's contexts (state group × row class), each context's empirical
  entropy: the floor of any static model of these contexts, its table free;
- ``adaptive-ms``: today's contexts, an adaptive frequency count per symbol of the
  tensor's range (init 1, +32 per symbol, halved above 2^16);
- ``cabac-*``: one coder per tensor, a binarisation as DeepCABAC's — significance (context:
  trellis state × row class), sign and "greater than i" flags for i = 1..GTX (context:
  quantiser × row class), then an Exp-Golomb(0) remainder in equiprobable bits — each
  flag under an adaptive binary probability: ``4/7``, ``6/9`` two rates as VVC's
  (p ← (p_a + p_b)/2, p_r += (bit·2^15 − p_r) >> r); ``counts`` a count per context
  (p = (ones + ½)/(total + 1), halved at 2^12; ``h15`` at 2^15), ``g16`` 16 flags;
  ``+left1`` / ``+left2+above1`` the contexts also split by the previous symbol in the row
  (|k| capped at 1 or 2) and the one above (same column, previous row, capped at 1);
- ``streams-adaptive``: `weightdna.codec.adaptive` as built (format version 15) on today's
  streams, each stream coded so where that is smaller, as `encode_symbols` chooses.

The saving of each alternative is reported as a share of the tensors' coded sections and
of the whole file, and as dB at ≈6.02 dB per bit per weight.

``--rd``: instead, the model compressed at each rate with the adaptive model off and on
(``AUTO_ADAPTIVE``; off by default), each file decoded: its size, the pooled SNR of every
tensor (10·log10 Σw²/Σ(w − ŵ)²), the streams under the adaptive model, the decode time.
``--speed``: the decoders' throughput on one core (symbols per CPU second), symbols of a
quantised Laplace (2^22 of them, best of 5): the adaptive model against the static ones'
table decoder; and the mean bins per symbol of the adaptive one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import torch

from weightdna.codec import adaptive, entropy, trellis
from weightdna.codec.compress import compress_model
from weightdna.codec.container import read_dna_file
from weightdna.codec.entropy import decode_symbols
from weightdna.codec.quantize import row_shape
from weightdna.codec.ratecontrol import Target
from weightdna.codec.tensor import _trellis_reader
from weightdna.codec.zstdframes import compress_bytes
from weightdna.weights import ModelWeights, load_weights, minilm_path

GTX = 8
ONE = 1 << 15
# cabac variants: (left cap, above cap, r1, r2, GTX); r1 = 0: counts halved at 2^r2.
CABAC = {"cabac-4/7": (0, 0, 4, 7, GTX), "cabac-6/9": (0, 0, 6, 9, GTX),
         "cabac-counts": (0, 0, 0, 12, GTX), "cabac-counts-h15": (0, 0, 0, 15, GTX),
         "cabac-counts-g16": (0, 0, 0, 12, 16), "cabac-counts+left1": (1, 0, 0, 12, GTX),
         "cabac-counts+left2+above1": (2, 1, 0, 12, GTX)}
KINDS = ("static", "adaptive-ms", *CABAC, "streams-adaptive")


def _model_path(name: str) -> Path:
    if name == "minilm":
        return minilm_path()
    from weightdna.evaluate import unseen
    return {"silero": unseen.silero_path, "ocrcls": unseen.ocr_classifier_path,
            "ocrrec": unseen.ocr_recognizer_path, "ocr": unseen.ocr_detector_path}[name]()


def _coded_params(entry: dict) -> dict | None:
    """The quantized params of an entry coded with symbols, or None."""
    params = entry["params"]
    rep = entry["representation"]
    if rep == "raw":
        return None
    if rep == "transform":
        params = params["coefficients"]
    elif rep != "quantized":
        if rep == "factored+residual":
            return None
        params = params["residual"]
    return params if isinstance(params, dict) and "model" in params else None


def symbols_of(dna, entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """(symbols rows × columns int32, row classes uint8, context groups per state, classes,
    trellis or not) of a coded entry."""
    params = _coded_params(entry)
    if params is None:
        return None
    shape = tuple(entry["shape"])
    rows, columns = row_shape(shape)
    sections = dna.read_sections(entry["name"])
    model = params["model"]
    if model["kind"] == "trellis":
        reader = _trellis_reader(model, sections, rows, entry["name"], dna.version)
        out = np.empty((rows, columns), dtype=np.int32)
        for start in range(0, rows, 4096):
            stop = min(rows, start + 4096)
            out[start:stop] = reader.rows(start, stop, columns)[0]
        return (out, reader.classes, reader.group, model["classes"], 1)
    coded = {k: sections[k] for k in ("symbols", "histogram") if k in sections}
    flat = decode_symbols(model, coded, rows * columns, entry["name"], dna.version)
    return (flat.reshape(rows, columns), np.zeros(rows, np.uint8),
            np.zeros(trellis.STATES, np.int64), 1, 0)


@numba.njit(cache=True)
def _log_table() -> np.ndarray:
    t = np.empty(ONE + 1)
    t[0] = 30.0
    for p in range(1, ONE + 1):
        t[p] = -math.log2(p / ONE)
    return t


@numba.njit(cache=True)
def _bin(probs: np.ndarray, ctx: int, bit: int, logs: np.ndarray, r1: int, r2: int) -> float:
    """Cost of ``bit`` in context ``ctx``, then the update. r1 > 0: the two-rate estimator
    (probs[ctx] = p_r1, p_r2 of a 1 in 15 bits); r1 = 0: counts (probs[ctx] = ones, total;
    p = (ones + ½)/(total + 1), halved when the total reaches 2^r2)."""
    if r1 > 0:
        p1 = (probs[ctx, 0] + probs[ctx, 1]) >> 1
    else:
        p1 = ((2 * probs[ctx, 0] + 1) * ONE) // (2 * probs[ctx, 1] + 2)
    p1 = min(max(p1, 32), ONE - 32)
    cost = logs[p1] if bit else logs[ONE - p1]
    if r1 > 0:
        target = ONE if bit else 0
        probs[ctx, 0] += (target - probs[ctx, 0]) >> r1
        probs[ctx, 1] += (target - probs[ctx, 1]) >> r2
    else:
        probs[ctx, 0] += bit
        probs[ctx, 1] += 1
        if probs[ctx, 1] >= 1 << r2:
            probs[ctx, 0] = (probs[ctx, 0] + 1) >> 1
            probs[ctx, 1] = (probs[ctx, 1] + 1) >> 1
    return cost


@numba.njit(cache=True)
def _cabac(symbols: np.ndarray, classes: np.ndarray, n_classes: int, trellis_on: int,
           left_cap: int, above_cap: int, r1: int, r2: int, gtx_count: int,
           logs: np.ndarray) -> float:
    """Ideal bits of the symbols under the binarised adaptive model; neighbours' |k| capped
    at ``left_cap`` / ``above_cap`` (0: not used)."""
    n, length = symbols.shape
    buckets = (left_cap + 1) * (above_cap + 1)
    init = ONE // 2 if r1 > 0 else 0
    sig = np.full((8 * n_classes * buckets, 2), init, dtype=np.int64)
    sgn = np.full((2 * n_classes * 3, 2), init, dtype=np.int64)
    gtx = np.full((gtx_count * 2 * n_classes * buckets, 2), init, dtype=np.int64)
    total = 0.0
    for b in range(n):
        state = 0
        klass = classes[b]
        for t in range(length):
            k = symbols[b, t]
            left = symbols[b, t - 1] if (left_cap and t > 0) else 0
            above = symbols[b - 1, t] if (above_cap and b > 0) else 0
            nb = min(abs(left), left_cap) * (above_cap + 1) + min(abs(above), above_cap)
            q = state & 1
            c = (state * n_classes + klass) * buckets + nb
            total += _bin(sig, c, 1 if k != 0 else 0, logs, r1, r2)
            if k != 0:
                ls = 0 if left == 0 else (1 if left < 0 else 2)
                total += _bin(sgn, (q * n_classes + klass) * 3 + ls, 1 if k < 0 else 0, logs,
                              r1, r2)
                a = abs(k)
                i = 1
                while i <= gtx_count:
                    g = 1 if a > i else 0
                    total += _bin(gtx, (((i - 1) * 2 + q) * n_classes + klass) * buckets + nb,
                                  g, logs, r1, r2)
                    if g == 0:
                        break
                    i += 1
                if a > gtx_count:
                    r = a - gtx_count - 1  # Exp-Golomb(0): 2·floor(log2(r + 1)) + 1 bits
                    total += 2 * math.floor(math.log2(r + 1)) + 1
            if trellis_on:
                state = _next(state, k & 1)
    return total


@numba.njit(inline="always")
def _next(state: int, parity: int) -> int:
    # NEXT_STATE of weightdna.codec.trellis, row-major [state, parity]
    table = (0, 2, 7, 5, 1, 3, 6, 4, 2, 0, 5, 7, 3, 1, 4, 6)
    return table[2 * state + parity]


@numba.njit(cache=True)
def _contexts(symbols: np.ndarray, classes: np.ndarray, n_classes: int, group: np.ndarray,
              trellis_on: int) -> np.ndarray:
    n, length = symbols.shape
    out = np.empty((n, length), dtype=np.int64)
    for b in range(n):
        state = 0
        for t in range(length):
            out[b, t] = group[state] * n_classes + classes[b]
            if trellis_on:
                state = _next(state, symbols[b, t] & 1)
    return out


@numba.njit(cache=True)
def _adaptive_ms(symbols: np.ndarray, contexts: np.ndarray, count: int, lo: int,
                 hi: int) -> float:
    span = hi - lo + 1
    freq = np.ones((count, span), dtype=np.int64)
    totals = np.full(count, span, dtype=np.int64)
    flat = symbols.reshape(-1)
    ctxs = contexts.reshape(-1)
    bits = 0.0
    for i in range(flat.size):
        c = ctxs[i]
        s = flat[i] - lo
        bits -= math.log2(freq[c, s] / totals[c])
        freq[c, s] += 32
        totals[c] += 32
        if totals[c] > 1 << 16:
            tot = 0
            for j in range(span):
                freq[c, j] = (freq[c, j] + 1) >> 1
                tot += freq[c, j]
            totals[c] = tot
    return bits


def _static_bits(symbols: np.ndarray, contexts: np.ndarray, count: int) -> float:
    lo = int(symbols.min())
    span = int(symbols.max()) - lo + 1
    pairs = contexts.reshape(-1) * span + (symbols.reshape(-1) - lo)
    counts = np.bincount(pairs, minlength=count * span).reshape(count, span).astype(float)
    bits = 0.0
    for row in counts:
        nz = row[row > 0]
        if nz.size:
            bits -= float((nz * np.log2(nz / nz.sum())).sum())
    return bits


def probe_tensor(dna, entry: dict, logs: np.ndarray) -> dict | None:
    got = symbols_of(dna, entry)
    if got is None:
        return None
    symbols, classes, group, n_classes, on = got
    sections = dna.read_sections(entry["name"])
    params = _coded_params(entry)
    coded = len(sections.get("symbols", b"")) + len(sections.get("histogram", b""))
    descriptors = params["model"].get("streams", params["model"])
    header = len(compress_bytes(json.dumps(descriptors).encode()))
    count = int(group.max()) * n_classes + n_classes
    contexts = _contexts(symbols, classes, n_classes, group, on)
    classes64 = classes.astype(np.int64)
    bits = {
        "static": _static_bits(symbols, contexts, count),
        "adaptive-ms": _adaptive_ms(symbols, contexts, count, int(symbols.min()),
                                    int(symbols.max())),
    }
    for kind, (left, above, r1, r2, gtx) in CABAC.items():
        bits[kind] = _cabac(symbols, classes64, n_classes, on, left, above, r1, r2, gtx, logs)
    # weightdna.codec.adaptive as built, on today's streams, each where smaller (+ 8 bytes:
    # its final state), as `encode_symbols` chooses
    streams = trellis.split_streams(symbols, contexts, count)
    descriptors = params["model"].get("streams") or [{"bytes": coded}]
    chosen = 0.0
    for stream, d in zip(streams, descriptors, strict=True):
        own = d["bytes"] + d.get("histogram", 0)
        chosen += min(own, adaptive.ideal_bits([stream])[0] / 8 + 8) if stream.size else own
    bits["streams-adaptive"] = 8 * (chosen - 8)
    return {"name": entry["name"], "weights": int(symbols.size), "trellis": bool(on),
            "coded": coded, "header": header,
            "ideal": {k: v / 8 + 8 for k, v in bits.items()}}  # + 8 bytes: range, end


def kind_of(name: str) -> str:
    for part in ("query", "key", "value", "attention.output", "intermediate", "output",
                 "word_embeddings", "position_embeddings"):
        if part in name:
            return part
    return "conv/other"


def summarise(rows: list[dict], file_bytes: int, label: str) -> list[str]:
    lines = []
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(kind_of(r["name"]), []).append(r)
    groups["whole model (coded tensors)"] = rows
    for kind, members in groups.items():
        weights = sum(r["weights"] for r in members)
        today = sum(r["coded"] for r in members)
        header = sum(r["header"] for r in members)
        cells = [f"{100 * header / today:.2f}%"]
        for k in KINDS:
            ideal = sum(r["ideal"][k] for r in members)
            saved = today - ideal
            cells.append(f"{100 * saved / today:+.2f}% ({6.02 * 8 * saved / weights:+.3f} dB)")
        lines.append(f"| {label} | {kind} | {weights} | {8 * today / weights:.3f} | "
                     + " | ".join(cells) + " |")
    rows_all = sum(r["coded"] for r in rows)
    best = sum(min(*(r["ideal"][k] for k in KINDS[1:]), r["coded"]) for r in rows)
    built = sum(r["ideal"]["streams-adaptive"] for r in rows)
    lines.append(f"| {label} | file: {file_bytes} B, the coded sections "
                 f"{100 * rows_all / file_bytes:.1f}% of it; the best adaptive alternative of "
                 f"each tensor, where smaller, saves {100 * (rows_all - best) / file_bytes:.2f}% "
                 f"of the file, streams-adaptive {100 * (rows_all - built) / file_bytes:.2f}% |")
    return lines


def rd(model: str, weights: ModelWeights, rates: list[float], folder: Path) -> list[dict]:
    """``--rd``: each rate coded with the adaptive model off and on."""
    state = weights.state_dict()
    signal = sum(float((t.double() ** 2).sum()) for t in state.values()
                 if t.is_floating_point())
    rows = []
    for rate in rates:
        for on in (False, True):
            entropy.AUTO_ADAPTIVE = on
            out = folder / f"{model}-{rate}-{on}.dna"
            compress_model(weights, out, Target("bits_per_weight", rate), overwrite=True)
            dna = read_dna_file(out)
            start = time.perf_counter()
            restored = {n: dna.tensor(n) for n in dna.names}
            seconds = time.perf_counter() - start
            noise = sum(float(((restored[n].double() - t.double()) ** 2).sum())
                        for n, t in state.items() if t.is_floating_point())
            kinds = [d["model"]["kind"] for e in dna.entries
                     if (p := _coded_params(e)) is not None
                     for d in p["model"].get("streams", [{"model": p["model"]}])]
            row = {"model": model, "rate": rate, "adaptive": on, "file": dna.file_bytes,
                   "version": dna.version, "bpw": 8 * dna.file_bytes / weights.total_params,
                   "snr": 10 * math.log10(signal / noise), "decode_s": seconds,
                   "streams": len(kinds), "adaptive_streams": kinds.count("adaptive")}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    entropy.AUTO_ADAPTIVE = False
    return rows


def speed() -> None:
    """``--speed``: M symbols/s of each decoder on the same streams."""
    from weightdna.codec.entries import ADAPTIVE_VERSION

    print("| Laplace scale | bits/symbol | bins/symbol | adaptive M/s | static (table) M/s |"
          "\n|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for scale in (0.3, 1.0, 3.0, 10.0):
        x = np.round(rng.laplace(0, scale, 1 << 22)).astype(np.int32)
        times = {}
        for kind in ("adaptive", "laplace"):
            model, sections = entropy.encode_symbols(x, kind)
            out = np.empty(x.size, dtype=np.int32)
            best = math.inf
            for _ in range(5):  # CPU seconds: the box is shared
                start = time.process_time()
                entropy.decode_symbols(model, sections, x.size, version=ADAPTIVE_VERSION,
                                       out=out)
                best = min(best, time.process_time() - start)
            assert np.array_equal(out, x)
            times[kind] = (best, len(sections["symbols"]))
        bins = adaptive.ideal_bits([x])[1] / x.size
        print(f"| {scale:g} | {8 * times['adaptive'][1] / x.size:.3f} | {bins:.2f} | "
              f"{x.size / times['adaptive'][0] / 1e6:.1f} | "
              f"{x.size / times['laplace'][0] / 1e6:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,silero,ocrcls")
    parser.add_argument("--rates", default="2,3,4")
    parser.add_argument("--tensors", default="", help="comma-separated names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/adaptive-probe.json"))
    parser.add_argument("--rd", action="store_true", help="compress with it off and on")
    parser.add_argument("--speed", action="store_true", help="the decoders' throughput")
    args = parser.parse_args(argv)
    if args.speed:
        speed()
        return 0
    torch.set_num_threads(1)
    entropy.AUTO_ADAPTIVE = False  # today's coding: the static models only
    logs = _log_table()
    results, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            weights = load_weights(_model_path(model))
            if args.tensors:
                weights = ModelWeights.from_tensors(
                    {n: weights.tensor(n) for n in args.tensors.split(",")})
            if args.rd:
                results += rd(model, weights, [float(r) for r in args.rates.split(",")],
                              Path(tmp))
                continue
            for rate in (float(r) for r in args.rates.split(",")):
                out = Path(tmp) / f"{model}-{rate}.dna"
                compress_model(weights, out, Target("bits_per_weight", rate), overwrite=True)
                dna = read_dna_file(out)
                rows = [r for e in dna.entries if (r := probe_tensor(dna, e, logs))]
                label = f"{model} {rate:g} bpw"
                lines += summarise(rows, dna.file_bytes, label)
                results.append({"model": model, "rate": rate, "file": dna.file_bytes,
                                "tensors": rows})
                print("\n".join(lines[-3:]), file=sys.stderr, flush=True)
    if args.rd:
        print("| model | bpw target | adaptive | file bytes | bpw | version | pooled SNR dB | "
              "adaptive streams | decode s |\n|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['model']} | {r['rate']:g} | {'on' if r['adaptive'] else 'off'} | "
                  f"{r['file']} | {r['bpw']:.4f} | {r['version']} | {r['snr']:.3f} | "
                  f"{r['adaptive_streams']}/{r['streams']} | {r['decode_s']:.2f} |")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        return 0
    header = ("| file | tensors | weights | today bpw (sections) | descriptors | "
              + " | ".join(KINDS) + " |\n|---|---|---:|---:|---:|" + "---:|" * len(KINDS))
    print(header)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
