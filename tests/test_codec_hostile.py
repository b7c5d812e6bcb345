"""Files written on purpose, every CRC correct (issue 12): each is refused with a
`WeightDNAError` that says what is wrong, or decodes exactly what it holds — never a
traceback, a padded tensor, work or memory out of proportion to the file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import dna_fuzzer as fuzzer
import numpy as np
import pytest
import torch

from weightdna.cli import main
from weightdna.codec import encode_tensor, entropy, factored, read_dna_file, write_dna_file
from weightdna.codec.container import decode_memory
from weightdna.codec.entropy import decode_symbols, encode_symbols, max_probability, max_symbols
from weightdna.codec.prediction import (
    MAX_DNA_WORK,
    dna_prediction,
    dna_work,
    dna_workspace,
    lowrank_prediction,
)
from weightdna.codec.separable import separable_prediction
from weightdna.codec.tensor import factored_prediction
from weightdna.codec.zstdframes import compress_bytes, decompress_bytes
from weightdna.dna import FitConfig
from weightdna.errors import CorruptFileError, InvalidInputError, WeightDNAError


def _file(tmp_path: Path, change, seed: str = "v5") -> Path:  # noqa: ANN001
    """The seed file with ``change(header, blobs)`` applied, its layout and CRCs fixed."""
    base = next(s for s in fuzzer.seeds() if s.name == seed)
    header = json.loads(base.header_text)
    blobs = dict(base.blobs)
    change(header, blobs)
    path = tmp_path / "hostile.dna"
    path.write_bytes(fuzzer.build(header, blobs, base.order, base.version))
    return path


def _entry(header: dict, name: str) -> dict:
    return next(e for e in header["tensors"] if e["name"] == name)


def _index(header: dict, name: str) -> int:
    return next(i for i, e in enumerate(header["tensors"]) if e["name"] == name)


def _decode_all(path: Path) -> list[torch.Tensor]:
    dna = read_dna_file(path, max_memory=fuzzer.MEMORY_LIMIT)
    return [dna.tensor(n, max_memory=fuzzer.MEMORY_LIMIT) for n in dna.names]


# ---- numbers beyond a float --------------------------------------------------------------

HUGE = [fuzzer.Raw("1" * 400), fuzzer.Raw("-" + "7" * 400), fuzzer.Raw("1e400"),
        fuzzer.Raw("9" * 5000)]


@pytest.mark.parametrize("where", [
    ("gaussian", ("params", "step")),
    ("laplace", ("params", "model", "scale")),
    ("laplace", ("params", "model", "mean")),
    ("gaussian", ("stats", "mse")),
    ("dna", ("params", "network", "omega0")),
    ("dna", ("params", "network", "scale")),
    ("dna", ("params", "residual", "model", "scale")),
], ids=lambda w: ".".join(w[1]))
@pytest.mark.parametrize("value", HUGE, ids=["400-digits", "-400-digits", "1e400", "5000-digits"])
def test_numbers_too_large_for_a_float_are_refused(tmp_path: Path, where: tuple,
                                                   value: fuzzer.Raw) -> None:
    name, path = where

    def change(header: dict, blobs: dict) -> None:
        node = _entry(header, name)
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    with pytest.raises(CorruptFileError, match="digits|too large for a float"):
        _decode_all(_file(tmp_path, change))


def test_a_huge_integer_given_directly_is_refused_too() -> None:
    entry, sections = encode_tensor(torch.ones(4, 3), name="t", step=0.5)
    entry["params"]["step"] = 10**400  # not from a file: no parser bounds it
    from weightdna.codec import decode_tensor

    with pytest.raises(CorruptFileError, match="finite number"):
        decode_tensor(entry, sections)


# ---- source_metadata ---------------------------------------------------------------------


@pytest.mark.parametrize("source", ["[" * 100_000 + "]" * 100_000, '{"a": ' + "9" * 5000 + "}",
                                    '{"a": 1e400}', "not json"],
                         ids=["deep", "5000-digits", "1e400", "text"])
def test_hostile_source_metadata_decompresses_with_the_default(tmp_path: Path,
                                                               source: str) -> None:
    from weightdna.codec.compress import decompress_model
    from weightdna.weights import load_weights

    def change(header: dict, blobs: dict) -> None:
        header["metadata"]["source_metadata"] = source

    path = _file(tmp_path, change)
    count, _ = decompress_model(path, tmp_path / "out.safetensors")
    assert count == len(read_dna_file(path).names)
    assert load_weights(tmp_path / "out.safetensors").metadata == {"format": "pt"}


# ---- a DNA parameter the format allows ---------------------------------------------------


@pytest.mark.parametrize("key", ["omega0", "hidden_omega0"])
@pytest.mark.parametrize("omega", [1e-300, 5e-324, 1e4])
def test_any_allowed_omega0_decodes(tmp_path: Path, key: str, omega: float) -> None:
    def change(header: dict, blobs: dict) -> None:
        _entry(header, "dna")["params"]["network"][key] = omega

    dna = read_dna_file(_file(tmp_path, change))
    assert torch.isfinite(dna.tensor("dna").float()).all()  # other values: not an error


def test_decoding_a_dna_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    dna = read_dna_file(_file(tmp_path, lambda header, blobs: None))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    dna.tensor("dna")
    assert torch.equal(torch.rand(3), expected)


# ---- the terminal ------------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["x[/]y", "damaged[backup]", "[bold]b"])
def test_error_messages_are_printed_as_text(tmp_path: Path, capsys, stem: str) -> None:
    path = tmp_path / f"{stem}.dna"
    path.parent.mkdir(exist_ok=True)  # "x[/]y.dna" is the file "]y.dna" in the folder "x["
    path.write_bytes(b"\x89DNA\r\n\x1a\n" + b"\xff" * 30)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{stem}.dna" in err.replace("\n", "") and "Traceback" not in err


def test_info_shows_hostile_names_as_escapes(tmp_path: Path, capsys, monkeypatch) -> None:
    from weightdna.cli import console

    monkeypatch.setattr(console, "width", 400)  # no name wrapped over two lines
    names = ["[/]", "[bold red]x[/]", "\x1b[2Jesc", "lone\ud800", "bell\x07"]

    def change(header: dict, blobs: dict) -> None:
        for entry, name in zip(header["tensors"], names, strict=False):
            entry["name"] = name

    assert main(["info", str(_file(tmp_path, change))]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    for shown in ["[/]", "[bold red]x[/]", "\\x1b[2Jesc", "lone\\ud800", "bell\\x07"]:
        assert shown in out, shown


# ---- streams decode exactly their count --------------------------------------------------


@pytest.mark.parametrize("name", ["rows.categorical", "laplace", "gaussian", "nonfinite",
                                  "lowrank", "dna", "trellis.nonfinite"])
@pytest.mark.parametrize("factor", [2, 1000])
def test_a_count_beyond_the_stream_is_refused(tmp_path: Path, name: str, factor: int) -> None:
    def change(header: dict, blobs: dict) -> None:
        entry = _entry(header, name)
        entry["shape"][0] *= factor
        params = entry["params"].get("residual", entry["params"])
        if params["rows"]:
            params["rows"] *= factor
        if params["model"]["kind"] == "trellis":
            params["model"]["streams"][0]["count"] += math.prod(entry["shape"]) // factor \
                * (factor - 1)

    with pytest.raises(CorruptFileError):
        _decode_all(_file(tmp_path, change))


@pytest.mark.parametrize("name", ["laplace", "constant", "rows.categorical"])
def test_an_emptied_stream_is_refused(tmp_path: Path, name: str) -> None:
    def change(header: dict, blobs: dict) -> None:
        blobs[(_index(header, name), "symbols")] = b""

    with pytest.raises(CorruptFileError, match="too short"):
        _decode_all(_file(tmp_path, change))


@pytest.mark.parametrize("kind", ["laplace", "gaussian", "categorical"])
def test_every_stream_ends_exactly_in_the_sentinel(kind: str) -> None:
    rng = np.random.default_rng(3)
    symbols = np.rint(rng.laplace(0, 2, 5000)).astype(np.int32)
    symbols[-300:] = symbols.min()  # a trailing run of the first symbol: free before v5
    model, sections = encode_symbols(symbols, kind)
    assert np.array_equal(decode_symbols(model, sections, symbols.size), symbols)
    for wrong in (symbols.size - 1, symbols.size + 1, symbols.size + 300):
        with pytest.raises(CorruptFileError):
            decode_symbols(model, sections, wrong)
    with pytest.raises(CorruptFileError):
        decode_symbols(model, {**sections, "symbols": sections["symbols"] + b"\0\0\0\0"},
                       symbols.size)


def test_a_legacy_stream_that_empties_early_is_filled_not_decoded(monkeypatch) -> None:
    monkeypatch.setattr(entropy, "SENTINEL", ())  # as versions 3 and 4 coded streams
    symbols = np.zeros(200_000, dtype=np.int32)
    symbols[:5] = 1  # then a trailing run of the first symbol: no bits at all
    model, sections = encode_symbols(symbols, "laplace")
    assert np.array_equal(decode_symbols(model, sections, symbols.size, version=4), symbols)

    class Counting:  # a coder that counts what it is asked to decode
        def __init__(self, coder: object) -> None:
            self.coder, self.decoded = coder, 0

        def decode(self, coding_model: object, n: int) -> np.ndarray:
            self.decoded += n
            return self.coder.decode(coding_model, n)

        def is_empty(self) -> bool:
            return self.coder.is_empty()

    words = np.frombuffer(sections["symbols"], dtype="<u4")
    coder = Counting(entropy.constriction.stream.stack.AnsCoder(words))
    out = entropy._decode_legacy(coder, entropy._parametric(model), 50_000_000, model["min"])
    assert coder.decoded == entropy.LEGACY_DECODE_CHUNK  # one chunk: the rest is filled
    assert np.array_equal(out[:5], symbols[:5]) and not out[5:].any()


# ---- counts the bytes cannot hold --------------------------------------------------------


def _probabilities(model: object) -> list[int]:
    """Every symbol's fixed-point probability, read back from constriction: one symbol
    decoded from the state 2^48 + q gives p·2^24 + (q − its cumulative)."""
    out, q = [], 0
    while q < 1 << 24:
        coder = entropy.constriction.stream.stack.AnsCoder(np.array([q, 1 << 16], np.uint32))
        coder.decode(model, 1)
        words = coder.get_compressed().astype(np.uint64)
        state = int(words[0]) | (int(words[1]) << 32 if words.size > 1 else 0)
        p = state >> 24
        out.append(p)
        q = q - (state & 0xFFFFFF) + p
    return out


def test_the_largest_probability_bound_is_honest() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        lo = int(rng.integers(-30, 0))
        hi = lo + int(rng.integers(1, 30))
        kind = str(rng.choice(["laplace", "gaussian", "categorical"]))
        counts = None
        if kind == "categorical":
            counts = rng.integers(0, 1000, hi - lo + 1) * (rng.random(hi - lo + 1) < 0.6)
            counts[rng.integers(hi - lo + 1)] += int(10 ** rng.uniform(0, 9))
            model = {"kind": kind, "min": lo, "max": hi, "mean": 0.0, "scale": 0.0}
            coding = entropy.constriction.stream.model.Categorical(counts.astype(float),
                                                                    perfect=False)
        else:
            model = {"kind": kind, "min": lo, "max": hi, "mean": float(rng.uniform(lo, hi)),
                     "scale": float(10 ** rng.uniform(-3, 2))}
            coding = entropy._parametric(model)
        assert max(_probabilities(coding)) <= max_probability(model, counts), model


def test_fifty_million_elements_over_a_few_bytes_are_refused_at_once(tmp_path: Path) -> None:
    def change(header: dict, blobs: dict) -> None:
        _entry(header, "laplace")["shape"] = [50_000_000]

    start = time.perf_counter()
    dna = read_dna_file(_file(tmp_path, change), max_memory=1 << 40)  # memory: not the limit
    with pytest.raises(CorruptFileError, match="cannot hold"):
        dna.tensor("laplace", max_memory=1 << 40)
    assert time.perf_counter() - start < 1.0
    assert max_symbols(300, 1 << 23) < 3000  # p ≤ 1/2: at least a bit a symbol


def test_a_near_constant_tensor_still_fits_its_few_bytes() -> None:
    symbols = np.zeros(2_000_000, dtype=np.int32)
    symbols[::100_000] = 1
    model, sections = encode_symbols(symbols, "categorical")
    assert len(sections["symbols"]) <= 64
    counts = np.bincount(symbols, minlength=2)
    assert symbols.size <= max_symbols(len(sections["symbols"]), max_probability(model, counts))
    assert np.array_equal(decode_symbols(model, sections, symbols.size), symbols)


# ---- a DNA's work and memory -------------------------------------------------------------


def test_a_dna_beyond_the_work_limit_is_refused(tmp_path: Path) -> None:
    # Width 1024, depth 1 on 2.1M elements: under the old limit (parameters × elements ≤
    # 2^40) this would evaluate for about 50 s here (24 µs per element, mostly sines).
    assert dna_work(1024, 1, 1 << 21) > MAX_DNA_WORK >= dna_work(32, 2, 3_400_000)

    def change(header: dict, blobs: dict) -> None:
        entry = _entry(header, "dna")
        entry["shape"] = [12, 174_763]  # 12 rows, as its per-row steps: 2.1M elements
        entry["params"]["network"].update(width=1024, depth=1)
        blobs[(_index(header, "dna"), "network")] = bytes(2 * (4 * 1024 + 1))

    with pytest.raises(CorruptFileError, match="too costly"):
        read_dna_file(_file(tmp_path, change)).tensor("dna", max_memory=1 << 40)
    with pytest.raises(InvalidInputError, match="too costly"):  # nor does the encoder write one
        dna_prediction(np.zeros((2048, 1024)), FitConfig(width=1024, depth=1, steps=1))


_CHILD = """
import sys
from weightdna.codec import read_dna_file
from weightdna.codec.tensor import decode_tensor
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
dna = read_dna_file(sys.argv[1])
entry, sections = dna.entries[0], dna.read_sections(dna.names[0])
decode_tensor(entry, sections, 1 << 40, dna.version)  # imports and compiled code loaded
open("/proc/self/clear_refs", "w").write("5")  # the peak RSS starts again from here
before = status("VmRSS:")
tensor = decode_tensor(entry, sections, 1 << 40, dna.version)
print(status("VmHWM:") - before)
"""


def _smooth(rows: int, columns: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(-1, 1, rows)[:, None] * torch.linspace(-1, 1, columns)[None, :]
    return grid + 0.01 * torch.randn(rows, columns, generator=g)


def _factored(kernel: torch.Tensor, r: int, s: int) -> tuple[torch.Tensor, dict]:
    values = kernel.double().numpy()
    return kernel, {"step": 0.05, "prediction": factored_prediction(
        values, factored.factorise(values, r, s), 0.05, "t")}


MEMORY_CASES = {
    "quantized-1d-float64": lambda: (torch.randn(2_000_000).double(), {"step": 0.01}),
    "trellis-wide-bfloat16": lambda: (torch.randn(2, 1_000_000).bfloat16(),
                                      {"step": 0.05, "quantizer": "trellis"}),
    "raw-float64": lambda: (torch.randn(1_000_000).double(), {"lossless": True}),
    "raw-fields-float32": lambda: (torch.randn(1_000_000) * 0.05, {"lossless": True}),
    "lowrank": lambda: (_smooth(1024, 1024), {"step": 0.01, "prediction": lowrank_prediction(
        _smooth(1024, 1024).double().numpy(), 2)}),
    "transform-wide-dft": lambda: (torch.randn(2, 1_000_000), {"step": 0.05,
                                                                "transform": "dft"}),
    "transform-dct-trellis": lambda: (torch.randn(1024, 1024), {"step": 0.05,
                                      "transform": "dct", "quantizer": "trellis"}),
    "separable": lambda: (_smooth(1024, 1024), {"step": 0.01, "prediction":
                          separable_prediction(_smooth(1024, 1024).double().numpy(), 32, 32, 2)}),
    # The largest factors the format allows: r = in, s = kh (three times the kernel's size).
    "factored-full-ranks": lambda: _factored(torch.randn(64, 16, 32, 32), 16, 32),
    "dna-width-128": lambda: (_smooth(256, 256), {"step": 0.01, "prediction": dna_prediction(
        _smooth(256, 256).double().numpy(), FitConfig(width=128, depth=2, steps=2,
                                                      device="cpu"))}),
}


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's resettable peak RSS")
@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
def test_the_memory_bound_covers_what_decoding_allocates(tmp_path: Path, case: str) -> None:
    """Peak RSS of a decode in a fresh process, every allocation of 64 KiB or more mapped
    on its own (tracemalloc does not see torch's or constriction's allocations)."""
    tensor, request = MEMORY_CASES[case]()
    entry, sections = encode_tensor(tensor, name="t", **request)
    path = tmp_path / "m.dna"
    write_dna_file(path, [entry], [sections])
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    child = subprocess.run([sys.executable, "-c", _CHILD, str(path)], env=env, check=True,
                           capture_output=True, text=True)
    peak = int(child.stdout)
    bound = decode_memory(entry["representation"], entry["dtype"], entry["shape"])
    if entry["representation"] == "dna+residual":
        network = entry["params"]["network"]
        bound += dna_workspace(network["width"], network["depth"], tensor.numel())
    assert peak > 0.25 * bound, (peak, bound)  # it measures something
    assert peak <= bound, (peak, bound)


def test_a_dna_whose_evaluation_exceeds_the_memory_limit_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, lambda header, blobs: None)
    entry = read_dna_file(path).entries[_index(json.loads(fuzzer.seeds()[0].header_text),
                                               "dna")]
    need = decode_memory(entry["representation"], entry["dtype"], entry["shape"])
    with pytest.raises(CorruptFileError, match="memory limit"):
        read_dna_file(path).tensor("dna", max_memory=need + 10)


# ---- one zstd frame ----------------------------------------------------------------------


FRAME = compress_bytes(b"weights" * 20)


@pytest.mark.parametrize("data", [
    fuzzer.SKIPPABLE + FRAME, FRAME + fuzzer.SKIPPABLE, FRAME + compress_bytes(b""),
    FRAME + b"\0", FRAME[:-1]],
    ids=["skippable-before", "skippable-after", "empty-second-frame", "trailing", "cut"])
def test_a_section_is_exactly_one_zstd_frame(data: bytes) -> None:
    with pytest.raises(CorruptFileError):
        decompress_bytes(data, 140, "t")
    assert decompress_bytes(FRAME, 140, "t") == b"weights" * 20


def test_a_frame_is_read_in_one_call_or_streamed_with_the_same_checks() -> None:
    import zstandard

    from weightdna.codec.zstdframes import ONE_SHOT_MIN, ONE_SHOT_RATIO

    data = np.random.default_rng(0).integers(0, 4, 1 << 18, dtype=np.uint8).tobytes()
    one_shot = compress_bytes(data, 1)  # its header states its size; ratio about 3
    assert len(data) <= ONE_SHOT_RATIO * len(one_shot) + ONE_SHOT_MIN
    unsized = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(data)
    packed = compress_bytes(bytes(1 << 22))  # far over the ratio: streamed
    assert len(packed) * ONE_SHOT_RATIO + ONE_SHOT_MIN < 1 << 22
    for frame, size in ((one_shot, len(data)), (unsized, len(data)), (packed, 1 << 22)):
        assert decompress_bytes(frame, size, "t") == (data if size == len(data)
                                                      else bytes(1 << 22))
        for wrong in (size - 1, size + 1):
            with pytest.raises(CorruptFileError, match="bytes; expected"):
                decompress_bytes(frame, wrong, "t")
    forged = bytearray(one_shot)  # damaged inside: zstd's own checks still refuse it
    forged[len(forged) // 2] ^= 0xFF
    with pytest.raises(CorruptFileError):
        decompress_bytes(bytes(forged), len(data), "t")


@pytest.mark.parametrize("data", [b"", fuzzer.SKIPPABLE, compress_bytes(b"") + b"\0"],
                         ids=["nothing", "skippable-only", "trailing"])
def test_an_empty_tensor_still_needs_its_frame(data: bytes) -> None:
    with pytest.raises(CorruptFileError, match="one zstd frame"):
        decompress_bytes(data, 0, "t")
    assert decompress_bytes(compress_bytes(b""), 0, "t") == b""


def test_refusals_are_weightdna_errors_with_messages(tmp_path: Path) -> None:
    def change(header: dict, blobs: dict) -> None:
        blobs[(_index(header, "raw.float"), "data")] = fuzzer.SKIPPABLE + blobs[
            (_index(header, "raw.float"), "data")]

    with pytest.raises(WeightDNAError, match="one zstd frame"):
        _decode_all(_file(tmp_path, change))
