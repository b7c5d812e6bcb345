"""Stored files coded against each other (format version 12, `weightdna.codec.filecoding`):
a tokenizer's JSON vocabulary as lines, frames drawn on the files before; every file back
byte for byte, files without a gain byte for byte as before (version 8), and hostile
entries refused with a `CorruptFileError` that says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import MINILM, requires_minilm
from test_codec_files import _rewrite

from weightdna.codec import container, encode_tensor, read_dna_file, write_dna_file
from weightdna.codec import filecoding as fc
from weightdna.codec.bundle import stored_entries, stored_entry, write_folder
from weightdna.codec.entries import FILE_CODING_VERSION, GRID_VERSION
from weightdna.errors import CorruptFileError

TOKENS = (["[PAD]", "[UNK]", 'quote"d', "back\\slash", "tab\t", "é", "青", "##s"]
          + [f"word{i}" for i in range(600)] + [f"##{chr(0x4E00 + i)}" for i in range(300)])


def _tokenizer(pretty: bool) -> bytes:
    """A tokenizer.json as `tokenizers` writes it (compact), or indented by `json.dumps`."""
    doc = {"version": "1.0", "added_tokens": [{"id": 0, "content": "[PAD]"}],
           "model": {"type": "WordPiece", "unk_token": "[UNK]",
                     "vocab": {t: i for i, t in enumerate(TOKENS)}}}
    if pretty:
        return json.dumps(doc, ensure_ascii=False, indent=2).encode()
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _folder_files(pretty: bool = False) -> list[tuple[str, bytes]]:
    return [("config.json", b'{"model_type": "bert", "hidden_size": 8}\n'),
            ("tokenizer.json", _tokenizer(pretty)),
            ("vocab.txt", "\n".join(TOKENS).encode() + b"\n"),
            ("1_Pooling/config.json", b'{"word_embedding_dimension": 8}')]


def _write(tmp_path: Path, files: list[tuple[dict, bytes]]) -> Path:
    coded = [encode_tensor(torch.arange(12.0).reshape(3, 4), name="w", lossless=True)]
    path = tmp_path / "files.dna"
    write_dna_file(path, [c[0] for c in coded], [c[1] for c in coded], files=files,
                   overwrite=True)
    return path


@pytest.mark.parametrize("pretty", [False, True])
def test_a_vocabulary_and_its_copy_come_back_byte_for_byte(tmp_path: Path,
                                                          pretty: bool) -> None:
    files = _folder_files(pretty)
    coded = stored_entries(files)
    entries = {e["path"]: e for e, _ in coded}
    vocab = entries["tokenizer.json"]["vocab"]
    assert vocab["count"] == len(TOKENS)
    assert (vocab["colon"], vocab["comma"]) == ((": ", ",\n      ") if pretty else (":", ","))
    assert entries["vocab.txt"].get("prefix") is True
    plain = sum(len(stored_entry(p, d)[1]) for p, d in files)
    assert sum(len(f) for _, f in coded) < 0.75 * plain
    dna = read_dna_file(_write(tmp_path, coded))
    assert dna.version == FILE_CODING_VERSION
    for path, data in files:
        assert dna.stored_file(path) == data
    assert [c for _, c in dna.stored_files()] == [d for _, d in files]
    write_folder(dna, tmp_path / "out", overwrite=False)
    for path, data in files:
        assert (tmp_path / "out" / path).read_bytes() == data


def test_files_without_a_gain_are_stored_as_before(tmp_path: Path) -> None:
    files = [("config.json", b'{"model_type": "bert"}\n'), ("b.txt", b"hello")]
    assert stored_entries(files) == [stored_entry(p, d) for p, d in files]
    assert read_dna_file(_write(tmp_path, stored_entries(files))).version == 8


@pytest.mark.parametrize("text", [
    b'{"a":0,"b":1,"c":3}',  # a gap in the ids
    b'{"a":1,"b":2,"c":3}',  # not from 0
    b'{"a":0,"b":1,"c":2.5}',
])
def test_only_a_run_of_consecutive_ids_is_taken(text: bytes, monkeypatch) -> None:
    monkeypatch.setattr(fc, "VOCAB_MIN_ITEMS", 2)
    found = fc.find_vocab(text)
    if text.startswith(b'{"a":1'):
        assert found is None
        return
    params, payload = found
    assert params["count"] == 2 and payload == b'{a\nb\n,"c":' + text.split(b":")[-1]
    assert fc.rebuild(payload, params, len(text), "t") == text


@requires_minilm
def test_minilm_files_shrink_and_come_back(tmp_path: Path) -> None:
    names = ["tokenizer.json", "vocab.txt", "config.json"]
    files = [(n, (MINILM / n).read_bytes()) for n in names]
    coded = stored_entries(files)
    assert sum(len(f) for _, f in coded) < 0.45 * sum(len(stored_entry(p, d)[1])
                                                      for p, d in files)
    dna = read_dna_file(_write(tmp_path, coded))
    assert [c for _, c in dna.stored_files()] == [d for _, d in files]


def _coded_file(tmp_path: Path) -> Path:
    return _write(tmp_path, stored_entries(_folder_files()))


@pytest.mark.parametrize("index,key,value,message", [
    (0, "prefix", True, "first file"),
    (2, "prefix", 1, "prefix must be true"),
    (2, "prefix", False, "prefix must be true"),
    (1, "vocab", {"at": 0}, "vocab must have the keys"),
    (1, "vocab.count", 0, "count"),
    (1, "vocab.at", -1, "at ≤ bytes"),
    (1, "vocab.bytes", 10**9, "at ≤ bytes"),
    (1, "vocab.colon", ";", "colon"),
    (1, "vocab.colon", ":" + " " * 64, "colon"),
    (1, "vocab.comma", ",x", "comma"),
    (1, "vocab.comma", 7, "comma"),
])
def test_hostile_entries_are_refused_on_reading(tmp_path: Path, index: int, key: str,
                                                value: object, message: str) -> None:
    def change(header: dict, data: bytes) -> None:
        entry = header["files"][index]
        if "." in key:
            outer, inner = key.split(".")
            entry[outer][inner] = value
        else:
            entry[key] = value

    with pytest.raises(CorruptFileError, match=message):
        read_dna_file(_rewrite(_coded_file(tmp_path), change))


@pytest.mark.parametrize("change,message", [
    (lambda e: e["vocab"].update(count=e["vocab"]["count"] + 1), "fewer vocab lines|exactly"),
    (lambda e: e["vocab"].update(count=e["vocab"]["count"] - 1), "exactly"),
    (lambda e: e.update(bytes=e["bytes"] + 1), "exactly"),
    (lambda e: e["vocab"].update(bytes=e["vocab"]["bytes"] - 1), "zstd"),
    (lambda e: e.pop("vocab"), "zstd"),  # the payload is not the file
])
def test_sizes_and_counts_are_checked_when_a_file_is_read(tmp_path: Path, change,
                                                          message: str) -> None:
    def rewrite(header: dict, data: bytes) -> None:
        change(header["files"][1])

    dna = read_dna_file(_rewrite(_coded_file(tmp_path), rewrite))
    with pytest.raises(CorruptFileError, match=message):
        dna.stored_file("tokenizer.json")


def test_a_prefix_drawn_on_other_files_is_refused(tmp_path: Path) -> None:
    """vocab.txt's frame was drawn on the files before it: put another file just before it
    and its dictionary changes, which its content checksum finds."""
    def swap(header: dict, data: bytes) -> None:
        files = header["files"]
        files.insert(2, files.pop())

    dna = read_dna_file(_rewrite(_coded_file(tmp_path), swap))
    with pytest.raises(CorruptFileError):
        dna.stored_file("vocab.txt")


def test_prefixes_are_bounded_by_memory_and_in_all(tmp_path: Path, monkeypatch) -> None:
    path = _coded_file(tmp_path)
    largest = max(len(data) for _, data in _folder_files())
    monkeypatch.setattr(container, "HEADER_MEMORY_FACTOR", 1)  # the header's bound apart
    plain = tmp_path / "plain"
    plain.mkdir()
    read_dna_file(_write(plain, [stored_entry(p, d) for p, d in _folder_files()]),
                  max_memory=largest)  # each file alone fits
    with pytest.raises(CorruptFileError, match="files before it"):
        read_dna_file(path, max_memory=largest)
    monkeypatch.setattr(fc, "MAX_PREFIX_BYTES", 1000)
    with pytest.raises(CorruptFileError, match="prefixes together"):
        read_dna_file(path)


def test_an_older_version_holds_no_prefix_or_vocab(tmp_path: Path) -> None:
    with pytest.raises(CorruptFileError, match="keys"):
        read_dna_file(_rewrite(_coded_file(tmp_path), lambda h, d: None,
                               version=GRID_VERSION))


def test_the_writer_may_give_zstd_only_the_dictionary_s_end(tmp_path: Path,
                                                           monkeypatch) -> None:
    """The reader's dictionary is every earlier payload; the writer's only its last bytes:
    the same bytes lie at the same distances back from its end."""
    monkeypatch.setattr(fc, "DICTIONARY_TAIL", 4096)
    files = [("big.txt", bytes(range(256)) * 64)] + _folder_files()
    coded = stored_entries(files)
    assert {e["path"]: e for e, _ in coded}["vocab.txt"].get("prefix") is True
    dna = read_dna_file(_write(tmp_path, coded))
    assert [c for _, c in dna.stored_files()] == [d for _, d in files]
