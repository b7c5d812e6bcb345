"""What moved the angle classifier at 3 bits per weight: stop 30's three coding changes
toggled in one process, each judged over many nearby targets.

    PYTHONPATH=$PWD .venv/bin/python bench/ocrcls_cause.py --model ocrcls \
        --variants main,nocol,nodesc,nofill,none --targets 2.9,2.925,2.95,2.975,3,3.025,3.05 \
        [--bias none|synthetic] [--inputs normal,batchnorm] [--crops 300] [--no-files]

A variant is ``main`` (the code as it is) or changes joined by ``+``:

* ``nocol``: `tensor.TRELLIS_COLUMN` off (the coder's column context, format 18, not weighed);
* ``nodesc``: `tensor._descriptor_bytes` counted as 0 (the one coder weighed against the
  context streams' sections only, as before stop 30);
* ``nofill``: `compress._fill_between` not run (the best measured coding under the budget
  kept, as before stop 30);
* ``none``: all three;
* ``bn:RULE``: `ratecontrol.BN_ROWS` = RULE.

Each point: `compress_model` (objective ``layer``; ``--bias synthetic``: with the data-free
ONNX bias correction, the CLI's default for an ONNX file; the stored graph in the size
budget, as `weightdna compress` stores it, `weightdna.codec.bundle.collect_files`: ``main``
with the default ``--bias`` writes the command's file byte for byte; ``--no-files``: the
graph left out of the budget, the library path's figure before stop 33), decompressed and
judged by
`weightdna.evaluate.unseen`'s judge (ocrcls: the share of 0°/180° calls kept and the
accuracy against the true turn; ``--crops N`` renders N text lines instead of the judge's
300). ``--max-shift X``: the correction's `MAX_SHIFT`. ``--inputs``: the bias correction's
synthetic inputs, each a variant of its own
("normal": the output check's; "batchnorm": matched to the graph's first BatchNorm,
`weightdna.evaluate.bn_inputs`; default: the correction's `INPUTS`, what the CLI uses;
it was "normal" before stop 32). One line per point; per variant the mean, min and max over
the targets (and its standard error).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from weightdna.codec import compress, ratecontrol, tensor
from weightdna.codec.bundle import StoredFiles, collect_files
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.weights import load_weights

ORIGINAL = {"column": tensor.TRELLIS_COLUMN, "descriptor": tensor._descriptor_bytes,
            "fill": compress._fill_between, "bn": ratecontrol.BN_ROWS}


def set_variant(variant: str) -> None:
    tensor.TRELLIS_COLUMN = ORIGINAL["column"]
    tensor._descriptor_bytes = ORIGINAL["descriptor"]
    compress._fill_between = ORIGINAL["fill"]
    ratecontrol.BN_ROWS = ORIGINAL["bn"]
    if variant == "main":
        return
    for rule in variant.split("+"):
        kind, _, value = rule.partition(":")
        if kind in ("nocol", "none"):
            tensor.TRELLIS_COLUMN = False
        if kind in ("nodesc", "none"):
            tensor._descriptor_bytes = lambda model: 0
        if kind in ("nofill", "none"):
            compress._fill_between = lambda *args, **kwargs: None
        if kind == "bn":
            ratecontrol.BN_ROWS = value
        if kind not in ("nocol", "nodesc", "nofill", "none", "bn"):
            raise SystemExit(f"unknown variant {rule!r}")


def judge_for(name: str, crops: int):
    """(path, judge(restored state) -> figures) for ``name``."""
    from weightdna.evaluate import unseen

    if name == "ocrcls" and crops != 300:
        path = unseen.ocr_classifier_path()
        images, turned = unseen.angle_crops(unseen.ocr_lines(crops)[1])
        angles = unseen.ocr_angles(path, images)
        return path, lambda state: unseen.compare_angles(
            angles, unseen.ocr_angles(path, images, state), turned)
    path, judge, _ = unseen.judge_for(name)
    return path, lambda state: judge(path, state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ocrcls")
    parser.add_argument("--variants", default="main,nocol,nodesc,nofill,none")
    parser.add_argument("--targets", default="2.95,3,3.05")
    parser.add_argument("--bias", default="synthetic", choices=("none", "synthetic"))
    parser.add_argument("--inputs", default=None,
                        help="the bias correction's inputs, comma-separated (default: its "
                             "INPUTS, what the CLI uses)")
    parser.add_argument("--max-shift", type=float, default=None,
                        help="the bias correction's max_shift (default: its MAX_SHIFT)")
    parser.add_argument("--crops", type=int, default=300)
    parser.add_argument("--no-files", action="store_true",
                        help="leave the stored graph out of the budget")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    path, judge = judge_for(args.model, args.crops)
    weights = load_weights(path)
    files = StoredFiles() if args.no_files else collect_files(weights)
    own = judge(weights.state_dict())
    print(f"{args.model}: original {100 * own.get('truth_accuracy', own['agreement']):.2f}% "
          "right", flush=True)
    adjusts: dict[str, object] = {"": None}
    if args.bias == "synthetic":
        from weightdna.evaluate.onnx_correction import INPUTS, MAX_SHIFT, onnx_bias_correction

        shift = MAX_SHIFT if args.max_shift is None else args.max_shift
        kinds = INPUTS if args.inputs is None else args.inputs
        adjusts = {kind: onnx_bias_correction(path, inputs=kind, note=print, max_shift=shift)
                   for kind in kinds.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, kind in itertools.product(args.variants.split(","), adjusts):
            adjust = adjusts[kind]
            set_variant(variant)
            variant = f"{variant} {kind}".strip()
            kept, truth = [], []
            for target in targets:
                start = time.process_time()
                dna, out = Path(tmp) / "m.dna", Path(tmp) / "r.safetensors"
                report = compress_model(weights, dna, Target("bits_per_weight", target),
                                        objective="layer", adjust=adjust, files=files,
                                        overwrite=True)
                decompress_model(dna, out, overwrite=True)
                figures = judge(load_weights(out).state_dict())
                kept.append(100 * figures["agreement"])
                truth.append(100 * figures.get("truth_accuracy", float("nan")))
                extra = f" cer {100 * figures['cer']:.2f}% |" if "cer" in figures else ""
                print(f"| {variant} | {target:g} | {report.bits_per_weight:.4f} | "
                      f"{kept[-1]:.2f} | {truth[-1]:.2f} | {time.process_time() - start:.0f} s |"
                      + extra, flush=True)
            error = statistics.stdev(kept) / len(kept) ** 0.5 if len(kept) > 1 else 0.0
            print(f"| {variant} | mean | | **{statistics.mean(kept):.2f}** ± {error:.2f} "
                  f"({min(kept):.2f}–{max(kept):.2f}, sd {statistics.pstdev(kept):.2f}) | "
                  f"**{statistics.mean(truth):.2f}** ({min(truth):.2f}–{max(truth):.2f}) | |",
                  flush=True)
    set_variant("main")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
