"""Read a model's weights from any of the formats weightdna knows, without changing the file.

Formats: safetensors (each tensor read from the file when used), PyTorch checkpoints
(only through ``torch.load(weights_only=True)``), NumPy ``.npz`` (``allow_pickle=False``),
Hugging Face model folders (safetensors or ``pytorch_model*.bin``, sharded or not) and
ONNX initializers (optional ``onnx`` package). The format is recognised from the file's
first bytes, so a misnamed file is still read, or refused, correctly.
"""

from __future__ import annotations

import functools
import json
import pickle
import re
import stat
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from weightdna.errors import ModelFileError
from weightdna.weights.model import ModelWeights, TensorSource
from weightdna.weights.onnx_format import all_nodes, load_model, to_tensor, weight_protos
from weightdna.weights.roles import graph_batchnorms, graph_roles
from weightdna.weights.safetensors_format import read_header, read_tensor

# Keys under which training code commonly nests the state dict, most specific first.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network",
                   "weights", "params", "ema")
_ZIP_MAGIC = b"PK"  # local file header, or end of directory for an empty archive

Sources = dict[str, TensorSource]


def load_weights(path: str | Path, roles: Mapping[str, str] | None = None) -> ModelWeights:
    """Open the model at ``path`` (file or Hugging Face folder) and describe its tensors.

    roles: {tensor name or glob pattern: role} overriding the inferred roles.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path} does not exist; give the path of a model file or folder.")
    structural: dict[str, str] = {}
    batchnorms: dict[str, tuple[str, str]] | None = None
    if path.is_dir():
        fmt, sources, metadata = _read_folder(path)
    elif (fmt := detect_format(path)) == "onnx":
        sources, metadata, structural, batchnorms = _read_onnx(path)
    else:
        sources, metadata = _READERS[fmt](path)
    if not sources:
        raise ModelFileError(f"{path} holds no tensors; it is not a model's weights.")
    return ModelWeights(path=path, format=fmt, sources=sources, metadata=metadata, roles=roles,
                        structural_roles=structural, graph_batchnorms=batchnorms)


def detect_format(path: Path) -> str:
    """``"safetensors"``, ``"pytorch"``, ``"npz"`` or ``"onnx"``, from the file's content."""
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device would block or never end
        raise ModelFileError(f"{path} is not a regular file; give a model file or folder.")
    with path.open("rb") as f:
        head = f.read(9)
    if not head:
        raise ModelFileError(f"{path} is empty (0 bytes); it holds no weights.")
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if head[0] == 0x80:  # pickle protocol 2+: a checkpoint from torch.save's legacy format
        return "pytorch"
    if path.suffix == ".onnx":
        return "onnx"  # protobuf has no magic number; trust the name
    if (len(head) == 9 and head[8:9] == b"{") or path.suffix == ".safetensors":
        return "safetensors"
    from weightdna.codec.container import MAGIC

    if head[:len(MAGIC)] == MAGIC:
        raise ModelFileError(f"{path} is a .dna file, already compressed: `weightdna "
                             "decompress` gives its weights back (`weightdna info` lists them).")
    raise ModelFileError(
        f"{path} is not a model file weightdna can read: expected safetensors, a PyTorch "
        "checkpoint (.pt/.pth/.bin), NumPy .npz, ONNX, or a Hugging Face model folder."
    )


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(
            f"{path} is a damaged zip archive ({exc}); it is probably truncated."
        ) from None
    if not names:
        raise ModelFileError(f"{path} is an empty zip archive; it holds no tensors.")
    if any(n.endswith("data.pkl") for n in names):
        return "pytorch"
    if all(n.endswith(".npy") for n in names):
        return "npz"
    raise ModelFileError(
        f"{path} is a zip archive but neither a PyTorch checkpoint nor a NumPy .npz."
    )


def _read_safetensors(path: Path) -> tuple[Sources, dict[str, str]]:
    # The header is checked whole here (every offset against the file's size), so each
    # tensor is then read with plain reads into memory of its own: no memory map, whose
    # pages would stay resident (and count) after the tensor is dropped, and no copy.
    entries, metadata = read_header(path)
    size = path.stat().st_size
    sources = {}
    for e in entries:
        read = functools.partial(read_tensor, path, e, size)  # read(dtype) converts as it reads
        sources[e.name] = TensorSource(e.dtype, e.shape, read, owned=True, read_as=read,
                                       read_rows=_rows_reader(read) if e.shape else None)
    return sources, metadata


def _rows_reader(read: Callable[..., torch.Tensor]) -> Callable[[int, int], torch.Tensor]:
    """A reader of rows [start, stop) only (`read_tensor`'s ``rows``)."""
    return lambda start, stop: read(None, (start, stop))


def _read_pytorch(path: Path) -> tuple[Sources, dict[str, str]]:
    obj = torch_load(path, "a PyTorch checkpoint", "convert the checkpoint to safetensors "
                     "where you trust its origin, or save only model.state_dict()")
    state, _ = find_state_dict(obj, path)
    return {name: TensorSource.held(t) for name, t in state.items()}, {}


def torch_load(path: Path, what: str, advice: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU: the only way weightdna reads a
    pickle. Its refusals and failures come out as one-line ModelFileErrors (torch's own run
    to many lines, and suggest ``weights_only=False``, meant for trusted files): ``what``
    the file should be ("a PyTorch checkpoint"), ``advice`` what to do about objects it
    refuses."""
    # mmap keeps a zip checkpoint on disk until a tensor is used; it is a private mapping,
    # so nothing written to a tensor reaches the file. Legacy (pickle) files cannot be mapped.
    mmap = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():
            # torch warns of a pickle protocol it "might not support" before refusing or
            # loading; the refusal, if any, is reported below in one line.
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(
            f"{path} contains Python objects that torch.load(weights_only=True) refuses "
            f"({_unpickler_reason(exc)}), or is not {what}. weightdna never unpickles "
            f"arbitrary objects: {advice}."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelFileError(
            f"{path} could not be read as {what} ({_first_line(exc)}); it may "
            f"be truncated or not {what}."
        ) from None


def _first_line(exc: BaseException) -> str:
    # torch's messages run to many lines of advice meant for trusted files; keep the first.
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _unpickler_reason(exc: BaseException) -> str:
    # The useful part of torch's refusal is the line naming the object it would not build.
    # (the name may follow on the same line, or after blank lines: "Unsupported operand 149").
    match = re.search(r"WeightsUnpickler error:\s*([^\n]*?)(?: Please use|\n|$)", str(exc))
    return match.group(1).strip() if match and match.group(1).strip() else _first_line(exc)


def find_state_dict(obj: object, path: Path | str = "checkpoint") -> tuple[dict, str]:
    """The state dict inside a loaded checkpoint and the key path where it was found."""
    found = _search(obj, "", depth=0)
    if found is None:
        if isinstance(obj, Mapping):
            keys = ", ".join(repr(k) for k in list(obj)[:12])
            what = f"a dict with keys {keys}" if keys else "an empty dict"
        else:
            what = f"a {type(obj).__name__}"
        raise ModelFileError(
            f"{path} holds {what}, and no state dict (a dict of tensor names to tensors) "
            f"was found in it or under {', '.join(STATE_DICT_KEYS)}; save "
            "model.state_dict() instead."
        )
    state, where = found
    for name, t in state.items():
        if t.layout != torch.strided:
            raise ModelFileError(
                f"{path}: tensor {name!r} is {t.layout}; only dense tensors are supported."
            )
    return dict(state), where


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _search(obj: object, where: str, depth: int) -> tuple[Mapping, str] | None:
    if _is_state_dict(obj):
        return obj, where  # type: ignore[return-value]
    if not isinstance(obj, Mapping) or depth >= 3:
        return None
    for key in STATE_DICT_KEYS:
        if key in obj:
            found = _search(obj[key], f"{where}{key}/", depth + 1)
            if found is not None:
                return found
    # Otherwise only an unambiguous answer: exactly one value holds a state dict.
    found = [_search(v, f"{where}{k}/", depth + 1) for k, v in obj.items()]
    found = [f for f in found if f is not None]
    return found[0] if len(found) == 1 else None


def _read_npz(path: Path) -> tuple[Sources, dict[str, str]]:
    # Shapes and dtypes come from each member's .npy header, so no array is read yet.
    sources: Sources = {}
    npz = functools.cache(lambda: np.load(path, allow_pickle=False))
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = _NPY_HEADERS.get(version)
                    if read is None:
                        raise ModelFileError(f"{path}: {member} has .npy version {version}.")
                    shape, _, dtype = read(f)
                if dtype.hasobject:
                    raise ModelFileError(
                        f"{path}: array {member!r} holds Python objects, which would need "
                        "pickle to load; save numeric arrays only."
                    )
                name = member.removesuffix(".npy")
                sources[name] = TensorSource(
                    _torch_dtype(dtype, path, name),
                    tuple(shape),
                    functools.partial(_npz_array, npz, name),
                )
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFileError(f"{path} is not a readable .npz archive ({exc}).") from None
    return sources, {}


def _torch_dtype(dtype: np.dtype, path: Path, name: str) -> torch.dtype:
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype
    except TypeError:
        raise ModelFileError(
            f"{path}: array {name!r} has dtype {dtype}, which is not a tensor type."
        ) from None


_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npz_array(npz: Callable[[], np.lib.npyio.NpzFile], name: str) -> torch.Tensor:
    arr = npz()[name]
    if not arr.dtype.isnative:  # big-endian data: same values, native byte order for torch
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return torch.from_numpy(np.ascontiguousarray(arr))


def _read_onnx(path: Path) -> tuple[Sources, dict[str, str], dict[str, str],
                                    dict[str, tuple[str, str]]]:
    """The weights (initializers and Constant nodes' tensors, `onnx_format.weight_protos`),
    no metadata, their roles from the operator inputs they feed, and the kernels a
    BatchNormalization follows (`roles.graph_batchnorms`)."""
    model = load_model(path)
    sources: Sources = {name: TensorSource.held(to_tensor(proto))
                        for name, proto in weight_protos(model).items()}
    nodes = [(node.op_type, list(node.input), list(node.output))
             for node in all_nodes(model.graph)]
    shapes = {name: src.shape for name, src in sources.items()}
    return sources, {}, graph_roles(nodes, shapes), graph_batchnorms(nodes, shapes)


_READERS: dict[str, Callable[[Path], tuple[Sources, dict[str, str]]]] = {
    "safetensors": _read_safetensors,
    "pytorch": _read_pytorch,
    "npz": _read_npz,
}


def folder_weight_files(folder: Path) -> tuple[str, list[Path], Path | None]:
    """The weight files a Hugging Face model folder is read from: its format
    (``"safetensors"``, else ``"pytorch"`` for pytorch_model*.bin), the files, and the shard
    index that names them (None without one)."""
    for fmt, single in (("safetensors", "model.safetensors"), ("pytorch", "pytorch_model.bin")):
        index = folder / f"{single}.index.json"
        if index.exists():
            return fmt, _shards(index, folder)[0], index
        if (folder / single).exists():
            return fmt, [folder / single], None
        pattern = "*.safetensors" if fmt == "safetensors" else "pytorch_model*.bin"
        files = sorted(folder.glob(pattern))
        if files:
            return fmt, files, None
    raise ModelFileError(
        f"{folder} has no model weights: looked for *.safetensors and pytorch_model*.bin "
        "(with or without an .index.json)."
    )


def _read_folder(folder: Path) -> tuple[str, Sources, dict[str, str]]:
    """A Hugging Face model folder: its safetensors, else its pytorch_model*.bin files."""
    fmt, files, index = folder_weight_files(folder)
    listed = _shards(index, folder)[1] if index is not None else set()
    sources: Sources = {}
    metadata: dict[str, str] = {}
    for file in files:
        file_sources, file_metadata = _READERS[detect_format(file)](file)
        clash = sources.keys() & file_sources.keys()
        if clash:
            raise ModelFileError(
                f"{folder}: tensor {sorted(clash)[0]!r} appears in more than one "
                "weights file; the folder mixes two models."
            )
        sources.update(file_sources)
        metadata = metadata or file_metadata
    missing = listed - sources.keys()
    if missing:
        raise ModelFileError(
            f"{index} lists {len(missing)} tensors that no shard holds (e.g. "
            f"{sorted(missing)[0]!r}); a shard is missing or from another model."
        )
    return fmt, sources, metadata


def _shards(index: Path, folder: Path) -> tuple[list[Path], set[str]]:
    """The shard files an index names, and the tensor names it lists."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{index} is not a valid shard index ({exc!r}).") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(v, str) for v in weight_map.values()
    ):
        raise ModelFileError(f"{index}: weight_map must map tensor names to file names.")
    files = []
    for name in sorted(set(weight_map.values())):
        file = (folder / name).resolve()
        # A shard name must not lead outside the model's folder.
        if file.parent != folder.resolve() or not file.is_file():
            raise ModelFileError(f"{index} names the shard {name!r}, which is not in {folder}.")
        files.append(file)
    return files, set(weight_map)
