"""The user's path on real models we never tuned on: the CLI with its defaults.

    .venv/bin/python bench/unseen_cli.py [--models magika,silero,ocr,ocrrec,ocrcls]
        [--rates 1,2,3,4] [--out results/unseen_cli]

For each model (`weightdna.evaluate.unseen`) and rate: ``weightdna compress MODEL -o m.dna
--bits-per-weight R --json`` (every other option at its default, the output check
included), ``weightdna decompress m.dna -o restored.onnx``, and the restored ONNX file
itself run by onnxruntime and judged against the original. Reports the bits per weight,
the judge's figures, what the output check said (its worst cosine; "not run" where it
cannot run the model, "cannot tell" where the original's outputs are the same for every
synthetic input; for a probability output also the mean total variation distance, "TV",
which decides; "diverged" where it warned) and the number of warnings the CLI gave. Writes
OUT/unseen_cli.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from weightdna.evaluate import unseen


def judge_for(name: str):
    """(model path, judge(an ONNX path, restored tensors or None) → figures against the
    original's): `weightdna.evaluate.unseen.judge_for`."""
    path, judge, _ = unseen.judge_for(name)
    return path, judge


def figures_text(r: dict) -> str:
    """The judge's figures of one row as table cells: agreement, then max Δp or, for the
    recognizer, the character error rate against the original's strings."""
    if "cer" in r:
        return (f"{100 * r['agreement']:.2f}% ({100 * r['ends_agreement']:.2f}% but for end "
                f"spaces) | CER {100 * r['cer']:.2f}%")
    return f"{100 * r['agreement']:.2f}% | {r['max_delta']:.3f}"


def weightdna(*args: str) -> str:
    command = [sys.executable, "-m", "weightdna", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="magika,silero,ocr")
    parser.add_argument("--rates", default="1,2,3,4")
    parser.add_argument("--out", type=Path, default=Path("results/unseen_cli"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dna, restored = Path(tmp) / "m.dna", Path(tmp) / "restored.onnx"
        for name in args.models.split(","):
            path, judge = judge_for(name)
            for rate in args.rates.split(","):
                report = json.loads(weightdna("compress", str(path), "-o", str(dna),
                                              "--bits-per-weight", rate, "--json", "--force"))
                weightdna("decompress", str(dna), "-o", str(restored), "--force")
                figures = judge(restored)
                check = report["output_check"]
                rows.append({"model": name, "rate": float(rate),
                             "bits_per_weight": report["bits_per_weight"], **figures,
                             "check_worst_cosine": None if check is None
                             else check["worst_cosine"],
                             "check_informative": None if check is None
                             else check.get("informative", True),
                             "check_probability_distance": None if check is None
                             else check.get("probability_distance"),
                             "check_diverged": None if check is None
                             else check.get("diverged"),
                             "warnings": len(report["warnings"])})
                print(f"{name} {rate}: {rows[-1]}", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "unseen_cli.json").write_text(json.dumps(rows, indent=2))
    print("| model | target bpw | bpw | agreement | max Δp (or CER) | output check (worst cosine) "
          "| warnings |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        check = ("not run" if r["check_worst_cosine"] is None
                 else "cannot tell" if not r["check_informative"]
                 else f"{r['check_worst_cosine']:.4f}"
                 + (f", TV {r['check_probability_distance']:.4f}"
                    if r.get("check_probability_distance") is not None else "")
                 + (", diverged" if r.get("check_diverged") else ""))
        print(f"| {r['model']} | {r['rate']:g} | {r['bits_per_weight']:.3f} | "
              f"{figures_text(r)} | {check} | "
              f"{r['warnings']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
