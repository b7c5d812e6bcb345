"""A model's other files in its .dna file (format version 6), and the folder written back.

Compressing a Hugging Face folder stores, beside the tensors, the files a framework needs
to use them: config, generation config, tokenizer, sentence-transformers modules and their
subfolders; compressing an ONNX model stores its graph without the weights (coded as the
other files are, `stored_entries`), which `write_onnx_file` puts back. A folder's file goes
in by default when it is small text (or a known tokenizer model) and not hidden; any other
file only when asked for (``include``), and every file left out is named, with why.
`write_folder` writes the folder back: the weights as safetensors, sharded under the
source's shard names when its index was stored, and every stored file, all or none. From format
version 12 the files may be coded against each other (`stored_entries`,
`weightdna.codec.filecoding`): a tokenizer.json's vocabulary as lines, and vocab.txt drawn
on them; from version 20 a file by PPMd.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from weightdna.atomic import atomic_folder, atomic_output
from weightdna.codec.container import DnaFile, check_relative_path
from weightdna.codec.dtypes import DTYPES
from weightdna.codec.fields import load_json
from weightdna.codec.filecoding import LEVEL as FILES_LEVEL
from weightdna.codec.filecoding import code_files
from weightdna.codec.zstdframes import ZSTD_LEVEL, compress_bytes
from weightdna.errors import CorruptFileError, InvalidInputError
from weightdna.weights import ModelWeights, save_weights
from weightdna.weights.load import folder_weight_files
from weightdna.weights.model import TensorSource

# A text file up to this size is stored by default (the largest tokenizer.json of common
# models, Gemma's, is about 34 MB).
MAX_DEFAULT_BYTES = 64 << 20
# Tokenizer files that are not text but that a tokenizer needs (sentencepiece, tiktoken).
TOKENIZER_FILES = ("*.model", "*.tiktoken")
SHARD_INDEX = "model.safetensors.index.json"
ONNX_GRAPH = "model.onnx"  # the path of an ONNX model's graph (kind "onnx-graph")
SINGLE_WEIGHTS = "model.safetensors"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StoredFiles:
    """The files a .dna file will hold beside the tensors, and those left out."""

    files: list[tuple[dict, bytes]] = field(default_factory=list)  # (entry, its coding)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def paths(self) -> list[str]:
        """The stored files' paths in the model's folder."""
        return [entry["path"] for entry, _ in self.files]

    @property
    def stored_bytes(self) -> int:
        """Their bytes in the .dna file (zstd frames or PPMd streams)."""
        return sum(len(blob) for _, blob in self.files)


def stored_entry(path: str, data: bytes, kind: str = "file",
                 level: int = ZSTD_LEVEL) -> tuple[dict, bytes]:
    """One file as the container stores it: its entry and its zstd frame at ``level``."""
    return _entry(path, data, kind), compress_bytes(data, level)


def _entry(path: str, data: bytes, kind: str = "file") -> dict:
    entry = {"path": path, "bytes": len(data), "compression": "zstd"}
    if kind != "file":
        entry["kind"] = kind
    return entry


def stored_entries(files: Sequence[tuple[str, bytes]], ppmd: bool = True,
                   kind: str = "file", level: int = ZSTD_LEVEL) -> list[tuple[dict, bytes]]:
    """Files (path, content) of ``kind`` as the container stores them, in order: coded as
    versions 12 and 20 code them (`weightdna.codec.filecoding.code_files`: a vocabulary as
    lines, frames drawn on the files before, with ``ppmd`` a payload by PPMd) where that is
    smaller, else each alone at zstd ``level`` (`stored_entry`; at the default, byte for
    byte as before)."""
    plain = [stored_entry(path, data, kind, level) for path, data in files]
    coded = code_files([(_entry(path, data, kind), data) for path, data in files], ppmd)
    if coded is None or sum(len(f) for _, f in coded) >= sum(len(f) for _, f in plain):
        return plain
    return coded


def collect_files(weights: ModelWeights, include: Sequence[str] = ()) -> StoredFiles:
    """The files of ``weights``' folder to store beside its tensors (none for a model file).

    include: glob patterns of paths in the folder (``"onnx/*"``, ``"*.png"``) stored
    whatever they are; a pattern that matches nothing is an error."""
    folder = weights.path
    if weights.format == "onnx" and not include:
        from weightdna.weights.onnx_format import graph_without_weights, load_model

        # The graph by the smallest of PPMd (version 20) and zstd at filecoding's level
        # (no new version: the level is not in the format); BENCHMARKS.md, "The ONNX graph
        # coded like the other stored files".
        graph = graph_without_weights(load_model(folder))
        return StoredFiles(stored_entries([(ONNX_GRAPH, graph)], kind="onnx-graph",
                                          level=FILES_LEVEL))
    if not folder.is_dir():
        if include:
            raise InvalidInputError("--include applies to a model folder; "
                                    f"{folder} is a file.")
        return StoredFiles()
    fmt, weight_files, index = folder_weight_files(folder)
    read = {p.resolve() for p in weight_files}
    stored, left_out, matched = [], [], set()
    for path in _walk(folder):
        relative = path.relative_to(folder).as_posix()
        if path.resolve() in read:
            continue
        if fmt == "pytorch" and index is not None and path.resolve() == index.resolve():
            left_out.append((relative, "the index of pytorch_model*.bin shards: the weights "
                                       "come back as one model.safetensors"))
            continue
        wanted = [p for p in include if fnmatch.fnmatchcase(relative, p)]
        matched.update(wanted)
        if not wanted and any(part.startswith(".") for part in relative.split("/")):
            continue  # version control and caches (.gitattributes), not the model's
        why = None if wanted else _why_left_out(path)
        if why is not None:
            left_out.append((relative, why))
            continue
        try:
            check_relative_path(relative)
        except CorruptFileError:
            left_out.append((relative, "its name cannot be stored (hidden or unusual)"))
            continue
        stored.append((relative, path.read_bytes()))
    unmatched = [p for p in include if p not in matched]
    if unmatched:
        raise InvalidInputError(f"--include {unmatched[0]!r} matches no file in {folder}.")
    return StoredFiles(stored_entries(stored), left_out)


def _walk(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` (following links to files, as a Hugging Face cache
    snapshot's are; not into linked folders), hidden folders (.git, .cache) skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in sorted(files) if (Path(root) / name).is_file())
    return found


def _why_left_out(path: Path) -> str | None:
    """Why a file is not stored by default (None: it is)."""
    size = path.stat().st_size
    if size > MAX_DEFAULT_BYTES:
        return f"{size:,} bytes, over the {MAX_DEFAULT_BYTES >> 20} MiB stored by default"
    if any(fnmatch.fnmatchcase(path.name, p) for p in TOKENIZER_FILES):
        return None
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return f"not text ({size:,} bytes)"
    return None


def safetensors_metadata(dna: DnaFile) -> dict[str, str]:
    """The source's safetensors metadata (free text of another writer, or hostile: the
    default ``{"format": "pt"}`` unless it is a flat map of strings)."""
    try:
        source = load_json(dna.metadata.get("source_metadata", "{}"), "source_metadata")
    except CorruptFileError:
        return {"format": "pt"}
    if isinstance(source, dict) and source and all(isinstance(v, str) for v in source.values()):
        return source
    return {"format": "pt"}


def tensor_sources(dna: DnaFile, progress: Progress | None = None) -> dict[str, TensorSource]:
    """Every tensor of ``dna`` as a TensorSource, decoded when read (one at a time)."""
    report = progress or (lambda stage, done, total: None)
    done = 0

    def decode(name: str) -> torch.Tensor:
        nonlocal done
        report("decoding", done, len(dna.names))
        tensor = dna.tensor(name)
        done += 1
        return tensor

    return {entry["name"]: TensorSource(DTYPES[entry["dtype"]], tuple(entry["shape"]),
                                        functools.partial(decode, entry["name"]))
            for entry in dna.entries}


def write_safetensors_file(dna: DnaFile, output: Path, overwrite: bool,
                           progress: Progress | None = None) -> int:
    """Every tensor of ``dna`` as one safetensors file; returns its bytes."""
    save_weights(tensor_sources(dna, progress), output, metadata=safetensors_metadata(dna),
                 overwrite=overwrite)
    return output.stat().st_size


def write_torch_file(dna: DnaFile, output: Path, overwrite: bool,
                     progress: Progress | None = None) -> int:
    """Every tensor of ``dna`` as a torch state dict (`torch.save` of a dict of tensors,
    read back by ``torch.load(weights_only=True)``); returns its bytes."""
    state = {name: source.read() for name, source in tensor_sources(dna, progress).items()}
    with atomic_output(output, overwrite=overwrite) as handle:
        torch.save(state, handle)
    return output.stat().st_size


def shard_layout(dna: DnaFile) -> dict[str, list[str]]:
    """{weights file name: its tensors}: the stored shard index's layout, else one file."""
    stored = {entry["path"] for entry in dna.files}
    if SHARD_INDEX not in stored:
        return {SINGLE_WEIGHTS: list(dna.names)}
    index = load_json(dna.stored_file(SHARD_INDEX).decode("utf-8", "replace"), SHARD_INDEX)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or set(weight_map) != set(dna.names):
        raise CorruptFileError(f"{dna.path}: the stored {SHARD_INDEX} does not map exactly "
                               "the file's tensors to shards.")
    shards: dict[str, list[str]] = {}
    for name in dna.names:
        shard = weight_map[name]
        if (not isinstance(shard, str) or "/" in shard or not shard.endswith(".safetensors")
                or shard in stored):
            raise CorruptFileError(f"{dna.path}: the stored {SHARD_INDEX} names the shard "
                                   f"{shard!r}, not a plain .safetensors name of its own.")
        check_relative_path(shard)
        shards.setdefault(shard, []).append(name)
    return shards


def write_folder(dna: DnaFile, folder: Path, overwrite: bool,
                 progress: Progress | None = None) -> tuple[list[Path], int]:
    """The model's folder: its weights as safetensors (under the shard names of a stored
    index, else ``model.safetensors``) and every stored file; returns (the files written,
    their bytes). The files appear together once every one is written whole, else none
    (`atomic_folder`: a tensor or a stored file that cannot be read back, damaged or coded
    by PPMd without pyppmd, leaves ``folder`` as it was). The stored files go first, each
    read once, so that one of them stops the command before any tensor is decoded; the
    tensors stream, one at a time."""
    layout = shard_layout(dna)
    stored = [entry for entry in dna.files if entry.get("kind", "file") == "file"]
    clash = set(layout) & {entry["path"] for entry in stored}
    if clash:
        raise CorruptFileError(f"{dna.path}: a stored file is called {sorted(clash)[0]!r}, "
                               "like the weights.")
    names = [*layout, *(entry["path"] for entry in stored)]  # the files, relative, "/"
    for name in names:
        target = folder.joinpath(*name.split("/"))
        if target.is_file() and os.path.samefile(target, dna.path):
            raise InvalidInputError(f"{target} is the input; write the folder somewhere else.")
    sources = tensor_sources(dna, progress)
    metadata = safetensors_metadata(dna)
    with atomic_folder(folder, overwrite) as staging:
        for entry, data in dna.stored_files():
            if entry.get("kind", "file") == "file":
                with atomic_output(staging.joinpath(*entry["path"].split("/")),
                                   overwrite=False) as handle:
                    handle.write(data)
        for shard, tensors in layout.items():
            save_weights({n: sources[n] for n in tensors}, staging / shard, metadata=metadata)
        size = sum(staging.joinpath(*name.split("/")).stat().st_size for name in names)
    return [folder.joinpath(*name.split("/")) for name in names], size


def write_onnx_file(dna: DnaFile, output: Path, overwrite: bool,
                    progress: Progress | None = None) -> int:
    """The stored ONNX graph with every tensor restored where it was; returns its bytes."""
    graphs = [e for e in dna.files if e.get("kind") == "onnx-graph"]
    if not graphs:
        raise InvalidInputError(
            f"{dna.path} was not compressed from ONNX (it holds no ONNX graph): write "
            "NAME.safetensors, NAME.pt or DIR/ instead.")
    from weightdna.weights.onnx_format import restore_graph

    model = restore_graph(dna.stored_file(graphs[0]["path"]), tensor_sources(dna, progress),
                          str(dna.path), read=lambda source: source.read())
    with atomic_output(output, overwrite=overwrite) as handle:
        handle.write(model)
    return output.stat().st_size
