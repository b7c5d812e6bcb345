"""Stored files coded by PPMd (format version 20, `weightdna.codec.filecoding`): every file
back byte for byte, PPMd only where it is smaller, files without it at their earlier
version, and hostile entries and streams refused with a `CorruptFileError` (never a crash:
pyppmd's decoder is given its worst case of input), a missing pyppmd named."""

from __future__ import annotations

import json
import re
import sys
import zlib
from pathlib import Path

import pytest
import torch
from support import MINILM, requires_minilm
from test_codec_filecoding import _folder_files, _write
from test_codec_files import _rewrite

from weightdna.codec import encode_tensor, read_dna_file, write_dna_file
from weightdna.codec import filecoding as fc
from weightdna.codec.bundle import stored_entries, write_folder
from weightdna.codec.entries import FILE_CODING_VERSION, PPMD_VERSION, STATES_VERSION
from weightdna.errors import CorruptFileError, MissingDependencyError

pytest.importorskip("pyppmd")

TEXT = (Path(fc.__file__).parents[1] / "evaluate" / "sentences.txt").read_text()
WORDS = list(dict.fromkeys(re.findall(r"[a-z]+", TEXT.lower())))


def _files() -> list[tuple[str, bytes]]:
    """A folder whose README and tokenizer.json (its vocabulary as lines) PPMd codes
    smaller than zstd, and whose vocab.txt is drawn on them (``prefix``)."""
    tokens = ["[PAD]", "[UNK]", 'q"t', "é", *WORDS]
    tokenizer = json.dumps({"model": {"vocab": {t: i for i, t in enumerate(tokens)}}},
                           ensure_ascii=False, separators=(",", ":")).encode()
    return [("config.json", b'{"hidden_size": 8}'), ("README.md", TEXT.encode()[:3000]),
            ("tokenizer.json", tokenizer), ("vocab.txt", "\n".join(tokens).encode())]


def _coded(tmp_path: Path) -> Path:
    return _write(tmp_path, stored_entries(_files()))


def test_ppmd_files_come_back_byte_for_byte(tmp_path: Path) -> None:
    files = _files()
    coded = stored_entries(files)
    entries = {e["path"]: e for e, _ in coded}
    assert [entries[p]["compression"] for p, _ in files] == ["zstd", "ppmd", "ppmd", "zstd"]
    assert "vocab" in entries["tokenizer.json"] and entries["vocab.txt"]["prefix"] is True
    without = stored_entries(files, ppmd=False)
    assert all(e["compression"] == "zstd" for e, _ in without)
    saved = {e["path"]: len(f) for e, f in without}
    for entry, stream in coded:
        if entry["compression"] == "ppmd":
            assert len(stream) + fc.PPMD_ENTRY_BYTES < saved[entry["path"]]
    dna = read_dna_file(_write(tmp_path, coded))
    assert dna.version == PPMD_VERSION
    assert [c for _, c in dna.stored_files()] == [d for _, d in files]
    assert dna.stored_file("README.md") == files[1][1]
    write_folder(dna, tmp_path / "out", overwrite=False)
    for path, data in files:
        assert (tmp_path / "out" / path).read_bytes() == data
    older = tmp_path / "older"
    older.mkdir()
    assert read_dna_file(_write(older, without)).version == FILE_CODING_VERSION


def test_a_file_ppmd_does_not_shrink_keeps_zstd() -> None:
    """_folder_files' vocabulary of 900 made-up tokens: zstd drawn on the files before
    wins, and the coding is version 12's, byte for byte."""
    files = _folder_files()
    assert stored_entries(files) == stored_entries(files, ppmd=False)


@requires_minilm
def test_minilm_tokenizer_is_coded_by_ppmd(tmp_path: Path) -> None:
    names = ["tokenizer.json", "vocab.txt", "config.json"]
    files = [(n, (MINILM / n).read_bytes()) for n in names]
    coded = stored_entries(files)
    before = sum(len(f) for _, f in stored_entries(files, ppmd=False))
    assert coded[0][0]["compression"] == "ppmd" and coded[1][0].get("prefix") is True
    assert sum(len(f) for _, f in coded) < 0.9 * before
    dna = read_dna_file(_write(tmp_path, coded))
    assert [c for _, c in dna.stored_files()] == [d for _, d in files]


@pytest.mark.parametrize("index,key,value,message", [
    (1, "ppmd", {"order": 5}, "ppmd must have the keys"),
    (1, "ppmd.order", 1, "order"),
    (1, "ppmd.order", 17, "order"),
    (1, "ppmd.order", 5.0, "order"),
    (1, "ppmd.order", True, "order"),
    (1, "ppmd.memory", 3 << 20, "memory must be a power of two"),
    (1, "ppmd.memory", 1 << 29, "memory must be a power of two"),
    (1, "ppmd.memory", 1 << 19, "memory must be a power of two"),
    (1, "ppmd.crc", -1, "crc"),
    (1, "ppmd.crc", 1 << 32, "crc"),
    (1, "ppmd.crc", "0", "crc"),
    (1, "compression", "zstd", "go with compression 'ppmd'"),
    (0, "compression", "ppmd", "go with compression 'ppmd'"),
    (0, "compression", "lzma", "compression must be"),
    (3, "ppmd", {"order": 5, "memory": 1 << 20, "crc": 0}, "go with compression"),
    (1, "prefix", True, "no prefix"),
])
def test_hostile_ppmd_entries_are_refused_on_reading(tmp_path: Path, index: int, key: str,
                                                     value: object, message: str) -> None:
    def change(header: dict, data: bytes) -> None:
        entry = header["files"][index]
        if "." in key:
            outer, inner = key.split(".")
            entry[outer][inner] = value
        else:
            entry[key] = value

    with pytest.raises(CorruptFileError, match=message):
        read_dna_file(_rewrite(_coded(tmp_path), change))


def test_an_older_version_holds_no_ppmd(tmp_path: Path) -> None:
    with pytest.raises(CorruptFileError, match="keys"):
        read_dna_file(_rewrite(_coded(tmp_path), lambda h, d: None, version=STATES_VERSION))

    def only_compression(header: dict, data: bytes) -> None:
        for entry in header["files"]:
            entry.pop("ppmd", None)

    with pytest.raises(CorruptFileError, match="compression must be 'zstd'"):
        read_dna_file(_rewrite(_coded(tmp_path), only_compression, version=STATES_VERSION))


def test_a_ppmd_payload_is_bounded_by_memory(tmp_path: Path, monkeypatch) -> None:
    path = _coded(tmp_path)
    entry = read_dna_file(path).files[2]
    need = (fc.ppmd_memory(entry["ppmd"], fc.payload_bytes(entry),
                          entry["sections"]["data"][1]) + 2 * entry["bytes"])
    assert need >= entry["ppmd"]["memory"]
    with pytest.raises(CorruptFileError, match="memory limit"):
        read_dna_file(path, max_memory=need - 1)
    read_dna_file(path, max_memory=need)  # the header's own bound is far below
    monkeypatch.setattr(fc, "PPMD_MAX_BYTES", fc.payload_bytes(entry) - 1)
    with pytest.raises(CorruptFileError, match="PPMd payload must be"):
        read_dna_file(path)


def _with_stream(path: Path, index: int, change) -> Path:  # noqa: ANN001
    """``path`` with file ``index``'s stream given by ``change(stream)``, the sections of
    the files after it moved and every CRC-32 correct: only the PPMd decoder can find it."""
    def rewrite(header: dict, data: bytes) -> bytes:
        files = header["files"]
        start = files[0]["sections"]["data"][0]
        blobs = [data[o:o + n] for o, n, _ in (f["sections"]["data"] for f in files)]
        blobs[index] = change(blobs[index])
        cursor = start
        for entry, blob in zip(files, blobs, strict=True):
            entry["sections"]["data"] = [cursor, len(blob), zlib.crc32(blob)]
            cursor += len(blob)
        return data[:start] + b"".join(blobs)

    return _rewrite(path, rewrite)


@pytest.mark.parametrize("change", [
    lambda s: s[:-1], lambda s: s[:-5], lambda s: s[:len(s) // 2], lambda s: s[:5],
    lambda s: s[:4], lambda s: b"", lambda s: s + b"\0", lambda s: s + b"\x55" * 100,
    lambda s: s[:40] + bytes([s[40] ^ 0x10]) + s[41:], lambda s: s[:-1] + bytes([s[-1] ^ 1]),
    lambda s: b"\1" + s[1:], lambda s: b"\0\xff\xff\xff\xff" + s[5:],
    lambda s: bytes(len(s)), lambda s: b"\0" + bytes(range(256)) * 4,
], ids=["cut1", "cut5", "half", "five", "four", "empty", "zero-after", "bytes-after",
        "flip", "flip-last", "first-byte", "code-ones", "zeros", "garbage"])
@pytest.mark.parametrize("index", [1, 2])
def test_a_damaged_ppmd_stream_is_refused(tmp_path: Path, change, index: int) -> None:  # noqa: ANN001
    dna = read_dna_file(_with_stream(_coded(tmp_path), index, change))
    path = dna.files[index]["path"]
    with pytest.raises(CorruptFileError, match=f"file '{path}'"):
        dna.stored_file(path)


@pytest.mark.parametrize("field,value", [("crc", 1), ("order", 6)])
@pytest.mark.parametrize("path", ["README.md", "tokenizer.json"])
def test_a_stream_read_under_other_params_is_refused(tmp_path: Path, field: str,
                                                     value: int, path: str) -> None:
    def change(header: dict, data: bytes) -> None:
        params = next(e for e in header["files"] if e["path"] == path)["ppmd"]
        params[field] = params[field] + value if field == "crc" else value

    dna = read_dna_file(_rewrite(_coded(tmp_path), change))
    with pytest.raises(CorruptFileError, match="PPMd"):
        dna.stored_file(path)


def test_a_missing_pyppmd_is_named(tmp_path: Path, monkeypatch) -> None:
    dna = read_dna_file(_coded(tmp_path))
    assert dna.stored_file("config.json") == b'{"hidden_size": 8}'
    monkeypatch.setitem(sys.modules, "pyppmd", None)
    with pytest.raises(MissingDependencyError, match="pip install pyppmd"):
        dna.stored_file("README.md")
    # and the writer keeps to zstd without it
    assert stored_entries(_files()) == stored_entries(_files(), ppmd=False)


def test_more_memory_than_the_model_filled_reads_the_same(tmp_path: Path) -> None:
    """PPMd's memory only matters once its model fills it: these small files read the same
    under 2 MiB as under the 1 MiB they were written with (their CRC-32 checked)."""
    def change(header: dict, data: bytes) -> None:
        header["files"][1]["ppmd"]["memory"] = 1 << 21

    dna = read_dna_file(_rewrite(_coded(tmp_path), change))
    assert dna.stored_file("README.md") == _files()[1][1]


def test_a_file_written_before_ppmd_reads_and_is_written_the_same(tmp_path: Path) -> None:
    """tests/data/files_v12.dna: `_files()` beside one tensor, written by main at b094997
    (no PPMd): read back byte for byte, and written again byte for byte without PPMd."""
    old = Path(__file__).parent / "data" / "files_v12.dna"
    dna = read_dna_file(old)
    assert dna.version == FILE_CODING_VERSION
    assert [c for _, c in dna.stored_files()] == [d for _, d in _files()]
    coded = [encode_tensor(torch.arange(12.0).reshape(3, 4), name="w", lossless=True)]
    again = tmp_path / "again.dna"
    write_dna_file(again, [c[0] for c in coded], [c[1] for c in coded],
                   files=stored_entries(_files(), ppmd=False))
    assert again.read_bytes() == old.read_bytes()


def test_a_ppmd_stream_longer_than_can_be_read_is_refused_on_opening(tmp_path: Path) -> None:
    """A stream must be read whole and the decoder reads less than its padding, so a longer
    one is refused before anything is read; and the stream's own bytes, held four times
    while it decodes (read, padded, pyppmd's copy of what it did not read and the copy it
    hands back), count against max_memory (review s32: a 16 MiB stream under a 20 MiB limit
    held 65 MiB before it was refused)."""
    path = _coded(tmp_path)
    entry = read_dna_file(path).files[1]
    payload = fc.payload_bytes(entry)
    pad = fc._ppmd_pad(entry["ppmd"]["order"], payload)
    with pytest.raises(CorruptFileError, match="longer than"):
        read_dna_file(_with_stream(path, 1, lambda s: s + bytes(pad + 1 - len(s))))
    long = _with_stream(path, 1, lambda s: s + bytes(pad - len(s)))
    need = fc.ppmd_memory(entry["ppmd"], payload, pad) + 2 * entry["bytes"]
    assert need >= entry["ppmd"]["memory"] + 4 * pad
    with pytest.raises(CorruptFileError, match="memory limit"):
        read_dna_file(long, max_memory=need - 1)
    with pytest.raises(CorruptFileError, match="exactly"):
        read_dna_file(long).stored_file(entry["path"])


def test_a_folder_without_pyppmd_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch) -> None:
    """`weightdna decompress X.dna -o DIR/` without pyppmd: the error names it before the
    weights are written (review s32: DIR/model.safetensors was left behind, and the rerun
    after `pip install pyppmd` then needed --force)."""
    dna = read_dna_file(_coded(tmp_path))
    monkeypatch.setitem(sys.modules, "pyppmd", None)
    with pytest.raises(MissingDependencyError, match="pip install pyppmd"):
        write_folder(dna, tmp_path / "out", overwrite=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_folder_with_a_damaged_file_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    """A stored file that cannot be read back (here a PPMd stream cut by a byte, every
    CRC-32 correct) is found before the weights are written: `decompress -o DIR/` leaves
    nothing behind (it left DIR/model.safetensors before)."""
    dna = read_dna_file(_with_stream(_coded(tmp_path), 2, lambda s: s[:-1]))
    with pytest.raises(CorruptFileError, match="tokenizer.json"):
        write_folder(dna, tmp_path / "out", overwrite=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
