"""sha256 of the .dna files the encoder writes: MiniLM and a digits CNN/MLP at 4 bits/weight.

Run before and after an encoder speed change; the digests must match (byte-identical output).
    PYTHONPATH=$PWD .venv/bin/python bench/encoder_sha.py OUTDIR
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch


def _tensors(model) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--bits", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.train import train_digits_cnn, train_digits_mlp
    from weightdna.weights import ModelWeights, load_weights, minilm_path

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    models = {
        "digits_mlp": lambda: ModelWeights.from_tensors(
            _tensors(train_digits_mlp(epochs=5, seed=0).model)),
        "digits_cnn": lambda: ModelWeights.from_tensors(
            _tensors(train_digits_cnn(epochs=5, seed=0).model)),
        "minilm": lambda: load_weights(minilm_path()),
    }
    for name, build in models.items():
        path = out / f"{name}.dna"
        compress_model(build(), path, Target("bits_per_weight", args.bits), overwrite=True)
        print(name, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)


if __name__ == "__main__":
    main()
