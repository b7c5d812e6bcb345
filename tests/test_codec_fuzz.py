"""The .dna reader and decoders survive damaged and hostile files.

Every mutated file must either decode or raise a WeightDNAError — never another exception,
a hang, or an allocation beyond the memory limit. Many mutations fix up the checksums they
break, so that the checks behind the CRCs are reached too.

CI runs a fixed, derandomised budget of the hypothesis tests, and the structure-aware
fuzzer (`tests/dna_fuzzer.py`, whose oracle also finds silent decodes) for
``WEIGHTDNA_FUZZ_SECONDS`` (30). Longer runs (docs/FORMAT.md):
``WEIGHTDNA_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_codec_fuzz.py -q`` and
``.venv/bin/python bench/fuzz.py --cases 300000``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import dna_fuzzer as fuzzer
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightdna.cli.info import _rows as info_rows
from weightdna.codec import (
    encode_tensor,
    entropy,
    read_dna_file,
    write_dna_file,
    zstdframes,
)
from weightdna.codec.container import MAGIC, PREFIX, VERSION, header_block, header_dictionary
from weightdna.codec.entries import NEW_IN_7, READABLE_VERSIONS, file_version
from weightdna.errors import CorruptFileError, WeightDNAError

LONG_RUN = int(os.environ.get("WEIGHTDNA_FUZZ_EXAMPLES", "0"))
MEMORY_LIMIT = 32 << 20


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=LONG_RUN or examples,
        derandomize=not LONG_RUN,
        deadline=2000,  # milliseconds: a hang or a quadratic blow-up fails the example
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _tensors() -> list[tuple[dict, dict[str, bytes]]]:
    """A copy of the sample tensors, encoded (each example may change its copy)."""
    return [(json.loads(json.dumps(e)), dict(s)) for e, s in _encoded()]


@functools.cache
def _encoded() -> list[tuple[dict, dict[str, bytes]]]:
    return fuzzer.encode_all([*fuzzer.sample_tensors(), fuzzer.large_trellis()])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def original(workdir: Path) -> bytes:
    encoded = _tensors()
    path = workdir / "original.dna"
    write_dna_file(path, [e for e, _ in encoded], [s for _, s in encoded])
    data = path.read_bytes()
    assert attempt(data, workdir) == "ok"
    return data


def attempt(data: bytes, workdir: Path, verify: bool = True) -> str:
    """Read and decode every tensor; 'ok' or 'refused' — anything else propagates."""
    path = workdir / "mutant.dna"
    path.write_bytes(data)
    try:
        dna = read_dna_file(path, max_memory=MEMORY_LIMIT, verify=verify)
        assert info_rows(dna) is not None  # `weightdna info` shows any file the reader accepts
        for name in dna.names:
            t = dna.tensor(name, max_memory=MEMORY_LIMIT)
            assert isinstance(t, torch.Tensor)
    except WeightDNAError as exc:
        assert str(exc), "an error must say what is wrong"
        return "refused"
    return "ok"


def split(data: bytes) -> tuple[dict, bytes]:
    """The header object and the data area of a well-formed file."""
    _, _, length, _, _ = PREFIX.unpack_from(data)
    inflater = zlib.decompressobj(zdict=header_dictionary())
    text = inflater.decompress(data[PREFIX.size : PREFIX.size + length])
    return json.loads(text), data[PREFIX.size + length :]


def assemble(header: object | bytes, data_area: bytes, version: int = VERSION) -> bytes:
    """A file with this header (an object, or raw bytes) whose header CRC is correct."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return header_block(raw, version) + data_area


def section_boundaries(data: bytes) -> list[int]:
    header, _ = split(data)
    start = len(data) - len(split(data)[1])
    ends = {start}
    for entry in header["tensors"]:
        for offset, length, _ in entry["sections"].values():
            ends |= {start + offset, start + offset + length}
    return sorted(ends | {PREFIX.size, 8, 12, 16, 20})


ABSURD = [
    -1,
    0,
    1,
    2**31,
    2**32 + 7,
    2**63,
    2**64,
    -(2**63),
    10**30,
    1e308,
    -1e308,
    0.5,
    5e-324,
    True,
    False,
    None,
    "",
    "x" * 3000,
    "float32",
    "bfloat16",
    "quantized",
    "raw",
    "dna+residual",
    "lowrank+residual",
    "siren",
    "float16",
    "categorical",
    "laplace",
    [],
    [0],
    [2**36],
    [2**40, 2**40],
    [2**20, 2**20],
    [-1],
    [0, 0, 1],
    [0, 2**40, 0],
    list(range(17)),
    {},
    {"kind": "categorical", "min": -(2**19) + 1, "max": 2**19 - 1, "mean": 0.0, "scale": 0.0},
    {"kind": "laplace", "min": 0, "max": 1, "mean": 0.5, "scale": 1e-300},
    {"kind": "gaussian", "min": 5, "max": 4, "mean": 4.5, "scale": 1.0},
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def mutate(header: dict, path: tuple, action: str, value: object) -> dict:
    header = json.loads(json.dumps(header))  # a deep copy
    if not path:
        return value if action == "replace" else header
    *parents, last = path
    node = header
    for key in parents:
        node = node[key]
    if action == "replace":
        node[last] = value
    elif action == "delete":
        del node[last]
    elif isinstance(node, dict):
        node["unexpected"] = value
    else:
        node.append(value)
    return header


# ---- random damage -----------------------------------------------------------------------


@fuzz_settings(300)
@given(data=st.data())
def test_bit_flips_anywhere(original: bytes, workdir: Path, data: st.DataObject) -> None:
    positions = data.draw(st.lists(st.integers(0, 8 * len(original) - 1), min_size=1, max_size=8))
    mutant = bytearray(original)
    for bit in positions:
        mutant[bit // 8] ^= 1 << (bit % 8)
    # Without the upfront check, each section's CRC is checked when its tensor is read.
    attempt(bytes(mutant), workdir, verify=data.draw(st.booleans()))


@fuzz_settings(100)
@given(data=st.data())
def test_truncation_at_random_points(original: bytes, workdir: Path, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(original) - 1))
    assert attempt(original[:cut], workdir) == "refused"


@fuzz_settings(100)
@given(data=st.data())
def test_random_bytes_after_a_valid_prefix(workdir: Path, data: st.DataObject) -> None:
    tail = data.draw(st.binary(max_size=512))
    length = data.draw(st.sampled_from([0, 1, len(tail), len(tail) + 1, 2**31, 2**32 - 1]))
    inflated = data.draw(st.sampled_from([0, 1, len(tail), 2**26, 2**32 - 1]))
    crc = data.draw(st.sampled_from([0, zlib.crc32(tail[:length])]))
    attempt(PREFIX.pack(MAGIC, VERSION, length, inflated, crc) + tail, workdir)


# ---- hostile headers, checksums fixed up -------------------------------------------------


@fuzz_settings(400)
@given(data=st.data())
def test_absurd_header_values(original: bytes, workdir: Path, data: st.DataObject) -> None:
    header, area = split(original)
    path = data.draw(st.sampled_from(fuzzer.json_paths(header)))
    action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    value = data.draw(st.sampled_from(ABSURD) | JSON_VALUES)
    mutant = mutate(header, path, action, value)
    attempt(assemble(mutant, area), workdir)


@fuzz_settings(150)
@given(header=JSON_VALUES)
def test_arbitrary_json_header(original: bytes, workdir: Path, header: object) -> None:
    assert attempt(assemble(header, split(original)[1]), workdir) == "refused"


@pytest.mark.parametrize(
    "text",
    [
        b'{"metadata": {}, "tensors": [NaN]}',
        b'{"metadata": {}, "tensors": [Infinity]}',
        b'{"metadata": {}, "metadata": {}, "tensors": []}',
        b'{"metadata": {}, "tensors": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"metadata": {}, "tensors": [' + b"9" * 50_000 + b"]}",
        b'{"metadata": {"a": "\xff\xfe"}, "tensors": []}',
        b'{"metadata": {}, "tensors": []',
        b"",
        b"\x00" * 64,
    ],
    ids=["nan", "inf", "duplicate", "deep", "long-int", "not-utf8", "unclosed", "empty", "nul"],
)
def test_malformed_json_is_refused(workdir: Path, text: bytes) -> None:
    assert attempt(assemble(text, b""), workdir) == "refused"


# ---- hostile sections, checksums fixed up ------------------------------------------------


@fuzz_settings(250)
@given(data=st.data())
def test_damaged_sections_with_valid_checksums(workdir: Path, data: st.DataObject) -> None:
    encoded = _tensors()
    index = data.draw(st.integers(0, len(encoded) - 1))
    entry, sections = encoded[index]
    role = data.draw(st.sampled_from(sorted(sections)))
    blob = bytearray(sections[role])
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "replace"]))
    if how == "flip" and blob:
        for bit in data.draw(st.lists(st.integers(0, 8 * len(blob) - 1), min_size=1, max_size=4)):
            blob[bit // 8] ^= 1 << (bit % 8)
    elif how == "truncate":
        del blob[data.draw(st.integers(0, len(blob))) :]
    elif how == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=64))
    else:
        blob = bytearray(data.draw(st.binary(max_size=256)))
    sections = {**sections, role: bytes(blob)}
    encoded[index] = (entry, sections)
    path = workdir / "section-mutant.dna"
    write_dna_file(path, [e for e, _ in encoded], [s for _, s in encoded], overwrite=True)
    attempt(path.read_bytes(), workdir)


# ---- systematic damage -------------------------------------------------------------------


def test_truncation_at_every_section_boundary(original: bytes, workdir: Path) -> None:
    for boundary in section_boundaries(original):
        for cut in (boundary - 1, boundary, boundary + 1):
            if 0 <= cut < len(original):
                assert attempt(original[:cut], workdir) == "refused", cut


def test_trailing_bytes_are_refused(original: bytes, workdir: Path) -> None:
    assert attempt(original + b"\x00", workdir) == "refused"


def test_every_wrong_checksum_is_caught(original: bytes, workdir: Path) -> None:
    header, area = split(original)
    for i, entry in enumerate(header["tensors"]):
        for role in entry["sections"]:
            crc = (entry["sections"][role][2] + 1) % 2**32
            mutant = mutate(header, ("tensors", i, "sections", role, 2), "replace", crc)
            with pytest.raises(CorruptFileError, match="checksum"):
                read_dna_file(_write(workdir, assemble(mutant, area)))
    bad_prefix = bytearray(original)
    bad_prefix[20] ^= 0xFF  # the header CRC-32
    with pytest.raises(CorruptFileError, match="checksum"):
        read_dna_file(_write(workdir, bytes(bad_prefix)))


def _write(workdir: Path, data: bytes) -> Path:
    path = workdir / "mutant.dna"
    path.write_bytes(data)
    return path


def _huge_mutations(header: dict) -> list[dict]:
    """Headers that declare enormous sizes while the file stays small."""
    quantized = next(i for i, e in enumerate(header["tensors"]) if e["name"] == "laplace")
    raw = next(i for i, e in enumerate(header["tensors"]) if e["name"] == "raw.float")
    cat = next(i for i, e in enumerate(header["tensors"]) if e["name"] == "rows.categorical")
    nan = next(i for i, e in enumerate(header["tensors"]) if e["name"] == "nonfinite")
    lowrank = next(i for i, e in enumerate(header["tensors"]) if e["name"] == "lowrank")
    dna = next(i for i, e in enumerate(header["tensors"]) if e["name"] == "dna")
    role = next(iter(header["tensors"][raw]["sections"]))  # "data", or a fields coding's
    return [
        mutate(header, ("tensors", lowrank, "params", "lowrank", "rank"), "replace", 2**40),
        mutate(header, ("tensors", lowrank, "shape"), "replace", [2**11, 2**11]),
        mutate(header, ("tensors", dna, "params", "network", "width"), "replace", 1024),
        mutate(header, ("tensors", dna, "params", "network", "depth"), "replace", 16),
        mutate(header, ("tensors", dna, "shape"), "replace", [2**10, 2**10]),
        mutate(header, ("tensors", quantized, "shape"), "replace", [2**36]),
        mutate(header, ("tensors", quantized, "shape"), "replace", [2**30, 2**30]),
        mutate(header, ("tensors", quantized, "shape"), "replace", [2**21]),  # over 32 MiB
        mutate(header, ("tensors", raw, "shape"), "replace", [2**20, 2]),
        mutate(header, ("tensors", raw, "sections", role, 1), "replace", 2**62),
        mutate(header, ("tensors", raw, "sections", role, 0), "replace", 2**63),
        mutate(header, ("tensors", cat, "params", "model", "max"), "replace", 2**19 - 1),
        mutate(header, ("tensors", cat, "params", "rows"), "replace", 2**40),
        mutate(header, ("tensors", nan, "params", "nonfinite"), "replace", 2**40),
        mutate(header, ("tensors", nan, "params", "nonfinite"), "replace", 42),
        mutate(header, ("tensors",), "replace", [header["tensors"][0]] * 10_000),
    ]


def test_huge_declared_sizes_allocate_nothing_big(original: bytes, workdir: Path) -> None:
    header, area = split(original)
    mutants = [assemble(h, area) for h in _huge_mutations(header)]
    _, _, length, inflated, crc = PREFIX.unpack_from(original)
    mutants.append(PREFIX.pack(MAGIC, VERSION, 2**32 - 1, inflated, 0) + original[PREFIX.size :])
    mutants.append(PREFIX.pack(MAGIC, 2**32 - 1, 10, 10, 0) + original[PREFIX.size :])
    # A header that declares an absurd inflated size, or a small one it would overflow
    # (a zip bomb): refused before or while inflating, never inflated beyond the bound.
    for claimed in (2**32 - 1, 2**26, 1, inflated - 1, inflated + 1):
        mutants.append(PREFIX.pack(MAGIC, VERSION, length, claimed, crc)
                       + original[PREFIX.size :])
    deflater = zlib.compressobj(zdict=header_dictionary())  # a bomb that names the dictionary
    bomb = deflater.compress(b" " * (100 << 20)) + deflater.flush()
    mutants.append(PREFIX.pack(MAGIC, VERSION, len(bomb), 100, zlib.crc32(bomb)) + bomb)
    tracemalloc.start()
    try:
        for mutant in mutants:
            tracemalloc.reset_peak()
            assert attempt(mutant, workdir) == "refused"
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 2 * MEMORY_LIMIT, peak
    finally:
        tracemalloc.stop()


def test_a_zip_bomb_is_stopped_by_the_memory_limit(workdir: Path) -> None:
    # Honest but large: 2^21 zeros code to a few bytes; the limit, not the size, decides.
    entry, sections = encode_tensor(torch.zeros(2**21), name="zeros", step=1.0, model="laplace")
    assert sum(map(len, sections.values())) < 64
    data = assemble({"metadata": {}, "tensors": []}, b"")  # valid, empty
    assert attempt(data, workdir) == "ok"
    path = workdir / "bomb.dna"
    write_dna_file(path, [entry], [sections], overwrite=True)
    with pytest.raises(CorruptFileError, match="memory limit"):
        read_dna_file(path, max_memory=MEMORY_LIMIT)


def test_version_and_magic_damage_are_reported(original: bytes, workdir: Path) -> None:
    entries = read_dna_file(_write(workdir, original)).entries
    uses_7 = any(e["representation"] in NEW_IN_7 or e["params"].get("compression") == "fields"
                 for e in entries)
    for offset in range(12):
        mutant = bytearray(original)
        mutant[offset] ^= 0x01
        # The file is the lowest version that holds its entries (`file_version`: 11 with
        # per-row steps on a grid); flipped, a version that reads it only if it is at
        # least that (version 7 flipped was 6, which reads a file without version 7's
        # representations and fields-coded floats: refused in a version-6 file).
        flipped = read_dna_file(_write(workdir, original)).version ^ 0x01
        needed = file_version(entries) if file_version(entries) > 8 else 7 if uses_7 else 3
        readable = offset == 8 and flipped in READABLE_VERSIONS and flipped >= needed
        assert attempt(bytes(mutant), workdir) == ("ok" if readable else "refused")
    newer = bytearray(original)
    struct.pack_into("<I", newer, 8, VERSION + 1)
    with pytest.raises(WeightDNAError, match="newer"):
        read_dna_file(_write(workdir, bytes(newer)))


# ---- the structure-aware fuzzer (tests/dna_fuzzer.py) ------------------------------------

FUZZ_SECONDS = float(os.environ.get("WEIGHTDNA_FUZZ_SECONDS", "30"))
CASE_SECONDS = 5.0  # a case slower than this is a hang (the slowest seen: ~0.3 s)


def test_structure_aware_fuzz(tmp_path: Path) -> None:
    """Cases 0, 1, 2, … of seed 0 for FUZZ_SECONDS: none crashes, hangs, over-allocates or
    decodes silently, and every outcome the oracle knows occurs (else it is not looking)."""
    fuzzer.seeds()
    statuses: dict[str, int] = {}
    failures = []
    start = time.perf_counter()
    index = 0
    while time.perf_counter() - start < FUZZ_SECONDS:
        case = fuzzer.make_case(index)
        outcome = fuzzer.measure(case, tmp_path)
        status = outcome.status
        if outcome.seconds > CASE_SECONDS:
            status = "hang"
        elif fuzzer.over_allocated(outcome):
            status = "over-allocation"
        statuses[status] = statuses.get(status, 0) + 1
        if status not in ("refused", "unchanged", "changed"):
            failures.append((index, case.kind, case.detail, status, outcome.detail))
        index += 1
    assert not failures, failures[:10]
    assert index >= 300, f"only {index} cases in {FUZZ_SECONDS} s"
    assert {"refused", "unchanged", "changed"} <= set(statuses), statuses


def _case(seed_name: str, change) -> fuzzer.Case:  # noqa: ANN001 — a function of the copy
    seed = next(s for s in fuzzer.seeds() if s.name == seed_name)
    header = json.loads(seed.header_text)
    blobs = dict(seed.blobs)
    change(header, blobs)
    return fuzzer.Case(seed_name, "test", "", fuzzer.build(header, blobs, seed.order,
                                                           seed.version), version=seed.version)


def _grow(name: str, factor: int):  # noqa: ANN202
    def change(header: dict, blobs: dict) -> None:
        entry = next(e for e in header["tensors"] if e["name"] == name)
        entry["shape"][0] *= factor
        if entry["params"].get("rows"):
            entry["params"]["rows"] *= factor
    return change


def _trailing_byte(name: str, role: str):  # noqa: ANN202
    def change(header: dict, blobs: dict) -> None:
        i = next(i for i, e in enumerate(header["tensors"]) if e["name"] == name)
        blobs[(i, role)] += fuzzer.SKIPPABLE  # bytes zstd skips: no error of its own
    return change


def test_the_oracle_finds_what_the_reader_used_to_let_through(tmp_path: Path,
                                                              monkeypatch) -> None:
    """With the reader's checks taken out again, the fuzzer's oracle calls the same files
    silent decodes: padded streams and a skippable frame after a zstd frame."""
    padded = _case("v5", _grow("laplace", 2))
    trailing = _case("v5", _trailing_byte("raw.float", "data"))
    assert fuzzer.run_case(padded, tmp_path).status == "refused"
    assert fuzzer.run_case(trailing, tmp_path).status == "refused"
    monkeypatch.setattr(entropy, "_at_end", lambda coder, terminated: True)
    monkeypatch.setattr(entropy, "max_symbols", lambda nbytes, largest: math.inf)
    monkeypatch.setattr(zstdframes, "zstd_frame_size", len)
    assert fuzzer.run_case(padded, tmp_path).status == "silent"
    assert fuzzer.run_case(trailing, tmp_path).status == "silent"
