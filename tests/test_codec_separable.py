"""The ``separable+residual`` representation (format version 7): the Van Loan rearrangement,
the exact round trip, the rate control's choice on the validation suite and on MiniLM,
bits at equal SNR against today's coding, and hostile params."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from support import compressed_alone, requires_minilm, snr_db

from weightdna.codec import decode_tensor, encode_tensor, read_dna_file, write_dna_file
from weightdna.codec.ratecontrol import _separable, tensor_candidates
from weightdna.codec.separable import (
    SEPARABLE_ENERGY,
    _sampled_groups,
    arrange,
    factorisations,
    looks_separable,
    rearrange,
    separable_looking,
    separable_prediction,
)
from weightdna.errors import CorruptFileError
from weightdna.experiments.structured import SUITE, kronecker
from weightdna.weights import ModelWeights, load_weights, minilm_path

MEMBERS = {m.name: m for m in SUITE}
# Every candidate but the DNA, whose fit takes most of a compress's time on these tensors
# and which none of them picks.
FAST = ("quantized", "lowrank", "separable", "transform")


def test_a_kronecker_product_rearranges_to_rank_one() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(4, 2))
    product = np.kron(a, b)
    r = rearrange(product, 3, 5)
    assert r.shape == (15, 8)
    assert np.allclose(r, np.outer(a.reshape(-1), b.reshape(-1)))
    assert np.array_equal(arrange(r, 3, 5, 12, 10), product)



@pytest.mark.parametrize("quantizer", ["scalar", "trellis"])
def test_a_separable_conv_kernel_round_trips_through_a_file(tmp_path: Path,
                                                            quantizer: str) -> None:
    # out × in × kh × kw = (8 × 4) ⊗ (1 × 9): each kernel one 3×3 pattern, scaled per channel
    rng = np.random.default_rng(1)
    kernel = np.kron(rng.normal(size=(8, 4)), rng.normal(size=(1, 9))).reshape(8, 4, 3, 3)
    kernel += 1e-3 * rng.normal(size=kernel.shape)
    tensor = torch.from_numpy(kernel.astype(np.float32))
    prediction = separable_prediction(kernel, 8, 4, 1)
    entry, sections = encode_tensor(tensor, name="conv", step=1e-3, prediction=prediction,
                                    quantizer=quantizer)
    assert entry["representation"] == "separable+residual"
    assert entry["params"]["separable"] == {"blocks": [8, 4], "rank": 1, "dtype": "float16"}
    path = tmp_path / "s.dna"
    write_dna_file(path, [entry], [sections])
    restored = read_dna_file(path).tensor("conv")
    assert restored.shape == tensor.shape and restored.dtype == tensor.dtype
    assert snr_db(tensor, restored) == pytest.approx(entry["stats"]["snr_db"], abs=1e-9)


@pytest.mark.parametrize(("name", "separable"), [
    ("kronecker", True), ("gaussian", False), ("laplace", False), ("dct256", False),
    ("dft256_hann", False), ("gabor", False),
])
def test_only_the_kronecker_tensor_gets_a_separable_candidate(name: str,
                                                              separable: bool) -> None:
    tensor = MEMBERS[name].make()
    weights = ModelWeights.from_tensors({"layer.weight": torch.from_numpy(tensor)})
    tc = tensor_candidates(weights.info("layer.weight"), tensor, FAST)
    found = [c for c in tc.candidates if c.name == "separable+residual"]
    assert bool(found) == separable
    if separable:  # the generator's factorisation: (16 × 24) ⊗ (16 × 16)
        assert found[0].prediction.params == {"blocks": [16, 24], "rank": 1,
                                              "dtype": "float16"}


def _near_threshold(rng: np.random.Generator) -> np.ndarray:
    """A Kronecker product plus noise whose sampled top energy sits near SEPARABLE_ENERGY
    for some factorisations: the decisions the Gershgorin gate must leave to eigvalsh."""
    kron = np.kron(rng.normal(size=(4, 6)), rng.normal(size=(16, 16)))
    noise = rng.normal(size=kron.shape)
    return kron + noise * np.sqrt((1 - SEPARABLE_ENERGY) * kron.var() / noise.var())


@pytest.mark.parametrize("name", ["kronecker", "gaussian", "laplace", "dct256", "gabor"])
def test_the_batched_separable_test_decides_as_the_one_by_one(name: str) -> None:
    rng = np.random.default_rng(3)
    tensor = MEMBERS[name].make()
    matrices = [tensor.reshape(tensor.shape[0], -1).astype(np.float64),
                _near_threshold(rng), rng.standard_t(3, size=(48, 40))]
    decided = 0
    for matrix in matrices:
        one_by_one = [f for f in factorisations(*matrix.shape)
                      if looks_separable(matrix, *f)]
        assert separable_looking(matrix) == one_by_one
        decided += len(one_by_one)
        # The batched Gram matrices are looks_separable's, bit for bit.
        _, groups = _sampled_groups(*matrix.shape)
        _, rows, columns = groups[0]
        stacks = matrix[rows[:, :, :, None], columns[:, :, None, :]].reshape(
            len(rows), rows.shape[1], -1)
        batched = stacks @ stacks.transpose(0, 2, 1)
        for stack, gram in zip(stacks, batched, strict=True):
            assert np.array_equal(stack @ stack.T, gram)
    assert decided > 0


@requires_minilm
def test_minilm_matrices_are_not_separable() -> None:
    weights = load_weights(minilm_path())
    names = [i.name for i in weights.infos if len(i.shape) == 2 and i.dtype == "float32"
             and (i.name.startswith("embeddings.") or ".layer.0." in i.name)]
    assert len(names) >= 8
    for name in names:
        assert _separable(weights.numpy(name)) is None, name



def test_the_kronecker_tensor_costs_three_times_fewer_bits(tmp_path: Path) -> None:
    # At 50 dB the residual (the noise, at −40 dB) is coded too; at 30 dB it is not and
    # the gain is far larger (bench/structured.py).
    snr = 50.0
    tensor = kronecker()
    today, today_bits, today_snr = compressed_alone(tmp_path, tensor, snr, ("quantized",))
    chosen, bits, chosen_snr = compressed_alone(tmp_path, tensor, snr, FAST)
    assert today == "quantized" and chosen == "separable+residual"
    assert today_snr >= snr and chosen_snr >= snr
    assert 3 * bits <= today_bits, (bits, today_bits)


# ---- hostile params -------------------------------------------------------------------------


def _coded() -> tuple[dict, dict[str, bytes]]:
    values = kronecker((4, 6), (8, 8)).astype(np.float64)
    return encode_tensor(torch.from_numpy(values.astype(np.float32)), name="t", step=0.01,
                         prediction=separable_prediction(values, 4, 6, 2))


def _params(change):  # noqa: ANN001, ANN202
    def apply(entry: dict, sections: dict) -> None:
        change(entry["params"]["separable"])
    return apply


HOSTILE = {
    "blocks not dividing the rows": _params(lambda p: p.update(blocks=[5, 6])),
    "blocks not dividing the columns": _params(lambda p: p.update(blocks=[4, 7])),
    "blocks of zero": _params(lambda p: p.update(blocks=[0, 6])),
    "blocks beyond the matrix": _params(lambda p: p.update(blocks=[64, 6])),
    "blocks of three": _params(lambda p: p.update(blocks=[4, 6, 1])),
    "blocks as floats": _params(lambda p: p.update(blocks=[4.0, 6.0])),
    "blocks as bools": _params(lambda p: p.update(blocks=[True, True])),
    "blocks a number": _params(lambda p: p.update(blocks=24)),
    "rank 0": _params(lambda p: p.update(rank=0)),
    "rank beyond R": _params(lambda p: p.update(rank=25)),
    "rank huge": _params(lambda p: p.update(rank=2**62)),
    "another dtype": _params(lambda p: p.update(dtype="float32")),
    "a missing key": _params(lambda p: p.pop("rank")),
    "an extra key": _params(lambda p: p.update(omega0=30.0)),
    "factors too short": lambda e, s: s.update(factors=s["factors"][:-2]),
    "factors with NaN": lambda e, s: s.update(factors=b"\x00\x7e" + s["factors"][2:]),
    "no factors": lambda e, s: s.pop("factors"),
    "the blocks of another shape": lambda e, s: e.update(shape=[64, 48]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_separable_params_are_refused(tmp_path: Path, case: str) -> None:
    entry, sections = _coded()
    entry, sections = copy.deepcopy(entry), dict(sections)
    HOSTILE[case](entry, sections)
    path = tmp_path / "h.dna"
    write_dna_file(path, [entry], [sections])  # every CRC valid
    with pytest.raises(CorruptFileError):
        read_dna_file(path).tensor("t")


def test_a_separable_tensor_in_a_file_of_version_6_is_refused() -> None:
    entry, sections = _coded()
    assert decode_tensor(entry, sections).shape == (32, 48)
    with pytest.raises(CorruptFileError, match="version 7"):
        decode_tensor(entry, sections, version=6)
