"""Large tensors as row blocks (`weightdna.codec.rowblocks`): a row-block coding holds the
whole tensor's coding's symbols and figures, each block's symbols coded in its task
(format version 16), and a model with a row-blocked tensor gives the same file in this
process, in 2 workers and resumed after an interruption; a reader refuses a row block's
streams that are cut, moved or miscounted."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

from weightdna.codec import compress, rowblocks, tensor
from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.container import read_dna_file
from weightdna.codec.entries import STATES_VERSION, VERSION
from weightdna.codec.ratecontrol import Candidate, Choice, Target
from weightdna.codec.resume import work_folder
from weightdna.codec.tensor import decode_tensor
from weightdna.codec.workers import Runner
from weightdna.errors import CorruptFileError
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
def test_a_row_block_coding_holds_the_whole_tensors_coding(model: Path, small_blocks: None,
                                                           quantizer: str,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    # A row block's symbols keep the context streams (`tensor.code_symbols`), never the
    # one adaptive coder, so the whole tensor is coded without it here too: the coder's
    # gate now takes this word embedding (coded whole, it comes under the streams).
    monkeypatch.setattr(tensor, "TRELLIS_CODER", False)
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
    entry, sections = blocked[0], dict(blocked[1])
    # The same figures, and the same values decoded; each block's symbols its own streams.
    assert entry["stats"] == whole[0]["stats"]
    assert {k: v for k, v in entry["params"].items() if k != "model"} == \
        {k: v for k, v in whole[0]["params"].items() if k != "model"}
    model_params = entry["params"]["model"]
    assert model_params["kind"] == "blocks"
    assert [b["rows"] for b in model_params["blocks"]] == [b - a for a, b in
                                                          rowblocks.row_ranges(info)]
    inner = {b["model"]["kind"] for b in model_params["blocks"]}
    assert inner == ({"trellis"} if quantizer == "trellis" else inner - {"trellis"})
    decoded = decode_tensor(entry, sections, version=VERSION)
    assert decoded.equal(
        decode_tensor(*whole, version=VERSION))
    # The size cost of coding the two blocks apart: under 1% of the tensor's bytes here
    # (0.39M weights; a real row-blocked tensor's blocks hold 2^23 weights each).
    size, whole_size = sum(map(len, sections.values())), sum(map(len, whole[1].values()))
    assert size < 1.01 * whole_size
    measured, share = coder.measured_zeroed(blocked[0])
    assert measured and share == compress._zeroed(weights, name, *whole) > 0
    # A version-15 reader's file may not hold the blocks model.
    with pytest.raises(CorruptFileError, match="version 16"):
        decode_tensor(entry, sections, version=15)


def _blocked_entry(model: Path) -> tuple[dict, dict[str, bytes]]:
    weights = load_weights(model)
    info = weights.info(EMBEDDINGS)
    candidate = Candidate("quantized", None, None, np.zeros(info.shape[0]), 0.0)
    choice = Choice(candidate, 0.004, 0.0, 0.0, 0.0, "trellis")
    [(_, (entry, sections))] = compress._code_round(Runner(weights), compress._Coder(weights),
                                                    [], [(info, choice)], True,
                                                    lambda *_: None, 1)
    return entry, dict(sections)


@requires_minilm
def test_a_damaged_row_block_stream_is_refused(model: Path, small_blocks: None) -> None:
    import copy

    entry, sections = _blocked_entry(model)
    decode_tensor(entry, sections, version=VERSION)  # the intact one decodes
    blocks = entry["params"]["model"]["blocks"]
    first = blocks[0]["bytes"]

    def refused(change_entry=None, change_sections=None, match: str | None = None) -> None:
        damaged, parts = copy.deepcopy(entry), dict(sections)
        if change_entry:
            change_entry(damaged["params"]["model"]["blocks"])
        if change_sections:
            change_sections(parts)
        with pytest.raises(CorruptFileError, match=match):
            decode_tensor(damaged, parts, version=VERSION)

    # Cut: the symbols section shorter than the blocks' lengths.
    refused(change_sections=lambda p: p.update(symbols=p["symbols"][:-4]), match="add up")
    # Moved: the first block's streams credited to the second (lengths still add up).
    def move(b: list) -> None:
        b[0]["bytes"] -= 4
        b[1]["bytes"] += 4
        b[0]["model"]["streams"][0]["bytes"] -= 4
        b[1]["model"]["streams"][0]["bytes"] += 4
    refused(move)
    # Miscounted rows: one row moved from one block to the other, or one too many.
    def rows(b: list) -> None:
        b[0]["rows"] -= 1
        b[1]["rows"] += 1
    refused(rows)
    refused(lambda b: b[1].update(rows=b[1]["rows"] + 1), match="rows")
    refused(lambda b: b[0].update(rows=0), match="rows")
    refused(lambda b: b.pop(), match="rows")
    # A block's lengths that are not its streams'.
    refused(lambda b: b[0].update(bytes=first + 4), match="streams")
    # The blocks' words swapped: each block decodes another's bytes.
    half = sections["symbols"]
    refused(change_sections=lambda p: p.update(symbols=half[first:] + half[:first]))
    # Blocks of two kinds.
    refused(lambda b: b[1].update(model={"kind": "laplace", "min": -8, "max": 8,
                                         "mean": 0.0, "scale": 1.0},
                                  histogram=0))
    # An unknown key.
    refused(lambda b: b[0].update(extra=1), match="keys")


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
    dna = read_dna_file(one)  # each row block's symbols coded in its task
    assert dna.version == STATES_VERSION  # the blocks model, a trellis of more states
    assert len(dna.entries[dna.index(EMBEDDINGS)]["params"]["model"]["blocks"]) == 2
    if importlib.util.find_spec("ray") is not None:
        on_ray = tmp_path / "ray.dna"
        compress_model(load_weights(model), on_ray, TARGET, workers=2, ray=True, **options)
        assert digest(on_ray) == digest(one)

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
    # Each row block decodes alone to its rows; in 2 workers a block a task, the same file.
    whole = dna.tensor(EMBEDDINGS)
    blocks = [dna.tensor(EMBEDDINGS, block=k) for k in range(2)]
    assert blocks[0].shape[0] + blocks[1].shape[0] == whole.shape[0]
    assert torch.cat(blocks).equal(whole)
    with pytest.raises(CorruptFileError, match="no row block"):
        dna.tensor(EMBEDDINGS, block=2)
    single, parallel = tmp_path / "single.safetensors", tmp_path / "parallel.safetensors"
    decompress_model(one, single)
    decompress_model(one, parallel, workers=2)
    assert digest(parallel) == digest(single)


def test_a_row_block_decodes_alone_with_its_non_finite_values() -> None:
    """A bfloat16 tensor with NaN and ±inf in several row blocks, coded a block at a time
    as the tasks code it: each block decodes alone to the whole decoding's rows."""
    from weightdna.weights import TensorInfo

    g = torch.Generator().manual_seed(6)
    w = (torch.randn(48, 24, generator=g) * 0.05).to(torch.bfloat16)
    w[5, 3], w[17, 0], w[47, 23] = float("nan"), float("inf"), -float("inf")
    bounds = [(0, 16), (16, 20), (20, 48)]
    parts = [rowblocks.encode_rows(w[a:b], a, 0.01, 0.0, None, None) for a, b in bounds]
    info = TensorInfo("w", (48, 24), "bfloat16", "other", None, "w")
    (entry, sections), _ = rowblocks.coded(info, 0.01, None, None, parts)
    whole = decode_tensor(entry, sections, version=VERSION)
    assert entry["params"]["nonfinite"] == 3
    assert whole.isnan()[5, 3] and whole[17, 0] == float("inf")
    for k, (a, b) in enumerate(bounds):
        rows = decode_tensor(entry, sections, version=VERSION, block=k)
        assert rows.view(torch.int16).equal(whole[a:b].view(torch.int16))
