"""`weightdna decompress X.dna -o DIR/` writes a model folder all or nothing
(`weightdna.atomic.atomic_folder`): a tensor that turns out damaged after earlier shards were
written leaves DIR as it was — nothing new in it, nothing in it changed — and no staging
folder behind."""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path

import pytest
import torch

from weightdna.atomic import STALE_SECONDS, atomic_folder, remove_stale_temporaries
from weightdna.cli import main
from weightdna.codec import encode_tensor, read_dna_file, write_dna_file
from weightdna.codec.bundle import stored_entry, write_folder
from weightdna.codec.container import PREFIX, header_block, header_dictionary
from weightdna.errors import CorruptFileError, InvalidInputError, OutputError, OutputExistsError
from weightdna.weights import load_weights

SHARDS = {"a": "model-00001-of-00003.safetensors", "b": "model-00002-of-00003.safetensors",
          "c": "model-00003-of-00003.safetensors"}
CONFIG = b'{"model_type": "bert"}\n'


def _sharded(tmp_path: Path, name: str = "m.dna", files=()) -> Path:  # noqa: ANN001
    """A .dna file of three tensors in three shards (a stored index), and a config."""
    torch.manual_seed(0)
    coded = [encode_tensor(torch.randn(16, 8), name=n, bits=3) for n in SHARDS]
    index = json.dumps({"metadata": {}, "weight_map": SHARDS}).encode()
    path = tmp_path / name
    write_dna_file(path, [c[0] for c in coded], [c[1] for c in coded], overwrite=True,
                   files=[stored_entry("model.safetensors.index.json", index),
                          stored_entry("config.json", CONFIG), *files])
    return path


def _damaged(path: Path, tensor: int = 2) -> Path:
    """``path`` with the coded symbols of its ``tensor``-th tensor inverted, their CRC-32
    correct: the file reads, that tensor's decoding fails."""
    raw = path.read_bytes()
    _, version, stored, _, _ = PREFIX.unpack(raw[:PREFIX.size])
    inflater = zlib.decompressobj(zdict=header_dictionary())
    header = json.loads(inflater.decompress(raw[PREFIX.size:PREFIX.size + stored]))
    data = bytearray(raw[PREFIX.size + stored:])
    section = header["tensors"][tensor]["sections"]["symbols"]
    offset, length, _ = section
    data[offset:offset + length] = bytes(255 - b for b in data[offset:offset + length])
    section[2] = zlib.crc32(bytes(data[offset:offset + length]))
    out = path.with_name("damaged.dna")
    out.write_bytes(header_block(json.dumps(header).encode(), version) + bytes(data))
    return out


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) with its bytes (None: a folder)."""
    return {p.relative_to(folder).as_posix(): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def test_a_valid_sharded_file_gives_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written, size = write_folder(read_dna_file(_sharded(tmp_path)), out, overwrite=False)
    assert sorted(_tree(out)) == sorted([*SHARDS.values(), "config.json",
                                         "model.safetensors.index.json"])
    assert sorted(written) == sorted(out / name for name in _tree(out))
    assert size == sum(p.stat().st_size for p in written)
    assert list(load_weights(out).names) == list(SHARDS)
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_damaged_later_tensor_leaves_no_new_folder(tmp_path: Path, capsys) -> None:
    """Before: DIR/model-00001-of-00003.safetensors and -00002- stayed behind."""
    bad = _damaged(_sharded(tmp_path))
    with pytest.raises(CorruptFileError, match="'c'"):
        read_dna_file(bad).tensor("c")
    out = tmp_path / "new" / "out"
    before = _tree(tmp_path)
    assert main(["decompress", str(bad), "-o", f"{out}/"]) == 1
    error = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in error and "'c'" in error and "The file is damaged" in error
    assert _tree(tmp_path) == before  # no DIR, no parent made for it, no staging folder


@pytest.mark.parametrize("force", [False, True])
def test_a_damaged_later_tensor_leaves_an_existing_folder_as_it_was(tmp_path: Path,
                                                                    force: bool) -> None:
    bad = _damaged(_sharded(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    if force:  # files of the names to be written, and others
        (out / SHARDS["a"]).write_bytes(b"old shard")
        (out / "config.json").write_bytes(b"old config")
        (out / "notes.txt").write_bytes(b"mine")
    before = _tree(out)
    assert main(["decompress", str(bad), "-o", f"{out}/", *(["--force"] if force else [])]) == 1
    assert _tree(out) == before


def test_force_replaces_the_files_it_writes_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / SHARDS["a"]).write_bytes(b"old shard")
    (out / "notes.txt").write_bytes(b"mine")
    linked = tmp_path / "elsewhere.json"  # a hard link: replaced by a rename, not written over
    linked.write_bytes(b"linked")
    os.link(linked, out / "config.json")
    path = _sharded(tmp_path)
    assert main(["decompress", str(path), "-o", f"{out}/"]) == 1  # not empty: --force
    assert main(["decompress", str(path), "-o", f"{out}/", "--force"]) == 0
    tree = _tree(out)
    assert tree["notes.txt"] == b"mine" and tree["config.json"] == CONFIG
    assert linked.read_bytes() == b"linked"
    assert list(load_weights(out / SHARDS["a"]).names) == ["a"]
    assert not [name for name in tree if name.startswith(".")]


def test_a_failed_move_puts_every_replaced_file_back(tmp_path: Path) -> None:
    """The moves themselves fail half way (a folder stands where the last file goes): the
    files already moved in are taken out again and the ones they replaced put back."""
    out = tmp_path / "out"
    (out / "z.txt").mkdir(parents=True)
    (out / "a.txt").write_bytes(b"old a")
    before = _tree(out)
    with pytest.raises(OutputError, match="a folder stands there"), \
            atomic_folder(out, overwrite=True) as staging:
        for name in ("a.txt", "m/b.txt", "z.txt"):
            (staging / name).parent.mkdir(exist_ok=True)
            (staging / name).write_bytes(b"new")
    assert _tree(out) == before


def test_without_overwrite_an_existing_file_stops_every_move(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.txt").write_bytes(b"old b")
    with pytest.raises(OutputExistsError, match="b.txt"), \
            atomic_folder(out, overwrite=False) as staging:
        (staging / "a.txt").write_bytes(b"new")
        (staging / "b.txt").write_bytes(b"new")
    assert _tree(out) == {"b.txt": b"old b"}


def test_an_error_in_the_block_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "x" / "out") as staging:
        (staging / "a.txt").write_bytes(b"new")
        raise RuntimeError("stop")
    assert _tree(tmp_path) == {}


def test_a_folder_output_does_not_replace_its_input(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = _sharded(out, "notes.dna", files=[stored_entry("notes.dna", b"a stored file")])
    before = path.read_bytes()
    with pytest.raises(InvalidInputError, match="is the input"):
        write_folder(read_dna_file(path), out, overwrite=True)
    assert path.read_bytes() == before and _tree(out) == {"notes.dna": before}


def test_a_killed_writers_staging_folder_is_removed_later(tmp_path: Path) -> None:
    stale = tmp_path / ".out.wdna999999999.abcd1234.tmp"  # no such process
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "model.safetensors").write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == []  # touched just now: kept
    old = time.time() - STALE_SECONDS - 60
    for path in (stale / "sub" / "model.safetensors", stale / "sub", stale):
        os.utime(path, (old, old))
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists()
