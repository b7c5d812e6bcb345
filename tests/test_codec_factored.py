"""The ``factored+residual`` representation (format version 8): a conv kernel's
per-output-channel factors (input weights ⊗ low-rank spatial kernels), each quantised by the
tensor coder; the exact factorisation of a Gabor bank, the round trip, the rate control's
choice on the validation suite, bits at equal SNR against today's coding, hostile params."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from support import compressed_alone, snr_db

from weightdna.codec import decode_tensor, encode_tensor, factored, read_dna_file, write_dna_file
from weightdna.codec.ratecontrol import tensor_candidates
from weightdna.codec.tensor import factored_prediction
from weightdna.errors import CorruptFileError
from weightdna.experiments.structured import SUITE, gabor_bank
from weightdna.train import build_digits_cnn
from weightdna.weights import ModelWeights

MEMBERS = {m.name: m for m in SUITE}
FAST = ("quantized", "lowrank", "separable", "transform", "factored")


def test_a_gabor_bank_is_rank_one_across_inputs_and_two_within_each_window() -> None:
    bank = gabor_bank().astype(np.float64)
    assert factored.captured(bank, 1, 2) > 1 - 1e-12  # float32 rounding only
    assert factored.captured(bank, 1, 1) < 0.99  # a plane wave at an angle is not rank 1
    assert factored.worth_trying(bank) == (1, 2)
    f = factored.factorise(bank, 1, 2)
    assert {k: v.shape for k, v in f.items()} == {"u": (64, 1, 3), "p": (64, 1, 2, 7),
                                                   "q": (64, 1, 2, 7)}
    assert np.allclose(factored.values(f, bank.shape), bank, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ranks", [(1, 0), (2, 1), (1, 2)])
def test_a_factored_kernel_round_trips_through_a_file(tmp_path: Path,
                                                      ranks: tuple[int, int]) -> None:
    bank = gabor_bank(16, 4, 5, seed=3).astype(np.float64)
    bank += 1e-3 * np.random.default_rng(0).normal(size=bank.shape)
    tensor = torch.from_numpy(bank.astype(np.float32))
    prediction = factored_prediction(bank, factored.factorise(bank, *ranks), 0.01, "conv")
    entry, sections = encode_tensor(tensor, name="conv", step=0.01, prediction=prediction)
    assert entry["representation"] == "factored+residual"
    assert entry["params"]["factored"]["ranks"] == list(ranks)
    assert (entry["params"]["factored"]["q"] is None) == (ranks[1] == 0)
    path = tmp_path / "f.dna"
    write_dna_file(path, [entry], [sections])
    dna = read_dna_file(path)
    assert dna.version == 8
    restored = dna.tensor("conv")
    assert restored.shape == tensor.shape and restored.dtype == tensor.dtype
    assert snr_db(tensor, restored) == pytest.approx(entry["stats"]["snr_db"], abs=1e-9)
    # The decoder's prediction is the encoder's, to the bit.
    assert np.array_equal(decode_tensor(entry, sections).numpy(), restored.numpy())


def _candidates(tensor: np.ndarray) -> list[str]:
    weights = ModelWeights.from_tensors({"layer.weight": torch.from_numpy(tensor)})
    return [c.name for c in tensor_candidates(weights.info("layer.weight"), tensor,
                                              FAST).candidates]


def test_only_the_gabor_bank_of_the_suite_gets_a_factored_candidate() -> None:
    for name, member in MEMBERS.items():  # the gate `tensor_candidates` asks
        assert (factored.worth_trying(member.make()) is not None) == (name == "gabor"), name
    assert "factored+residual" in _candidates(MEMBERS["gabor"].make())
    assert "factored+residual" not in _candidates(MEMBERS["gaussian"].make())


def test_random_and_trained_kernels_get_no_factored_candidate() -> None:
    rng = np.random.default_rng(0)
    for kernel in (rng.normal(size=(64, 3, 7, 7)), rng.laplace(size=(32, 16, 3, 3)),
                   rng.normal(size=(16, 1, 5, 5))):
        assert "factored+residual" not in _candidates(kernel.astype(np.float32))
    model = build_digits_cnn(seed=0)  # its conv kernels as initialised (trained: the bench)
    for name, value in model.state_dict().items():
        if np.ndim(value) == 4:
            assert "factored+residual" not in _candidates(np.asarray(value, np.float32)), name


def test_the_gabor_bank_costs_three_times_fewer_bits(tmp_path: Path) -> None:
    snr = 30.0
    tensor = gabor_bank()
    today, today_bits, today_snr = compressed_alone(tmp_path, tensor, snr, ("quantized",))
    chosen, bits, chosen_snr = compressed_alone(tmp_path, tensor, snr, FAST)
    assert today == "quantized" and chosen == "factored+residual"
    assert today_snr >= snr and chosen_snr >= snr
    assert 3 * bits <= today_bits, (bits, today_bits)


# ---- hostile params -------------------------------------------------------------------------


def _coded(ranks: tuple[int, int] = (1, 2)) -> tuple[dict, dict[str, bytes]]:
    bank = gabor_bank(8, 3, 5, seed=1).astype(np.float64)
    return encode_tensor(torch.from_numpy(bank.astype(np.float32)), name="t", step=0.01,
                         prediction=factored_prediction(bank, factored.factorise(bank, *ranks),
                                                        0.01, "t"))


def _params(change):  # noqa: ANN001, ANN202
    def apply(entry: dict, sections: dict) -> None:
        change(entry["params"]["factored"])
    return apply


def _rename(old: str, new: str):  # noqa: ANN202
    return lambda e, s: s.update({new: s.pop(old)})


HOSTILE = {
    "ranks of three": _params(lambda p: p.update(ranks=[1, 2, 0])),
    "ranks a number": _params(lambda p: p.update(ranks=1)),
    "r of 0": _params(lambda p: p.update(ranks=[0, 2])),
    "r beyond the input channels": _params(lambda p: p.update(ranks=[4, 2])),
    "r huge": _params(lambda p: p.update(ranks=[2**62, 2])),
    "s beyond the window": _params(lambda p: p.update(ranks=[1, 6])),
    "s negative": _params(lambda p: p.update(ranks=[1, -1])),
    "ranks as floats": _params(lambda p: p.update(ranks=[1.0, 2.0])),
    "ranks as bools": _params(lambda p: p.update(ranks=[True, True])),
    "s of 0 with a q factor": _params(lambda p: p.update(ranks=[1, 0])),
    "ranks of another factor shape": _params(lambda p: p.update(ranks=[1, 1])),
    "q null with s of 2": _params(lambda p: p.update(q=None)),
    "u not an object": _params(lambda p: p.update(u=[1, 2])),
    "u with non-finite elements": _params(lambda p: p["u"].update(nonfinite=1)),
    "u with a negative step": _params(lambda p: p["u"].update(step=-0.5)),
    "p with a step of 0": _params(lambda p: p["p"].update(step=0.0)),
    "q with per-row steps": _params(lambda p: p["q"].update(step=None, rows=8)),
    "p's model swapped for u's": _params(lambda p: p["p"].update(model=p["u"]["model"])),
    "a missing key": _params(lambda p: p.pop("q")),
    "an extra key": _params(lambda p: p.update(dtype="float16")),
    "p's symbols missing": lambda e, s: s.pop("p.symbols"),
    "q's symbols truncated": lambda e, s: s.update({"q.symbols": s["q.symbols"][:-4]}),
    "u's symbols as the residual's": _rename("u.symbols", "symbols.u"),
    "a section of no factor": lambda e, s: s.update({"v.symbols": b"1234"}),
    "a factor section without a part": lambda e, s: s.update({"u.": b"1234"}),
    "a 3-D shape": lambda e, s: e.update(shape=[8, 3, 25]),
    "a 2-D shape": lambda e, s: e.update(shape=[8, 75]),
    "another kernel's shape": lambda e, s: e.update(shape=[8, 1, 15, 5]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_factored_params_are_refused(tmp_path: Path, case: str) -> None:
    entry, sections = _coded()
    entry, sections = copy.deepcopy(entry), dict(sections)
    HOSTILE[case](entry, sections)
    path = tmp_path / "h.dna"
    write_dna_file(path, [entry], [sections])  # every CRC valid
    with pytest.raises(CorruptFileError):
        read_dna_file(path).tensor("t")


def test_a_whole_window_factorisation_refuses_a_q_factor() -> None:
    entry, sections = _coded((1, 0))
    assert decode_tensor(entry, sections).shape == (8, 3, 5, 5)
    other, other_sections = _coded((1, 2))
    entry["params"]["factored"]["q"] = other["params"]["factored"]["q"]
    sections = {**sections, **{k: v for k, v in other_sections.items() if k.startswith("q.")}}
    with pytest.raises(CorruptFileError, match="no q factor"):
        decode_tensor(entry, sections)


def test_a_factored_tensor_in_a_file_of_version_7_is_refused() -> None:
    entry, sections = _coded()
    assert decode_tensor(entry, sections, version=8).shape == (8, 3, 5, 5)
    with pytest.raises(CorruptFileError, match="version 8"):
        decode_tensor(entry, sections, version=7)


def test_a_resumable_compress_keeps_a_factored_candidate(tmp_path: Path) -> None:
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.codec.resume import _pack, _unpack

    tensor = gabor_bank()
    tc = tensor_candidates(ModelWeights.from_tensors({"k": torch.from_numpy(tensor)}).info("k"),
                           tensor, FAST)
    arrays: dict = {}
    again = _unpack(_pack(tc, arrays), arrays)
    factored_ = again.candidates[-1].factored
    assert again.candidates[-1].name == "factored+residual" and factored_.ranks == (1, 2)
    assert np.array_equal(factored_.factors["q"], tc.candidates[-1].factored.factors["q"])
    weights = ModelWeights.from_tensors({"conv.weight": torch.from_numpy(tensor)})
    compress_model(weights, tmp_path / "r.dna", Target("snr", 30.0), representations=FAST,
                   resumable=True)
    entry = read_dna_file(tmp_path / "r.dna").entries[0]
    assert entry["representation"] == "factored+residual"
