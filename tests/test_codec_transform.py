"""The ``transform`` representation (format version 7): orthonormal transforms along each
row, the exact round trip, the rate control's choice on the structured validation suite and
on MiniLM, bits at equal SNR against today's coding, and hostile params."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support import compressed_alone, requires_minilm, snr_db

from weightdna.codec import decode_tensor, encode_tensor, read_dna_file, write_dna_file
from weightdna.codec.options import CANDIDATES
from weightdna.codec.ratecontrol import Target, single_tensor_choice, tensor_candidates
from weightdna.codec.transform import TRANSFORMS, compacting_transforms, forward, inverse
from weightdna.errors import CorruptFileError, InvalidInputError
from weightdna.experiments.structured import SUITE, dct_basis, windowed_dft_basis
from weightdna.weights import ModelWeights, load_weights, minilm_path

MEMBERS = {m.name: m for m in SUITE}


@pytest.mark.parametrize("kind", TRANSFORMS)
@pytest.mark.parametrize("n", [1, 2, 7, 8, 64])
def test_each_transform_is_orthonormal_and_inverts(kind: str, n: int) -> None:
    matrix = forward(np.eye(n), kind)  # row j: the coefficients of the j-th unit vector
    assert np.allclose(matrix @ matrix.T, np.eye(n), atol=1e-12)
    rows = np.random.default_rng(n).normal(size=(5, n))
    assert np.allclose(inverse(forward(rows, kind), kind), rows, atol=1e-12)


def test_the_dct_is_the_dct_ii_basis() -> None:
    # The suite's basis, written from the definition: the coefficients of a unit vector
    # are that column of the basis.
    assert np.allclose(forward(np.eye(32), "dct"), dct_basis(32).T.astype(np.float64),
                       atol=1e-6)


@pytest.mark.parametrize("window", ["hann", "hamming"])
def test_a_windowed_sinusoid_has_at_most_three_dft_coefficients(window: str) -> None:
    basis = windowed_dft_basis(64, window).astype(np.float64)
    coefficients = np.abs(forward(basis, "dft"))
    significant = coefficients > 1e-5 * coefficients.max(axis=1, keepdims=True)
    assert significant.sum(axis=1).max() == 3
    assert significant.sum(axis=1).min() >= 2



@pytest.mark.parametrize("kind", TRANSFORMS)
@pytest.mark.parametrize("quantizer", ["scalar", "trellis"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_transform_round_trips_through_a_file(tmp_path: Path, kind: str, quantizer: str,
                                                dtype: torch.dtype) -> None:
    basis = torch.from_numpy(windowed_dft_basis(64)).reshape(64, 2, 32)  # 3-d: rows of 64
    noisy = basis + 1e-3 * torch.randn(basis.shape, generator=torch.Generator().manual_seed(0))
    tensor = noisy.to(dtype)
    tensor[3, 1, 5], tensor[10, 0, 0] = math.nan, -math.inf
    steps = np.linspace(1e-3, 4e-3, 64)  # one per row
    entry, sections = encode_tensor(tensor, name="basis", step=steps, transform=kind,
                                    quantizer=quantizer)
    assert entry["representation"] == "transform"
    assert entry["params"]["transform"] == kind
    path = tmp_path / "t.dna"
    write_dna_file(path, [entry], [sections])
    dna = read_dna_file(path)
    restored = dna.tensor("basis")
    assert restored.dtype == dtype and restored.shape == tensor.shape
    same = torch.isfinite(tensor)
    assert torch.equal(torch.isnan(restored), torch.isnan(tensor))
    assert torch.equal(restored[~same & ~torch.isnan(tensor)], tensor[~same & ~torch.isnan(tensor)])
    # the decoder restores exactly what the encoder measured
    assert snr_db(tensor, restored) == pytest.approx(entry["stats"]["snr_db"], abs=1e-9)
    assert entry["stats"]["snr_db"] > 25


def test_a_transform_takes_only_a_step_or_bits_request() -> None:
    tensor = torch.from_numpy(dct_basis(16))
    for request in ({"max_abs_error": 0.01}, {"step": 0.01, "hessian": np.eye(16)}):
        with pytest.raises(InvalidInputError, match="transform"):
            encode_tensor(tensor, transform="dct", **request)
    with pytest.raises(InvalidInputError, match="transform"):
        encode_tensor(tensor.reshape(-1), step=0.01, transform="dct")
    with pytest.raises(InvalidInputError, match="transform"):
        encode_tensor(tensor, step=0.01, transform="wavelet")
    entry, _ = encode_tensor(tensor, bits=8, transform="dct")
    assert entry["representation"] == "transform"


# ---- the rate control's choice ------------------------------------------------------------


def _candidates(tensor: np.ndarray, representations: tuple[str, ...] = CANDIDATES):
    weights = ModelWeights.from_tensors({"layer.weight": torch.from_numpy(tensor)})
    return tensor_candidates(weights.info("layer.weight"), tensor, representations)


@pytest.mark.parametrize(("name", "expected", "snr"), [
    ("dft64_hann", "dft", 30.0), ("dft256_hann", "dft", 30.0), ("dft256_hann", "dft", 50.0),
    ("dft256_hamming", "dft", 50.0), ("dct256", "dct", 30.0), ("gaussian", None, 30.0),
    ("laplace", None, 30.0), ("lowrank", None, 30.0),
])
def test_the_codec_picks_the_transform_that_makes_the_tensor_sparse(
        name: str, expected: str | None, snr: float) -> None:
    tensor = MEMBERS[name].make()
    tc = _candidates(tensor)
    if expected is None:
        assert all(c.transform is None for c in tc.candidates)
        return
    choice = single_tensor_choice(tc, Target("snr", snr, per_tensor=True), per_row=False)
    assert choice.candidate.name == "transform"
    assert choice.candidate.transform == expected


@requires_minilm
def test_minilm_never_gets_a_transform() -> None:
    # (Its cost, 0.14 s against 1.6 s for the plain candidates over MiniLM's matrices, is
    # a benchmark figure: BENCHMARKS.md, "Structured tensors"; not timed here.)
    weights = load_weights(minilm_path())
    matrices = [info for info in weights.infos
                if len(info.shape) >= 2 and info.dtype.startswith("float")]
    assert len(matrices) >= 40
    for info in matrices:
        tc = tensor_candidates(info, weights.numpy(info.name), ("quantized",))
        assert compacting_transforms(tc.candidates[0].sample) == [], info.name


# ---- bits at equal SNR ------------------------------------------------------------------



@pytest.mark.parametrize(("name", "snr", "fewer"), [
    ("dft256_hann", 30.0, 10.0), ("dft256_hann", 50.0, 10.0), ("dft256_hamming", 30.0, 10.0),
    ("dct256", 50.0, 3.0),
])
def test_structured_bases_cost_far_fewer_bits_at_equal_snr(tmp_path: Path, name: str,
                                                           snr: float, fewer: float) -> None:
    tensor = MEMBERS[name].make()
    today, today_bits, today_snr = compressed_alone(tmp_path, tensor, snr, ("quantized",))
    chosen, bits, chosen_snr = compressed_alone(tmp_path, tensor, snr, CANDIDATES)
    assert today == "quantized" and chosen == "transform"
    assert today_snr >= snr and chosen_snr >= snr
    assert bits * fewer <= today_bits, (bits, today_bits)


# ---- hostile params -------------------------------------------------------------------------


def _coded() -> tuple[dict, dict[str, bytes]]:
    return encode_tensor(torch.from_numpy(dct_basis(32)), name="t", step=0.01,
                         transform="dct")


def _set(path: tuple, value: object):  # noqa: ANN202
    def change(entry: dict) -> None:
        target = entry
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return change


_DELETE = object()
HOSTILE = {
    "no transform key": _set(("params", "transform"), _DELETE),
    "an extra key": _set(("params", "rank"), 4),
    "unknown transform": _set(("params", "transform"), "wavelet"),
    "transform a number": _set(("params", "transform"), 5),
    "transform a list": _set(("params", "transform"), ["dct"]),
    "coefficients not an object": _set(("params", "coefficients"), 3),
    "a 1-d tensor": _set(("shape",), [32 * 32]),
    "a step that overflows": _set(("params", "coefficients", "step"), 1e308),
    "a negative step": _set(("params", "coefficients", "step"), -0.01),
    "an integer dtype": _set(("dtype",), "int32"),
    "params a list": _set(("params",), ["dct", {}]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_transform_params_are_refused(tmp_path: Path, case: str) -> None:
    entry, sections = _coded()
    entry = copy.deepcopy(entry)
    HOSTILE[case](entry)
    path = tmp_path / "h.dna"
    write_dna_file(path, [entry], [sections])  # every CRC valid
    with pytest.raises(CorruptFileError):
        read_dna_file(path).tensor("t")


def test_a_transform_in_a_file_of_version_6_is_refused() -> None:
    entry, sections = _coded()
    assert decode_tensor(entry, sections).shape == (32, 32)
    with pytest.raises(CorruptFileError, match="version 7"):
        decode_tensor(entry, sections, version=6)
