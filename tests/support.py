"""What several test files share: where the real MiniLM model is, and a skip marker for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightdna.errors import MissingDependencyError
from weightdna.weights import minilm_path


def _minilm_folder() -> Path | None:
    try:
        return minilm_path()
    except MissingDependencyError:
        return None


MINILM = _minilm_folder()
requires_minilm = pytest.mark.skipif(MINILM is None, reason="all-MiniLM-L6-v2 is not installed")
