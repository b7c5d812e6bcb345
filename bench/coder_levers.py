"""What the trellis tensors' one adaptive coder (format version 17) would save on a file's
own symbols, what its gate takes, and what a column context would add (issues 11/15).

    PYTHONPATH=$PWD .venv/bin/python bench/coder_levers.py FILE.dna [--out results/x.json]

``FILE.dna``: a file coded with the coder off (`tensor.TRELLIS_CODER` False: every trellis
tensor in its context streams), e.g. ``bench/minilm_last.py --variants coderoff --keep
DIR`` writes DIR/coderoff-3.dna. For each trellis tensor, its symbols in element order
(`bench/adaptive_probe.symbols_of`) and, as ideal code lengths plus 8 bytes (a few words
of the rANS stream) against its ``symbols`` + ``histogram`` bytes:

- ``coder``: the one coder as format version 17 codes it, without the neighbours
  (`trellis.coder_bits`), its saving per bin, and whether `CODER_BITS_PER_BIN` passes it;
- ``gate``: for a tensor of more than `CODER_WHOLE_ELEMENTS`, the sample's verdict
  (`tensor._sample_wins`), and whether `tensor._one_coder` keeps the coder;
- ``column``: the same coder with ``sig`` and ``gt`` also split by a context the decoder
  can keep (not in any format): the column's mean |k| over the rows above against the mean
  |k| of those rows, in four buckets (edges 0.7, 1, 1.4; the middle one on the first row).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from adaptive_probe import _coded_params, symbols_of  # noqa: E402

from weightdna.codec import adaptive, tensor, trellis  # noqa: E402
from weightdna.codec.container import read_dna_file  # noqa: E402

COLUMN_EDGES = (0.7, 1.0, 1.4)


def column_context(symbols: np.ndarray) -> np.ndarray:
    """Each symbol's column bucket (int64, 0 … len(COLUMN_EDGES)): the column's mean |k|
    over the rows above over the mean |k| of all those rows."""
    a = np.abs(symbols).astype(np.float64)
    rows, columns = a.shape
    above = np.cumsum(a, axis=0) - a
    seen = np.arange(rows)[:, None]
    column_mean = above / np.maximum(seen, 1)
    row_sums = a.sum(axis=1)
    overall = (np.cumsum(row_sums) - row_sums) / np.maximum(np.arange(rows) * columns, 1)
    ratio = column_mean / np.maximum(overall[:, None], 1e-12)
    out = np.searchsorted(np.array(COLUMN_EDGES), ratio, side="right")
    middle = len(COLUMN_EDGES) // 2
    out[(seen.ravel() == 0) | (overall == 0)] = middle
    return np.ascontiguousarray(out.astype(np.int64))


@numba.njit(cache=True)
def _split_coder_bits(symbols: np.ndarray, row_class: np.ndarray, classes: int,
                      extra: np.ndarray, buckets: int, next_state: np.ndarray,
                      reciprocal: np.ndarray, log2: np.ndarray) -> float:
    """Ideal bits of the one coder (no neighbours) with ``sig`` and ``gt`` split by
    ``extra`` (0 … buckets − 1); `adaptive.forward_symbol`'s binarisation and counts."""
    n, length = symbols.shape
    sign_base = 8 * classes * buckets
    gt_base = sign_base + 6 * classes
    prefix = gt_base + 2 * classes * buckets * adaptive.GTX
    counts = np.zeros((prefix + adaptive.MAX_PREFIX, 2), dtype=np.int64)
    probs = np.zeros(0, dtype=np.uint16)
    bits = np.zeros(0, dtype=np.uint8)
    cost = 0.0
    for b in range(n):
        klass = row_class[b]
        state = 0
        left = 0
        for t in range(length):
            k = np.int64(symbols[b, t])
            e = extra[b, t]
            q = state & 1
            left_sign = 0 if left == 0 else (1 if left < 0 else 2)
            sig = (state * classes + klass) * buckets + e
            sign = sign_base + (q * classes + klass) * 3 + left_sign
            gt = gt_base + ((q * classes + klass) * buckets + e) * adaptive.GTX
            _, c = adaptive.forward_symbol(k, counts, sig, sign, gt, prefix, reciprocal,
                                           probs, bits, 0, log2)
            cost += c
            left = k
            state = next_state[state, k & 1]
    return cost


def probe(path: Path) -> list[dict]:
    dna = read_dna_file(path)
    rows = []
    for entry in dna.entries:
        got = symbols_of(dna, entry)
        if got is None or not got[4]:
            continue
        symbols, classes, group, n_classes, _ = got
        sections = dna.read_sections(entry["name"])
        if "coder" in _coded_params(entry)["model"]:
            raise SystemExit(f"{entry['name']} is under the coder: code the file with it off")
        coded = len(sections.get("symbols", b"")) + len(sections.get("histogram", b""))
        classes = np.ascontiguousarray(classes, dtype=np.uint8)
        groups = int(group.max()) + 1
        bits, bins = trellis.coder_bits([(symbols, classes)], n_classes, symbols.shape[1],
                                        0, 0)
        column = _split_coder_bits(symbols, classes.astype(np.int64), n_classes,
                                   column_context(symbols), len(COLUMN_EDGES) + 1,
                                   trellis.NEXT_STATE, adaptive.RECIPROCAL, adaptive.LOG2)
        row = {"name": entry["name"], "weights": int(symbols.size), "coded": coded,
               "coder": bits / 8 + 8, "bins": bins,
               "saved_per_bin": (8 * coded - bits) / bins,
               "floor": (8 * coded - bits) / bins >= tensor.CODER_BITS_PER_BIN,
               "column": column / 8 + 8, "sample": None}
        # The encoder's own decision on these symbols: the streams rebuilt from them.
        _, contexts = trellis.reconstruct(symbols, classes, n_classes, groups)
        streams = [[s] for s in trellis.split_streams(symbols, contexts, groups * n_classes)]
        verdicts: list[bool] = []
        sample_wins = tensor._sample_wins

        def spy(*args, _wins=sample_wins, _verdicts=verdicts, **kwargs) -> bool:
            _verdicts.append(_wins(*args, **kwargs))
            return _verdicts[-1]

        tensor._sample_wins = spy
        try:
            one = tensor._one_coder(SimpleNamespace(classes=classes, n_classes=n_classes,
                                                    groups=groups), streams, coded)
        finally:
            tensor._sample_wins = sample_wins
        row["sample"] = verdicts[0] if verdicts else None
        row["taken"] = one is not None
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = probe(args.file)
    print("| tensor | weights | coded bytes | coder Δ% | saved bits/bin | floor | sample | "
          "taken | + column Δ% |")
    print("|---|---:|---:|---:|---:|---|---|---|---:|")
    for r in rows:
        sample = "–" if r["sample"] is None else ("wins" if r["sample"] else "loses")
        print(f"| {r['name']} | {r['weights']} | {r['coded']} | "
              f"{100 * (r['coder'] / r['coded'] - 1):+.2f} | {r['saved_per_bin']:+.4f} | "
              f"{'pass' if r['floor'] else 'fail'} | {sample} | "
              f"{'yes' if r['taken'] else 'no'} | {100 * (r['column'] / r['coded'] - 1):+.2f} |")
    coded = sum(r["coded"] for r in rows)
    file_bytes = args.file.stat().st_size
    for label, pick in (("coder on every trellis tensor", lambda r: r["coder"]),
                        ("coder where the gate takes it",
                         lambda r: r["coder"] if r["taken"] else r["coded"]),
                        ("coder where the floor passes",
                         lambda r: r["coder"] if r["floor"] else r["coded"]),
                        ("coder + column on every trellis tensor", lambda r: r["column"])):
        total = sum(pick(r) for r in rows)
        print(f"{label}: {total - coded:+.0f} bytes, {100 * (total / coded - 1):+.3f}% of the "
              f"trellis sections, {100 * (total - coded) / file_bytes:+.3f}% of the file")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
