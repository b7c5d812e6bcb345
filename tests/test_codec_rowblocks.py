"""Large tensors as row blocks (`weightdna.codec.rowblocks`): a row-block coding is the
whole tensor's coding byte for byte, and a model with a row-blocked tensor gives the same
file in this process, in 2 workers and resumed after an interruption."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from support import MINILM, requires_minilm

from weightdna.codec import compress, rowblocks
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Candidate, Choice, Target
from weightdna.codec.resume import work_folder
from weightdna.codec.workers import Runner
from weightdna.weights import load_weights, save_weights

EMBEDDINGS = "embeddings.word_embeddings.weight"
TARGET = Target("bits_per_weight", 4.0)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real MiniLM tensors as large models ship them (bfloat16, two shards and their
    index): 1,024 rows of the word embeddings (0.39M weights), layer 0's query and its
    LayerNorms."""
    import torch

    full = load_weights(MINILM)
    keep = {i.name: full.tensor(i.name).to(torch.bfloat16) for i in full.infos
            if i.layer == 0 and ("self.query" in i.name or "attention.output.LayerNorm"
                                 in i.name)}
    keep[EMBEDDINGS] = full.tensor(EMBEDDINGS)[:1024].to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("minilm") / "sharded"
    folder.mkdir()
    names = sorted(keep)
    shards = {"model-00001-of-00002.safetensors": [EMBEDDINGS],
              "model-00002-of-00002.safetensors": [n for n in names if n != EMBEDDINGS]}
    for file, part in shards.items():
        save_weights({n: keep[n] for n in part}, folder / file)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}))
    return folder


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row blocks from 2^18 weights (the embeddings' slice, not the query), tasks of one
    encoder block (682 rows of 384)."""
    monkeypatch.setattr(rowblocks, "ROW_BLOCK_WEIGHTS", 1 << 18)
    monkeypatch.setattr(rowblocks, "TASK_WEIGHTS", 1 << 17)


@requires_minilm
def test_rows_read_alone_are_the_tensors_rows(model: Path) -> None:
    weights = load_weights(model)
    whole = weights.tensor(EMBEDDINGS)
    assert weights.rows(EMBEDDINGS, 100, 700).equal(whole[100:700])
    assert weights.rows(EMBEDDINGS, 1000, 5000).equal(whole[1000:])  # clipped, as slices


@requires_minilm
@pytest.mark.parametrize("quantizer", ["trellis", "scalar"])
def test_a_row_block_coding_is_the_whole_tensors_coding(model: Path, small_blocks: None,
                                                        quantizer: str) -> None:
    weights = load_weights(model)
    info = weights.info(EMBEDDINGS)
    assert len(rowblocks.row_ranges(info)) == 2
    rows = info.shape[0]
    # The trellis at one step; scalar rounding with a deadzone at a step per row.
    step = 0.004 if quantizer == "trellis" else np.linspace(0.003, 0.006, rows)
    candidate = Candidate("quantized", None, None, np.zeros(rows), 0.0)
    choice = Choice(candidate, step, 0.0, 0.0, 0.1 if quantizer == "scalar" else 0.0,
                    quantizer)
    whole = compress._encode_choice(weights.tensor(EMBEDDINGS), EMBEDDINGS, choice)
    coder = compress._Coder(weights)
    [(name, blocked)] = compress._code_round(Runner(weights), coder, [], [(info, choice)],
                                             True, lambda *_: None, 1)
    assert name == EMBEDDINGS and whole[0]["representation"] == "quantized"
    assert blocked[0] == whole[0] and blocked[1] == whole[1]  # entry (figures too), bytes
    measured, share = coder.measured_zeroed(blocked[0])
    assert measured and share == compress._zeroed(weights, name, *whole) > 0


@requires_minilm
def test_row_blocked_model_same_file_in_workers_and_resumed(model: Path, small_blocks: None,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    ran: dict[str, int] = {}
    for name in ("_measure_rows", "_analyse_rows", "_prepare_rows", "_encode_rows"):
        task = getattr(rowblocks, name)

        @functools.wraps(task)
        def counted(*args, _task=task, _name=name):
            ran[_name] = ran.get(_name, 0) + 1
            return _task(*args)

        monkeypatch.setattr(rowblocks, name, counted)
    options = {"representations": ["quantized"]}
    one = tmp_path / "one.dna"
    report = compress_model(load_weights(model), one, TARGET, **options)
    assert ran["_measure_rows"] == ran["_analyse_rows"] == 2  # the embeddings, 2 tasks
    assert ran["_encode_rows"] >= 2
    zeroed = {t.name: t.zeroed for t in report.tensors}
    assert zeroed[EMBEDDINGS] is not None and zeroed[EMBEDDINGS] > 0

    two = tmp_path / "two.dna"
    compress_model(load_weights(model), two, TARGET, workers=2, **options)
    assert digest(two) == digest(one)

    out = tmp_path / "resumed.dna"

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "encoding" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress_model(load_weights(model), out, TARGET, resumable=True, progress=interrupt,
                       **options)
    assert work_folder(out).is_dir() and not out.exists()
    ran.clear()
    compress_model(load_weights(model), out, TARGET, resume=True, **options)
    assert digest(out) == digest(one)
    assert "_measure_rows" not in ran and "_analyse_rows" not in ran  # read back
    assert not work_folder(out).exists()

    back = tmp_path / "back"
    decompress_model(one, f"{back}/")
    restored = load_weights(back)
    assert restored.names == load_weights(model).names
    assert restored.info(EMBEDDINGS).dtype == "bfloat16"
