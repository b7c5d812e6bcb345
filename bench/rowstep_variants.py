"""The panel under variants of the objective's per-row steps (issue 11, 2026-12-05).

    .venv/bin/python bench/rowstep_variants.py --variants high-rate,operating
        [--models magika,silero,ocr] [--rates 2,3] [--out results/rowstep_variants]

Each point as `bench/panel.py` runs it (`compress_model`'s defaults, objective ``layer``,
judged by function; ``minilm``: as `bench/minilm_rows.py --variants absolute+columns`
runs it, with data-free sensitivities, written to OUT/minilm-VARIANT.json), with the rate
control's switches for per-row steps set per variant (`weightdna.codec.ratecontrol`):

* ``high-rate``: per-row steps where the high-rate gain passes PER_ROW_MARGIN × their
  stored bits (`apply_objective`);
* ``operating``: those, and only where they also cost less than one step at the
  operating point (``ROW_STEPS_RULE = "operating"``);
* ``none``: no per-row steps from the objective (PER_ROW_MARGIN = inf);
* ``median-floor``: ``high-rate`` with no row's mean square counted below the median
  row's (ROW_FLOOR = 1: a row under the median is weighed as the median row);
* ``@E`` after any of them: the rows weighed with ``ROW_EXPONENT = E`` (1: relative to
  each row's own mean square, the default; 0: to the tensor's; 0.5 between).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from panel import (
    UNSEEN,
    batchnorm_subject,
    digits_subject,
    run_point,
    say,
    unseen_subject,
    write_rows,
)

from weightdna.codec import ratecontrol

FLOOR = ratecontrol.ROW_FLOOR


def set_variant(variant: str) -> None:
    rule, _, exponent = variant.partition("@")
    ratecontrol.ROW_EXPONENT = float(exponent or 1.0)
    ratecontrol.PER_ROW_MARGIN = math.inf if rule == "none" else 2.0
    ratecontrol.ROW_STEPS_RULE = "operating" if rule == "operating" else "high-rate"
    ratecontrol.ROW_FLOOR = 1.0 if rule == "median-floor" else FLOOR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="high-rate,operating")
    parser.add_argument("--models", default="magika,silero,ocr")
    parser.add_argument("--rates", default="2,3")
    parser.add_argument("--out", type=Path, default=Path("results/rowstep_variants"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.models.split(","):
            if name == "minilm":
                import minilm_rows

                for variant in args.variants.split(","):
                    set_variant(variant)
                    minilm_rows.main(["--rates", args.rates, "--variants", "absolute+columns",
                                      "--out", str(args.out / f"minilm-{variant}.json")])
                continue
            started = time.perf_counter()
            subject = (unseen_subject(name) if name in UNSEEN
                       else digits_subject(name, workdir) if name in ("mlp", "cnn")
                       else batchnorm_subject(name, workdir))
            say(f"{name}: ready in {time.perf_counter() - started:.0f} s")
            for variant in args.variants.split(","):
                set_variant(variant)
                for rate in (float(r) for r in args.rates.split(",")):
                    row = run_point(subject, rate, "layer", workdir)
                    row["objective"] = f"layer, {variant}"
                    rows.append(row)
                    write_rows(args.out, "rowstep_variants", rows)
    set_variant("high-rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
