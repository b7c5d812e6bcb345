"""Data-free GPTQ for ONNX graphs through the CLI, at its budget: which inputs, which loading.

    PYTHONPATH=$PWD .venv/bin/python bench/onnx_gptq_cli.py --model ocrcls \
        --targets 2.95,3,3.05 --variants none,batchnorm@1,normal@1 [--out F.jsonl]

For one of `weightdna.evaluate.unseen`'s models and each variant and bits-per-weight target:
``weightdna compress MODEL -o m.dna --bits-per-weight T --check none`` in this process
(every other option at its default: the stored graph, the ONNX bias correction), then
``weightdna decompress`` and the judge (`unseen.judge_for`). A variant is ``none``
(``--calibration none``) or ``INPUTS@LOADING``: ``--calibration synthetic`` with the
Hessians of `weightdna.evaluate.onnx_calibration.onnx_hessians` measured on ``INPUTS``
("normal": the output check's; "batchnorm": matched to the graph's first BatchNorm,
`weightdna.evaluate.bn_inputs`), once per inputs (loading 0) and loaded per variant
(`onnx_calibration.loaded`: the same Hessians as measuring with that loading). One JSON line
a point (the judge's numeric figures, the file's bits per weight) on stdout and appended to
``--out``; a point the CLI refuses is a line with its exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from weightdna.cli import main as cli
from weightdna.evaluate import onnx_calibration, unseen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ocrcls")
    parser.add_argument("--targets", default="2.95,3,3.05")
    parser.add_argument("--variants", default="none,batchnorm@1")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    path, judge, _ = unseen.judge_for(args.model)
    measure = onnx_calibration.onnx_hessians
    measured: dict[str, onnx_calibration.OnnxCalibration] = {}
    asked: dict[str, object] = {}

    def loaded(p, *_, **__):  # what the CLI's --calibration synthetic calls
        inputs, loading = asked["inputs"], asked["loading"]
        if inputs not in measured:
            measured[inputs] = measure(p, loading=0.0, inputs=inputs)
            print(f"# {measured[inputs].describe()}", file=sys.stderr, flush=True)
        got = measured[inputs]
        return onnx_calibration.OnnxCalibration(
            {n: onnx_calibration.loaded(h, loading) for n, h in got.hessians.items()},
            got.left, got.fed, got.why_not, got.seconds)

    onnx_calibration.onnx_hessians = loaded
    with tempfile.TemporaryDirectory() as tmp:
        dna, restored = Path(tmp) / "m.dna", Path(tmp) / "r.onnx"
        for variant in args.variants.split(","):
            for target in args.targets.split(","):
                command = ["compress", str(path), "-o", str(dna), "--bits-per-weight", target,
                           "--json", "--force", "--check", "none", "--calibration"]
                if variant == "none":
                    command.append("none")
                else:
                    inputs, _, loading = variant.partition("@")
                    asked.update(inputs=inputs, loading=float(loading or
                                                              onnx_calibration.LOADING))
                    command.append("synthetic")
                started = time.process_time()
                said = io.StringIO()
                with contextlib.redirect_stdout(said):
                    status = cli(command)
                row: dict = {"model": args.model, "variant": variant, "target": float(target)}
                if status:
                    row["error"] = status
                else:
                    report = json.loads(said.getvalue())
                    with contextlib.redirect_stdout(io.StringIO()):
                        cli(["decompress", str(dna), "-o", str(restored), "--force"])
                    figures = judge(restored)
                    row.update(bits_per_weight=report["bits_per_weight"],
                               file_bytes=report["file_bytes"],
                               cpu_seconds=time.process_time() - started,
                               **{k: v for k, v in figures.items()
                                  if isinstance(v, (int, float))})
                print(json.dumps(row), flush=True)
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
