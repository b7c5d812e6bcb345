"""Where a small model's .dna file's bytes go: the header by field kind, and the data area
by each tensor's coding (its role, `weightdna.codec.roles.coding`) and section.

    PYTHONPATH=$PWD .venv/bin/python bench/overhead.py --models ocrcls,silero,ocrrec \
        [--rates 3] [--keep DIR] [--dna MODEL=FILE ...] [--judge] [--brief]

Each model (`weightdna.evaluate.unseen`) is compressed with `compress_model` at the target
(``layer``, no calibration), unless ``--dna MODEL=FILE`` gives its file. The header is
accounted exactly, by blanking: its JSON is deflated as the writer does (the preset
dictionary, level 9) with one kind of field after another replaced by a constant (a
number by 0, a string by "", a list or object by an empty one, keys kept), each kind's
bytes the deflated size it removes; what is left is the keys and the JSON's structure,
and the rows sum to the stored header. The order is the rows' order: a field's bytes
depend on what is still there, so the figures hold for this order.

``--judge`` also restores each file and judges it as `bench/panel.py` does (the share of
the original's decisions kept, `weightdna.evaluate.unseen.judge_for`); ``--brief`` prints
one line a file (bytes, header, the rate-coded tensors' bits per value, the judge).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from weightdna.codec.container import PREFIX, header_block, read_dna_file
from weightdna.codec.roles import coding
from weightdna.weights import load_weights

# A field kind: (label, the entries' fields it blanks). Params keys by what they hold.
STEP_KEYS = {"step", "steps", "scale_step", "grid"}
MODEL_KEYS = {"model"}
PACKED_KEYS = {"compression", "base", "bits", "shift", "sign", "byte_planes", "fields"}


def _blank(value: object) -> object:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return 0
    if isinstance(value, str):
        return ""
    return type(value)()


def _blank_params(keys: set[str] | None) -> Callable[[dict], None]:
    """Blank the params' keys in ``keys`` (None: every key left), at any depth."""
    def walk(params: dict) -> None:
        for key, value in list(params.items()):
            if isinstance(value, dict) and key not in MODEL_KEYS:
                walk(value)
            elif keys is None or key in keys:
                params[key] = _blank(value)

    def apply(entry: dict) -> None:
        if isinstance(entry.get("params"), dict):
            walk(entry["params"])
    return apply


def _blank_key(key: str) -> Callable[[dict], None]:
    def apply(entry: dict) -> None:
        if key in entry:
            entry[key] = _blank(entry[key])
    return apply


def _blank_sections(entry: dict) -> None:
    entry["sections"] = {role: _blank(spec) for role, spec in entry["sections"].items()}


KINDS: list[tuple[str, Callable[[dict], None]]] = [
    ("stats (informational)", _blank_key("stats")),
    ("index: section lengths/offsets/CRCs", _blank_sections),
    ("params: steps", _blank_params(STEP_KEYS)),
    ("params: symbol models", _blank_params(MODEL_KEYS)),
    ("params: raw/packed coding", _blank_params(PACKED_KEYS)),
    ("params: the rest", _blank_params(None)),
    ("representation", _blank_key("representation")),
    ("dtypes", _blank_key("dtype")),
    ("shapes", _blank_key("shape")),
    ("names", _blank_key("name")),
]


def raw_header(path: Path) -> tuple[int, dict, int]:
    """(version, the header's JSON as stored, the stored header's bytes)."""
    data = path.read_bytes()
    _, version, stored, _, _ = PREFIX.unpack(data[:PREFIX.size])
    block = data[:PREFIX.size + stored]
    from weightdna.codec.container import _inflate_header  # the reader's own inflate

    text = _inflate_header(block[PREFIX.size:], struct.unpack("<I", data[16:20])[0], version)
    return version, json.loads(text), stored


def _deflated(header: dict, version: int) -> int:
    text = json.dumps(header, allow_nan=False, ensure_ascii=False,
                      separators=(",", ":")).encode()
    return len(header_block(text, version)) - PREFIX.size


def header_rows(path: Path) -> list[tuple[str, int]]:
    """(field kind, stored header bytes) in KINDS order, then checksums, metadata, files
    and the keys and structure left; they sum to the stored header."""
    version, header, stored = raw_header(path)
    rows = []
    size = _deflated(header, version)
    assert size == stored, "the header deflates to other bytes than the writer's"
    for label, apply in KINDS:
        for entry in header["tensors"]:
            apply(entry)
        new = _deflated(header, version)
        rows.append((label, size - new))
        size = new
    for key, label in (("prefixes", "names' shared starts (prefixes)"),
                       ("checksums", "index: checksum groups"), ("metadata", "metadata"),
                       ("files", "stored files' entries")):
        if key in header:
            header[key] = _blank(header[key])
            new = _deflated(header, version)
            rows.append((label, size - new))
            size = new
    rows.append(("keys and JSON structure", size))
    return rows


def data_rows(path: Path, model: Path) -> dict[str, dict]:
    """Per coding (`roles.coding` of each tensor's role): tensors, values, section bytes by
    section role."""
    dna = read_dna_file(path)
    infos = {info.name: info for info in load_weights(model).infos}
    out: dict[str, dict] = defaultdict(lambda: {"tensors": 0, "values": 0,
                                                "sections": defaultdict(int)})
    for entry in dna.entries:
        how = coding(infos[entry["name"]])
        row = out[how]
        row["tensors"] += 1
        row["values"] += infos[entry["name"]].numel
        key = entry["representation"]
        if isinstance(entry.get("params"), dict) and "compression" in entry["params"]:
            key += "/" + entry["params"]["compression"]
        for role, (_, length, _) in entry["sections"].items():
            row["sections"][f"{key}:{role}"] += length
    return out


def relative_errors(path: Path, model: Path) -> dict[str, tuple[float, int, int]]:
    """Per coding and role: the largest error of a value relative to itself (non-zero values), how
    many values are off by more than 1e-3 of themselves, of how many."""
    import numpy as np

    dna, weights = read_dna_file(path), load_weights(model)
    out: dict[str, list] = defaultdict(lambda: [0.0, 0, 0])
    for info in weights.infos:
        original = weights.tensor(info.name).double().reshape(-1).numpy()
        restored = dna.tensor(info.name).double().reshape(-1).numpy()
        keep = np.isfinite(original) & (original != 0)
        error = np.abs(restored[keep] - original[keep]) / np.abs(original[keep])
        row = out[f"{coding(info)} ({info.role})"]
        row[0] = max(row[0], float(error.max(initial=0.0)))
        row[1] += int((error > 1e-3).sum())
        row[2] += int(keep.sum())
    return {how: tuple(row) for how, row in out.items()}


def account(name: str, path: Path, model: Path) -> str:
    dna = read_dna_file(path)
    values = sum(info.numel for info in load_weights(model).infos)
    lines = [f"### {name}: {path.name}, version {dna.version}, {dna.file_bytes:,} bytes, "
             f"{len(dna.entries)} tensors, {values:,} values, "
             f"{8 * dna.file_bytes / values:.3f} bits per weight", "",
             "| part | bytes | share of file | bits per value |", "|---|---:|---:|---:|"]

    def line(label: str, size: int, count: int | None = None) -> None:
        per = f"{8 * size / count:.2f}" if count else ""
        lines.append(f"| {label} | {size:,} | {100 * size / dna.file_bytes:.1f}% | {per} |")

    line("prefix", PREFIX.size)
    rows = header_rows(path)
    line("**header (stored)**", sum(b for _, b in rows))
    for label, size in rows:
        line(f"&nbsp;&nbsp;{label}", size)
    for how, row in sorted(data_rows(path, model).items()):
        total = sum(row["sections"].values())
        line(f"**{how}** ({row['tensors']} tensors, {row['values']:,} values)", total,
             row["values"])
        for section, size in sorted(row["sections"].items()):
            line(f"&nbsp;&nbsp;{section}", size, row["values"])
    lines += ["", "| coding (role) | largest error relative to the value | values off by > 1e-3 of "
              "themselves |", "|---|---:|---:|"]
    for how, (worst, over, count) in sorted(relative_errors(path, model).items()):
        lines.append(f"| {how} | {worst:.3g} | {over:,} of {count:,} |")
    return "\n".join(lines)


def brief(name: str, path: Path, model: Path, judged: dict | None) -> str:
    """One line: the file's bytes and bits per weight, its header, each coding's bytes and
    bits per value, the judge's figures."""
    dna = read_dna_file(path)
    values = sum(info.numel for info in load_weights(model).infos)
    parts = [f"{name} {path.name}: v{dna.version} {dna.file_bytes:,} B "
             f"{8 * dna.file_bytes / values:.3f} bpw, header {dna.header_bytes:,} B"]
    for how, row in sorted(data_rows(path, model).items()):
        total = sum(row["sections"].values())
        parts.append(f"{how} {total:,} B {8 * total / max(row['values'], 1):.2f} bpv")
    if judged is not None:
        parts.append(", ".join(f"{k} {v:.4f}" for k, v in judged.items()
                               if isinstance(v, float)))
    return "; ".join(parts)


def judge_file(path: Path, judge: Callable) -> dict:
    from weightdna.codec.compress import decompress_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "restored.safetensors"
        decompress_model(path, out, overwrite=True)
        return judge(load_weights(out).state_dict())


def main(argv: list[str] | None = None) -> int:
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.evaluate import unseen

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ocrcls,silero,ocrrec")
    parser.add_argument("--rates", default="3")
    parser.add_argument("--dna", nargs="*", default=[], help="MODEL=FILE: account FILE")
    parser.add_argument("--keep", type=Path, help="write the compressed files here")
    parser.add_argument("--judge", action="store_true", help="judge each restored file")
    parser.add_argument("--brief", action="store_true", help="one line a file")
    args = parser.parse_args(argv)
    paths = {"ocrcls": unseen.ocr_classifier_path, "ocrrec": unseen.ocr_recognizer_path,
             "silero": unseen.silero_path, "magika": unseen.magika_path,
             "ocr": unseen.ocr_detector_path}
    given: dict[str, list[str]] = defaultdict(list)
    for item in args.dna:
        name, file = item.split("=", 1)
        given[name].append(file)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = paths[name]()
            judge = None
            if args.judge:
                model, judge_of, _ = unseen.judge_for(name)
                judge = lambda state, judge_of=judge_of, model=model: judge_of(model, state)  # noqa: E731
            files = [Path(f) for f in given.get(name, [])]
            for rate in ([] if files else map(float, args.rates.split(","))):
                out = (args.keep or Path(tmp)) / f"{name}-{rate:g}.dna"
                out.parent.mkdir(parents=True, exist_ok=True)
                compress_model(load_weights(model), out, Target("bits_per_weight", rate),
                               objective="layer", overwrite=True)
                files.append(out)
            for path in files:
                judged = judge_file(path, judge) if judge else None
                print(brief(name, path, model, judged) if args.brief
                      else account(name, path, model) + (f"\n\njudge: {judged}" if judged
                                                         else "") + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
