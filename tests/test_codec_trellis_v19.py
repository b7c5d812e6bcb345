"""Format version 19's files stay readable: tests/data/coder_v19.dna, written by version
19's encoder (a 64-state matrix under the one coder with its column context, one under
its context streams), decodes to the values version 19's decoder gave, and the coder's
matrix is coded again to the same entry and bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from weightdna.codec import tensor
from weightdna.codec.container import read_dna_file
from weightdna.codec.entries import STATES_VERSION
from weightdna.codec.tensor import encode_tensor

V19 = Path(__file__).parent / "data" / "coder_v19.dna"
# sha256 of each tensor's values as version 19's decoder (main at 5a0fd96) gave them.
DIGESTS = {"coder": "e8be4e3062d78b0b1316312eb9d7c38fc9eb42ee40b07ea11b16ac176d914d19",
           "streams": "3248871962bab52bd4dd8d99fb3695fb32afeb96bbf29d0a6a69577c2b0c2c69"}


def _matrix() -> torch.Tensor:
    """The file's coder matrix: Gaussian values whose rows and columns differ in scale."""
    g = torch.Generator().manual_seed(20)
    row = torch.logspace(-0.5, 0.5, 256)[torch.randperm(256, generator=g)][:, None]
    column = torch.logspace(-0.3, 0.3, 512)[torch.randperm(512, generator=g)][None, :]
    return torch.randn(256, 512, generator=g) * row * column


def test_version_19_file_decodes_to_its_values() -> None:
    dna = read_dna_file(V19)
    assert dna.version == STATES_VERSION
    for name, digest in DIGESTS.items():
        assert hashlib.sha256(dna.tensor(name).numpy().tobytes()).hexdigest() == digest


def test_version_19_file_codes_again_to_the_same_bytes() -> None:
    dna = read_dna_file(V19)
    saved = tensor.TRELLIS_STATES
    tensor.TRELLIS_STATES = 64
    try:
        entry, sections = encode_tensor(_matrix(), name="t", quantizer="trellis", step=0.1)
    finally:
        tensor.TRELLIS_STATES = saved
    assert dna.entries[0]["name"] == "coder"
    assert entry["params"] == dna.entries[0]["params"]
    assert sections == dna.read_sections("coder")
