"""The model's other files in a .dna file (format version 6): stored and given back byte for
byte; and, as in test_codec_hostile.py, files written on purpose with every CRC correct are
refused with a `WeightDNAError` that says what is wrong — no path leads outside the output
folder, no size is trusted, no older version may hold files."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import torch

from weightdna.cli import main
from weightdna.codec import encode_tensor, read_dna_file, write_dna_file
from weightdna.codec.bundle import shard_layout, stored_entry, write_folder
from weightdna.codec.container import PREFIX, VERSION, header_block, header_dictionary
from weightdna.codec.zstdframes import compress_bytes
from weightdna.errors import CorruptFileError, InvalidInputError, WeightDNAError

CONFIG = b'{"model_type": "bert", "hidden_size": 8}\n'
POOLING = b'{"word_embedding_dimension": 8}'


def _valid(tmp_path: Path, files=None) -> Path:  # noqa: ANN001
    coded = [encode_tensor(torch.arange(12.0).reshape(3, 4), name="w", lossless=True)]
    if files is None:
        files = [stored_entry("config.json", CONFIG), stored_entry("1_Pooling/config.json",
                                                                   POOLING)]
    path = tmp_path / "v6.dna"
    write_dna_file(path, [c[0] for c in coded], [c[1] for c in coded], files=files,
                   overwrite=True)
    return path


def _rewrite(path: Path, change, version: int = VERSION) -> Path:  # noqa: ANN001
    """``path`` with ``change(header, data)`` applied to its header (data: the data area's
    bytes, which it may return changed), the header re-deflated, its CRC correct."""
    raw = path.read_bytes()
    _, _, stored, inflated, _ = PREFIX.unpack(raw[:PREFIX.size])
    inflater = zlib.decompressobj(zdict=header_dictionary())
    header = json.loads(inflater.decompress(raw[PREFIX.size:PREFIX.size + stored]))
    data = raw[PREFIX.size + stored:]
    data = change(header, data) or data
    out = path.with_name("hostile.dna")
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    out.write_bytes(header_block(text, version) + data)
    return out


def test_files_come_back_byte_for_byte(tmp_path: Path) -> None:
    dna = read_dna_file(_valid(tmp_path))
    assert dna.version == 8  # 9, 10, 11 only with column factors, lanes, grid steps
    assert [e["path"] for e in dna.files] == ["config.json", "1_Pooling/config.json"]
    assert dna.stored_file("1_Pooling/config.json") == POOLING
    written, _ = write_folder(dna, tmp_path / "out", overwrite=False)
    assert (tmp_path / "out" / "config.json").read_bytes() == CONFIG
    assert (tmp_path / "out" / "1_Pooling" / "config.json").read_bytes() == POOLING
    assert sorted(p.name for p in written) == ["config.json", "config.json",
                                               "model.safetensors"]
    with pytest.raises(InvalidInputError, match="no file"):
        dna.stored_file("absent.json")


@pytest.mark.parametrize("bad", ["../evil.json", "/etc/passwd", "a//b.json", "a/./b.json",
                                 ".hidden", "a/../../b", "a\\b.json", "x\x01.json", "",
                                 "x" * 256, "a/" * 600 + "b"])
def test_a_path_outside_the_folder_is_refused(tmp_path: Path, bad: str) -> None:
    def change(header: dict, data: bytes) -> None:
        header["files"][0]["path"] = bad

    with pytest.raises(CorruptFileError, match="path"):
        read_dna_file(_rewrite(_valid(tmp_path), change))
    with pytest.raises(InvalidInputError, match="cannot store"):
        write_dna_file(tmp_path / "w.dna", [], [], files=[stored_entry(bad, b"x")])


@pytest.mark.parametrize("field,value,message", [
    ("bytes", -1, "bytes must be"),
    ("bytes", 1 << 40, "bytes must be"),
    ("bytes", True, "bytes must be"),
    ("compression", "gzip", "compression"),
    ("kind", "script", "unknown kind"),
    ("extra", 1, "keys"),
    ("sections", {"data": [0, 1, 0], "more": [0, 0, 0]}, "sections"),
])
def test_malformed_entries_are_refused(tmp_path: Path, field: str, value: object,
                                       message: str) -> None:
    def change(header: dict, data: bytes) -> None:
        header["files"][1][field] = value

    with pytest.raises(CorruptFileError, match=message):
        read_dna_file(_rewrite(_valid(tmp_path), change))


def test_sizes_are_checked_against_memory_and_content(tmp_path: Path) -> None:
    path = _valid(tmp_path)
    with pytest.raises(CorruptFileError, match="memory limit"):
        read_dna_file(path, max_memory=len(POOLING) - 1)

    def lie(header: dict, data: bytes) -> None:
        header["files"][1]["bytes"] = len(POOLING) + 1

    dna = read_dna_file(_rewrite(path, lie))  # the size is only known once inflated
    with pytest.raises(CorruptFileError, match="zstd"):
        dna.stored_file("1_Pooling/config.json")


def test_a_zstd_bomb_is_stopped_at_the_declared_size(tmp_path: Path) -> None:
    bomb = compress_bytes(b"\0" * (64 << 20))
    entry = {"path": "config.json", "bytes": 10, "compression": "zstd"}
    dna = read_dna_file(_valid(tmp_path, files=[(entry, bomb)]))
    with pytest.raises(CorruptFileError, match="more than"):
        dna.stored_file("config.json")


def test_layout_and_names_are_checked(tmp_path: Path) -> None:
    path = _valid(tmp_path)

    def overlap(header: dict, data: bytes) -> None:
        header["files"][1]["sections"]["data"][0] -= 1

    def twice(header: dict, data: bytes) -> bytes:
        first = header["files"][0]
        header["files"][1]["path"] = first["path"]
        return data

    def not_a_list(header: dict, data: bytes) -> None:
        header["files"] = {"config.json": 1}

    for change, message in ((overlap, "overlap|gap"), (twice, "two files"),
                            (not_a_list, "files must be a list")):
        with pytest.raises(CorruptFileError, match=message):
            read_dna_file(_rewrite(path, change))
    with pytest.raises(InvalidInputError, match="two files"):
        write_dna_file(tmp_path / "w.dna", [], [], files=[stored_entry("a", b"1"),
                                                          stored_entry("a", b"2")])


def test_older_versions_hold_no_files(tmp_path: Path) -> None:
    with pytest.raises(CorruptFileError, match="keys metadata and tensors"):
        read_dna_file(_rewrite(_valid(tmp_path), lambda h, d: None, version=5))


def test_a_damaged_file_section_is_found(tmp_path: Path) -> None:
    path = _valid(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # the last file's zstd frame
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="1_Pooling/config.json.*checksum"):
        read_dna_file(path)


def _with_index(tmp_path: Path, weight_map: dict, extra=()) -> Path:  # noqa: ANN001
    index = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return _valid(tmp_path, files=[stored_entry("model.safetensors.index.json", index),
                                   *extra])


@pytest.mark.parametrize("weight_map,message", [
    ({"w": "../up.safetensors"}, "plain .safetensors"),
    ({"w": "sub/w.safetensors"}, "plain .safetensors"),
    ({"w": "w.bin"}, "plain .safetensors"),
    ({"w": ".w.safetensors"}, "path"),
    ({}, "exactly"),
    ({"w": "a.safetensors", "v": "a.safetensors"}, "exactly"),
    ({"w": "config.safetensors"}, "plain .safetensors"),
])
def test_a_stored_shard_index_is_checked_before_use(tmp_path: Path, weight_map: dict,
                                                    message: str, capsys) -> None:
    extra = [stored_entry("config.safetensors", b"x")]
    path = _with_index(tmp_path, weight_map, extra)
    with pytest.raises(CorruptFileError, match=message):
        shard_layout(read_dna_file(path))
    assert main(["decompress", str(path), "-o", f"{tmp_path / 'out'}/"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_stored_file_cannot_replace_the_weights(tmp_path: Path) -> None:
    path = _valid(tmp_path, files=[stored_entry("model.safetensors", b"not weights")])
    with pytest.raises(WeightDNAError, match="like the weights"):
        write_folder(read_dna_file(path), tmp_path / "out", overwrite=False)


def test_the_prefix_version_is_eight_without_column_factors() -> None:
    from weightdna.codec.entries import file_version

    block = header_block(b"{}", file_version([]))
    assert struct.unpack("<I", block[8:12])[0] == 8
    assert struct.unpack("<I", header_block(b"{}")[8:12])[0] == VERSION
