"""MiniLM's stored files (every file of its folder but the weights and hidden ones), each
coded alone by zstd at levels 10, 19 and 22, and at 22 with btultra2 and a minimum match
of 3, as `weightdna.codec.bundle.stored_entry` codes each file in its own frame (issue 11);
then all of them as `weightdna compress` stores them (`bundle.stored_entries`: from format
version 12 a vocabulary as lines and frames drawn on the files before).

    .venv/bin/python bench/minilm_files_zstd.py
"""

from __future__ import annotations

import time
from pathlib import Path

import zstandard

from weightdna.codec.bundle import stored_entries
from weightdna.weights import minilm_path


def sizes(data: bytes) -> dict[str, int]:
    """The zstd frame's bytes for ``data`` at each setting."""
    row = {f"level {level}": len(zstandard.ZstdCompressor(level=level).compress(data))
           for level in (10, 19, 22)}
    params = zstandard.ZstdCompressionParameters.from_level(
        22, source_size=len(data), window_log=max(10, (len(data) - 1).bit_length()),
        strategy=zstandard.STRATEGY_BTULTRA2, min_match=3)
    row["22 btultra2 mm3"] = len(
        zstandard.ZstdCompressor(compression_params=params).compress(data))
    return row


def main() -> int:
    folder = Path(minilm_path())
    total: dict[str, int] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == "model.safetensors" or path.name[0] == ".":
            continue
        data = path.read_bytes()
        row = sizes(data)
        for key, value in row.items():
            total[key] = total.get(key, 0) + value
        print(path.relative_to(folder).as_posix(), len(data), row)
    print("total", total)
    files = [(path.relative_to(folder).as_posix(), path.read_bytes())
             for path in sorted(folder.rglob("*")) if path.is_file()
             and path.name != "model.safetensors" and path.name[0] != "."]
    start = time.perf_counter()
    coded = stored_entries(files)
    seconds = time.perf_counter() - start
    for entry, frame in coded:
        print(entry["path"], entry["bytes"], len(frame),
              " ".join(key for key in ("vocab", "prefix") if key in entry))
    print(f"stored_entries total {sum(len(f) for _, f in coded)} ({seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
