"""The trellis coder's gate (`weightdna.codec.tensor._one_coder`) on a model: what it decides
and what it costs, at each rate.

    PYTHONPATH=. .venv/bin/python bench/coder_gate.py [--model M] [--rates 2,3,4] [--audit]
        [--time-only] [--json OUT]

`compress_model` on the model (default: all-MiniLM-L6-v2) at each bits-per-weight target,
torch and BLAS on one thread. For every trellis coding the rate control makes: whether the
coder's floor judged it (a matrix of 8 state contexts whose rows are not ordered by scale,
`_classes_interleaved`), whether the floor skipped it (`_floor_loses`), whether its
statistics drift along the rows (`_gate_floor`), and whether the
coder was kept. Per rate: those counts, the CPU seconds spent in `_one_coder` (the gate
and the coder's real coding where it is kept) and in the whole `compress_model`, the
file's sha256. ``--audit`` (slow: every judged matrix coded in full by the coder too):
for each floor skip, whether the whole coding would have been refused as well (it must:
else the floor changed the file), and the least ratio of the coder's ideal bits to its
floor over the judged matrices (`CODER_FLOOR_SLACK` must stay under 1 − it).
``--time-only``: the codings, those kept and the CPU seconds only (`_one_coder` called as
it is: also on a tree before the floor, ``PYTHONPATH=OLD_TREE``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path


def run(model: str | None, rates: list[float], audit: bool,
        time_only: bool = False) -> list[dict]:
    import torch
    from threadpoolctl import threadpool_limits

    from weightdna.codec import tensor, trellis
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import load_weights, minilm_path

    torch.set_num_threads(1)
    threadpool_limits(1)
    weights = load_weights(model or minilm_path())
    one_coder = tensor._one_coder
    rows_out = []
    for rate in rates:
        seen = {"codings": 0, "judged": 0, "skipped": 0, "drifting": 0, "kept": 0,
                "wrong_skips": 0,
                "least_bits_over_floor": None, "gate_cpu_s": 0.0}

        def weighed(search, symbols, coded, kernel=False, seen=seen):  # noqa: ANN001, ANN202
            start = time.process_time()
            result = one_coder(search, symbols, coded, kernel)
            seen["gate_cpu_s"] += time.process_time() - start
            seen["codings"] += 1
            seen["kept"] += result is not None
            if time_only or kernel or search.groups != trellis.STATES or not symbols.used \
                    or not tensor._classes_interleaved(search):
                return result
            seen["judged"] += 1
            lo, hi = (int(v) for v in tensor.ans.span(symbols.buffer[:symbols.used]))
            counts, gate, bins, drifts = tensor._gate_floor(symbols, search, lo, hi)
            skipped = tensor._floor_loses(gate, bins, coded)
            seen["skipped"] += skipped
            seen["drifting"] += drifts
            if audit:
                rows = search.classes.size
                columns = symbols.used // rows
                floor, _ = tensor._coder_floor(counts, lo, search.n_classes)
                plan = trellis.coder_plan(tensor._WalkedBlocks(symbols, search, rows, columns),
                                          search.n_classes, columns, *trellis.NEIGHBOURS[0])
                ratio = plan.bits / floor
                least = seen["least_bits_over_floor"]
                seen["least_bits_over_floor"] = ratio if least is None else min(least, ratio)
                refused = (plan.bits / 8 + 8
                           >= coded - tensor.CODER_BITS_PER_BIN * plan.bins / 8)
                seen["wrong_skips"] += skipped and not refused
            return result

        tensor._one_coder = weighed
        try:
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder) / "m.dna"
                start = time.process_time()
                compress_model(weights, out, Target("bits_per_weight", rate), overwrite=True)
                cpu = time.process_time() - start
                digest = hashlib.sha256(out.read_bytes()).hexdigest()
        finally:
            tensor._one_coder = one_coder
        row = {"rate": rate, **seen, "cpu_s": cpu, "sha256": digest}
        if not audit or time_only:
            del row["wrong_skips"], row["least_bits_over_floor"]
        if time_only:
            del row["judged"], row["skipped"]
        print(json.dumps(row), flush=True)
        rows_out.append(row)
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model file or folder (default: MiniLM)")
    parser.add_argument("--rates", default="2,3,4")
    parser.add_argument("--audit", action="store_true")
    parser.add_argument("--time-only", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = run(args.model, [float(r) for r in args.rates.split(",")], args.audit,
               args.time_only)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
