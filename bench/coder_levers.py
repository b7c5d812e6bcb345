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
- ``column``: the same coder with its column context (format version 18,
  `trellis.COLUMN_BUCKETS`: ``sig`` and ``gt`` also split by the column's mean |k| over
  the rows above against the mean |k| of those rows, in four buckets);
- ``floor_loses``: whether the streams' histograms rule the coder out before any walk
  (`tensor._floor_loses`), and ``taken_column``: whether the gate's coding has the column
  context.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from adaptive_probe import _coded_params, symbols_of  # noqa: E402

from weightdna.codec import tensor, trellis  # noqa: E402
from weightdna.codec.container import read_dna_file  # noqa: E402


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
        column, _ = trellis.coder_bits([(symbols, classes)], n_classes, symbols.shape[1],
                                       0, 0, trellis.COLUMN_BUCKETS)
        row = {"name": entry["name"], "weights": int(symbols.size), "coded": coded,
               "coder": bits / 8 + 8, "bins": bins,
               "saved_per_bin": (8 * coded - bits) / bins,
               "floor": (8 * coded - bits) / bins >= tensor.CODER_BITS_PER_BIN,
               "column": column / 8 + 8, "sample": None}
        # The encoder's own decision on these symbols: the streams rebuilt from them.
        streams = tensor._Symbols(symbols.size, groups * n_classes)
        for start, stop in tensor._row_blocks(*symbols.shape):
            _, contexts = trellis.reconstruct(symbols[start:stop], classes[start:stop],
                                              n_classes, groups)
            streams.add(trellis.split_streams(symbols[start:stop], contexts,
                                              groups * n_classes))
        stride = tensor._coder_stride(symbols.size)
        streams.sample = [symbols[::stride]]
        # the gate's estimate of the column context's saving (bytes), on the sample
        row["column_estimate"] = (None if stride == 1 else tensor._column_gain(
            streams.sample[0], classes[::stride], n_classes, symbols.size) / 8)
        verdicts: list[bool] = []
        floors: list[bool] = []
        sample_wins, floor_loses = tensor._sample_wins, tensor._floor_loses

        def spy(*args, _wins=sample_wins, _verdicts=verdicts, **kwargs) -> bool:
            _verdicts.append(_wins(*args, **kwargs))
            return _verdicts[-1]

        def floor_spy(*args, _loses=floor_loses, _floors=floors, **kwargs) -> bool:
            _floors.append(_loses(*args, **kwargs))
            return _floors[-1]

        tensor._sample_wins, tensor._floor_loses = spy, floor_spy
        try:
            one = tensor._one_coder(SimpleNamespace(classes=classes, n_classes=n_classes,
                                                    groups=groups), streams, coded)
        finally:
            tensor._sample_wins, tensor._floor_loses = sample_wins, floor_loses
        row["sample"] = verdicts[0] if verdicts else None
        row["floor_loses"] = floors[0] if floors else None
        row["taken"] = one is not None
        row["taken_column"] = one is not None and "column" in one[0]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = probe(args.file)
    print("| tensor | weights | coded bytes | coder Δ% | saved bits/bin | floor | floor "
          "loses | sample | taken | + column Δ% | column's estimate Δ% |")
    print("|---|---:|---:|---:|---:|---|---|---|---|---:|---:|")
    for r in rows:
        sample = "–" if r["sample"] is None else ("wins" if r["sample"] else "loses")
        print(f"| {r['name']} | {r['weights']} | {r['coded']} | "
              f"{100 * (r['coder'] / r['coded'] - 1):+.2f} | {r['saved_per_bin']:+.4f} | "
              f"{'pass' if r['floor'] else 'fail'} | "
              f"{'–' if r['floor_loses'] is None else r['floor_loses']} | {sample} | "
              f"{('column' if r['taken_column'] else 'yes') if r['taken'] else 'no'} | "
              f"{100 * (r['column'] / r['coded'] - 1):+.2f} | "
              + ("–" if r["column_estimate"] is None else
                 f"{100 * ((r['coder'] - r['column_estimate']) / r['coded'] - 1):+.2f}")
              + " |")
    coded = sum(r["coded"] for r in rows)
    file_bytes = args.file.stat().st_size
    for label, pick in (("coder on every trellis tensor", lambda r: r["coder"]),
                        ("coder where the gate takes it",
                         lambda r: r["coder"] if r["taken"] else r["coded"]),
                        ("coder where the floor passes",
                         lambda r: r["coder"] if r["floor"] else r["coded"]),
                        ("coder + column on every trellis tensor", lambda r: r["column"]),
                        ("best of coder / coder + column where each passes the limit",
                         lambda r: min([r["coded"], *(
                             v for v in (r["coder"], r["column"])
                             if v < r["coded"] - tensor.CODER_BITS_PER_BIN * r["bins"] / 8)])),
                        ("the gate's choice (column context included)",
                         lambda r: (min(r["coder"], r["column"]) if r["taken"]
                                    else r["coded"]))):
        total = sum(pick(r) for r in rows)
        print(f"{label}: {total - coded:+.0f} bytes, {100 * (total / coded - 1):+.3f}% of the "
              f"trellis sections, {100 * (total - coded) / file_bytes:+.3f}% of the file")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
