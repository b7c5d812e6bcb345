"""The output check of `weightdna compress` on written .dna files, beside each file's judge
(issue 11, "Say what happened": does the check warn on the broken files and only on those?).

    PYTHONPATH=$PWD .venv/bin/python bench/output_check_files.py \
        MODEL=FILE.dna [MODEL=FILE.dna ...] [--tag new] [--out results/output_check.jsonl]

MODEL: one of `weightdna.evaluate.unseen`'s (magika, silero, ocr, ocrrec, ocrcls: its judge,
the share of the original's decisions kept), ``minilm`` (the mean cosine of the 540 bundled
sentences' embeddings), or a path to an engine digits model (``weightdna train``: the share
of held-out predictions kept) or to the panel's BatchNorm CNN exported to ONNX
(`weightdna.evaluate.panel.onnx_accuracy`: the restored accuracy). The files are written
beforehand by the CLI with its defaults (``weightdna compress MODEL -o FILE.dna
--bits-per-weight R --check none``); the check is run on the decoded tensors (whatever code
PYTHONPATH names: run it again with main's to compare) and timed in CPU seconds. One JSON
line per file, appended to --out and printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from weightdna.codec.container import read_dna_file
from weightdna.evaluate import unseen
from weightdna.evaluate.outputs import check_outputs


def judge(model: str, restored: dict) -> tuple[Path, float]:
    """(the model's path, the judge's figure) for ``restored``."""
    if model in unseen.UNSEEN_MODELS:
        path, run, _ = unseen.judge_for(model)
        return path, run(path, restored)["agreement"]
    if model == "minilm":
        from weightdna.bert import BertConfig, BertEncoder, load_tokenizer
        from weightdna.evaluate import compare_embeddings, embed_sentences, load_sentences
        from weightdna.weights import load_weights, minilm_path

        folder = minilm_path()
        config, tokenizer = BertConfig.from_json(folder / "config.json"), load_tokenizer(folder)
        sentences = load_sentences()
        embeddings = [embed_sentences(BertEncoder(state, config), sentences, tokenizer)
                      for state in (load_weights(folder).state_dict(), restored)]
        return folder, compare_embeddings(*embeddings)["mean_cosine"]
    path = Path(model)
    if path.suffix == ".onnx":
        from weightdna.evaluate.panel import onnx_accuracy

        return path, onnx_accuracy(path, restored)
    from weightdna.evaluate import accuracy_of_restored
    from weightdna.nn.model import load_model

    return path, accuracy_of_restored(load_model(path), restored)["agreement"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="MODEL=FILE.dna")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=Path("results/output_check.jsonl"))
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for item in args.files:
        model, file = item.split("=", 1)
        dna = read_dna_file(file)
        restored = {name: dna.tensor(name) for name in dna.names}
        path, figure = judge(model, restored)
        started, cpu = time.perf_counter(), time.process_time()
        check = check_outputs(path, restored)
        row = {"tag": args.tag, "model": model, "file": file, "judge": figure,
               "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - started}
        if check is not None:
            row |= {"worst_cosine": check.worst_cosine, "mean_cosine": check.mean_cosine,
                    "probability_distance": check.probability_distance,
                    "top_changed": check.top_changed, "lead_change": check.lead_change,
                    "informative": check.informative, "diverged": check.diverged,
                    "samples": check.samples, "fed": check.fed}
        print(json.dumps(row), flush=True)
        with args.out.open("a") as out:
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
