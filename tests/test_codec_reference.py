"""The ``reference+residual`` representation (format version 8): a tensor coded as an
earlier tensor of the same file, scaled and its rows perhaps reordered, plus a residual.
The fit, the codec's choice on the validation pairs (and on nothing else), bits saved, the
readers (load_file, safe_open, decompress with workers), and hostile references."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as load_safetensors

import weightdna
from weightdna.codec import decode_tensor, encode_tensor, read_dna_file, reference, write_dna_file
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.codec.tensor import reference_prediction
from weightdna.errors import CorruptFileError
from weightdna.experiments.structured import PAIRS, gaussian, tied_pair
from weightdna.weights import ModelWeights

PAIR = {p.name: p for p in PAIRS}
FAST = ("quantized", "lowrank", "separable", "transform", "factored", "reference")


def _compress(path: Path, tensors: dict[str, np.ndarray], target: Target,
              representations: tuple[str, ...] = FAST) -> dict[str, dict]:
    weights = ModelWeights.from_tensors({k: torch.from_numpy(v) for k, v in tensors.items()})
    compress_model(weights, path, target, representations=representations, overwrite=True)
    return {e["name"]: e for e in read_dna_file(path).entries}


def test_the_fit_finds_the_scale_and_the_order() -> None:
    pair = tied_pair((64, 32), scale=-0.5, permuted=True)
    a, b = pair["first.weight"], pair["second.weight"]
    assert reference.alike(reference.signature(a), reference.signature(b))
    scale, order = reference.fit(a, b)
    assert scale == pytest.approx(-0.5, rel=1e-6)
    assert np.allclose(reference.values(a, scale, order), b, atol=1e-6)
    copy_scale, copy_order = reference.fit(a, a)
    assert copy_scale == pytest.approx(1.0) and copy_order is None
    assert reference.fit(gaussian((64, 32), seed=0), gaussian((64, 32), seed=1)) is None


@pytest.mark.parametrize("name", sorted(PAIR))
def test_the_codec_refers_to_a_repeated_tensor_and_to_nothing_else(tmp_path: Path,
                                                                   name: str) -> None:
    entries = _compress(tmp_path / "p.dna", PAIR[name].make(),
                        Target("snr", 30.0, per_tensor=True))
    assert entries["first.weight"]["representation"] == "quantized"
    chosen = entries["second.weight"]["representation"]
    assert (chosen == "reference+residual") == PAIR[name].repeated, chosen
    if PAIR[name].repeated:
        assert entries["second.weight"]["params"]["reference"]["name"] == "first.weight"


def test_a_tied_tensor_costs_almost_nothing(tmp_path: Path) -> None:
    pair = PAIR["tied_scaled_permuted"].make()
    target = Target("snr", 30.0, per_tensor=True)
    path = tmp_path / "t.dna"
    today = _compress(path, pair, target, ("quantized",))["second.weight"]
    chosen = _compress(path, pair, target)["second.weight"]
    bits = {e["representation"]: 8 * sum(s[1] for s in e["sections"].values())
            for e in (today, chosen)}
    assert bits["reference+residual"] * 20 <= bits["quantized"], bits
    restored = read_dna_file(path).tensor("second.weight").double()
    original = torch.from_numpy(pair["second.weight"]).double()
    assert float((original**2).sum() / ((restored - original) ** 2).sum()) >= 10**3


def test_a_whole_model_target_spends_the_saved_bits_on_the_rest(tmp_path: Path) -> None:
    pair = PAIR["tied"].make()
    target = Target("bits_per_weight", 3.0)
    path = tmp_path / "w.dna"
    snr = {}
    for reps in (("quantized",), FAST):
        _compress(path, pair, target, reps)
        dna = read_dna_file(path)
        restored = {n: dna.tensor(n).double() for n in dna.names}
        signal = sum(float((torch.from_numpy(v).double() ** 2).sum()) for v in pair.values())
        error = sum(float(((restored[k] - torch.from_numpy(v).double()) ** 2).sum())
                    for k, v in pair.items())
        snr[len(reps)] = 10 * np.log10(signal / error)
        assert 8 * path.stat().st_size <= 3.0 * 2 * pair["first.weight"].size
    assert snr[len(FAST)] >= snr[1] + 10, snr


def test_every_reader_decodes_the_referenced_tensor_first(tmp_path: Path) -> None:
    pair = PAIR["tied_scaled_permuted"].make()
    path = tmp_path / "r.dna"
    entries = _compress(path, pair, Target("snr", 30.0, per_tensor=True))
    assert entries["second.weight"]["representation"] == "reference+residual"
    dna = read_dna_file(path)
    expected = {n: dna.tensor(n) for n in dna.names}
    loaded = weightdna.load_file(path)
    assert all(torch.equal(loaded[n], expected[n]) for n in expected)
    with weightdna.safe_open(path) as f:
        assert torch.equal(f.get_tensor("second.weight"), expected["second.weight"])
    decompress_model(path, tmp_path / "out.safetensors", workers=2)
    written = load_safetensors(tmp_path / "out.safetensors")
    assert all(torch.equal(written[n], expected[n]) for n in expected)


# ---- hostile references -----------------------------------------------------------------


def _coded(rows: bool = True) -> tuple[list[dict], list[dict[str, bytes]]]:
    pair = tied_pair((32, 48), scale=2.0, permuted=rows)
    a, b = (torch.from_numpy(pair[k]) for k in ("first.weight", "second.weight"))
    first = encode_tensor(a, name="a", step=0.01)
    restored = decode_tensor(*first)
    scale, order = reference.fit(a.numpy(), b.numpy())
    assert (order is not None) == rows
    second = encode_tensor(b, name="b", step=0.01,
                           prediction=reference_prediction("a", restored, scale, order))
    assert second[0]["representation"] == "reference+residual"
    return [first[0], second[0]], [first[1], second[1]]


def _reference(change):  # noqa: ANN001, ANN202
    def apply(entries: list, sections: list) -> None:
        change(entries[1]["params"]["reference"])
    return apply


def _chain(entries: list, sections: list) -> None:
    third = copy.deepcopy(entries[1])
    third["name"] = "c"
    third["params"]["reference"]["name"] = "b"
    entries.append(third)
    sections.append(dict(sections[1]))


def _swap(entries: list, sections: list) -> None:
    entries.reverse()
    sections.reverse()


HOSTILE = {
    "a name of no tensor": _reference(lambda r: r.update(name="z")),
    "an empty name": _reference(lambda r: r.update(name="")),
    "a name not a string": _reference(lambda r: r.update(name=["a"])),
    "itself": _reference(lambda r: r.update(name="b")),
    "a later tensor": _swap,
    "a reference to a reference": _chain,
    "a scale of 0": _reference(lambda r: r.update(scale=0.0)),
    "a scale as a string": _reference(lambda r: r.update(scale="2")),
    "rows as 1": _reference(lambda r: r.update(rows=1)),
    "rows false with an order": _reference(lambda r: r.update(rows=False)),
    "a missing key": _reference(lambda r: r.pop("scale")),
    "an extra key": _reference(lambda r: r.update(order=[0, 1])),
    "no order": lambda e, s: s[1].pop("order"),
    "an order too short": lambda e, s: s[1].update(order=reference.order_bytes(
        np.arange(31))),
    "an order with a repeat": lambda e, s: s[1].update(order=reference.order_bytes(
        np.r_[np.arange(31), 0])),
    "an order beyond the rows": lambda e, s: s[1].update(order=reference.order_bytes(
        np.r_[np.arange(31), 32])),
    "an order not zstd": lambda e, s: s[1].update(order=b"\0" * 128),
    "a referenced tensor of another shape": lambda e, s: e[0].update(shape=[48, 32]),
    "an integer referenced tensor": lambda e, s: (
        e.__setitem__(0, encode_tensor(torch.zeros(32, 48, dtype=torch.int32), name="a",
                                       lossless=True)[0]),
        s.__setitem__(0, encode_tensor(torch.zeros(32, 48, dtype=torch.int32), name="a",
                                       lossless=True)[1])),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_references_are_refused(tmp_path: Path, case: str) -> None:
    entries, sections = _coded()
    entries, sections = copy.deepcopy(entries), [dict(s) for s in sections]
    HOSTILE[case](entries, sections)
    path = tmp_path / "h.dna"
    write_dna_file(path, entries, sections)  # every CRC valid
    dna = read_dna_file(path)
    with pytest.raises(CorruptFileError):
        for name in dna.names:
            dna.tensor(name)


def test_a_reference_without_rows_has_no_order_section() -> None:
    entries, sections = _coded(rows=False)
    restored = decode_tensor(entries[0], sections[0])
    assert decode_tensor(entries[1], sections[1], referenced=restored).shape == (32, 48)
    with pytest.raises(CorruptFileError, match="do not match"):
        decode_tensor(entries[1], {**sections[1], "order": reference.order_bytes(
            np.arange(32))}, referenced=restored)


def test_a_reference_needs_its_tensor_and_version_8(tmp_path: Path) -> None:
    entries, sections = _coded()
    with pytest.raises(CorruptFileError, match="decoded with the tensor it refers to"):
        decode_tensor(entries[1], sections[1])
    restored = decode_tensor(entries[0], sections[0])
    with pytest.raises(CorruptFileError, match="version 8"):
        decode_tensor(entries[1], sections[1], version=7, referenced=restored)


@pytest.mark.parametrize("name", sorted(PAIR))
def test_the_similarity_lens_flags_the_repeated_pairs_only(name: str) -> None:
    from weightdna.analysis.similarity import RowMatch

    pair = PAIR[name].make()
    match = RowMatch(n_bootstrap=2).fit(pair["second.weight"], pair["first.weight"])
    if PAIR[name].repeated:
        assert match.residual_ < 1e-3, match.residual_
    else:  # random rows of 384 against 256: ≈ 1 − 2·ln(512)/384
        assert match.residual_ > 0.9, match.residual_
