"""Would coding a row sample predict a tensor's coded/estimate ratio before round 1?

    PYTHONPATH=. .venv/bin/python bench/coding_probe.py rows|default

MiniLM at 2, 3, 4 and 8 bits per weight (``rows``: `bench/coding_rounds.py`'s minilm-rows
settings; ``default``: none); in round 1 the word embeddings' choice is also coded on every
8th and every 32nd row (per-row steps sliced alike), and each coding's bits over the
estimate's share of those rows is printed beside the whole tensor's ratio.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coding_rounds import minilm_rows_options  # noqa: E402

from weightdna.codec import compress  # noqa: E402
from weightdna.codec.ratecontrol import Target  # noqa: E402
from weightdna.weights import load_weights, minilm_path  # noqa: E402

NAME = "embeddings.word_embeddings.weight"


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    options = minilm_rows_options() if argv[:1] == ["rows"] else {}
    original, seen = compress._encode, []

    def encode(weights, name, choice, hessian, zero_dead):  # noqa: ANN001, ANN202
        coded = original(weights, name, choice, hessian, zero_dead)
        if name == NAME and not seen:
            tensor = weights.tensor(name)
            rows = tensor.shape[0]
            found = {"whole": 8.0 * compress._section_bytes(coded[0]) / choice.bits}
            for k in (8, 32):
                step = choice.step
                if isinstance(step, np.ndarray) and step.shape[:1] == (rows,):
                    step = step[::k]
                sample = tensor[::k].contiguous()
                part = compress._encode_choice(sample, name, replace(choice, step=step),
                                               hessian, zero_dead)
                found[f"1/{k} rows"] = (8.0 * compress._section_bytes(part)
                                        / (choice.bits * sample.shape[0] / rows))
            seen.append(found)
        return coded

    compress._encode = encode
    weights = load_weights(minilm_path())
    with tempfile.TemporaryDirectory() as folder:
        for rate in (2.0, 3.0, 4.0, 8.0):
            seen.clear()
            compress.compress_model(weights, Path(folder) / "o.dna",
                                    Target("bits_per_weight", rate), overwrite=True,
                                    **options)
            print(rate, {k: round(v, 4) for k, v in seen[0].items()}, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
