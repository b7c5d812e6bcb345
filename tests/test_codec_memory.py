"""What compress holds at once: a tensor's symbols in narrow pieces, never in int32 whole nor
copied into streams; the same bytes whatever the block size; the rate control's samples
dropped while a round's steps are coded, and taken again exactly; a tensor read as float64
without its stored copy whole beside it."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import weightdna.codec.compress as compress
import weightdna.codec.ratecontrol as ratecontrol
import weightdna.codec.tensor as codec_tensor
from weightdna.codec import trellis
from weightdna.codec.entropy import MODEL_KINDS, encode_streams, encode_symbols
from weightdna.codec.prediction import lowrank_prediction
from weightdna.codec.ratecontrol import Target, tensor_candidates
from weightdna.codec.tensor import decode_tensor, encode_tensor
from weightdna.weights import ModelWeights, load_weights, safetensors_format, save_weights


def low_rank_tensor(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, 3, generator=g) @ torch.randn(3, columns, generator=g)
    t += 0.05 * torch.randn(rows, columns, generator=g)
    t[rows // 2:] *= 8  # later rows' symbols outgrow int8
    t[1, 2], t[rows - 1, columns - 1] = math.nan, math.inf
    return t


@pytest.mark.parametrize("kind", [*MODEL_KINDS, "auto"])
def test_symbols_in_pieces_code_as_one_array(kind: str) -> None:
    rng = np.random.default_rng(0)
    symbols = np.rint(rng.laplace(0, 30, size=20_000)).astype(np.int32)
    whole = encode_symbols(symbols, kind)
    cuts = [0, 1, 700, 701, 9000, 20_000]
    pieces = [symbols[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    pieces = [p.astype(np.int16) if i % 2 else p for i, p in enumerate(pieces)]
    assert encode_symbols(pieces, kind) == whole
    small = np.clip(symbols, -100, 100)
    assert encode_symbols([small[:5000].astype(np.int8), small[5000:]], kind) == \
        encode_symbols(small, kind)
    assert encode_streams([[symbols[:10], symbols[10:]], [small]]) == \
        encode_streams([symbols, small])


@pytest.mark.parametrize("request_", [{"step": 0.05, "quantizer": "trellis"},
                                      {"step": 0.05}, {"step": 0.02, "deadzone": 0.2},
                                      {"bits": 6}, {"max_abs_error": 0.03}],
                         ids=["trellis", "scalar", "deadzone", "bits", "max-abs-error"])
@pytest.mark.parametrize("predicted", [False, True], ids=["plain", "lowrank"])
def test_the_coded_bytes_do_not_depend_on_the_block_size(monkeypatch, request_: dict,
                                                         predicted: bool) -> None:
    """Symbols kept block by block (widened from int8 when a block needs more), streams
    split block by block, a low-rank prediction computed block by block: the file is the
    one whole-tensor coding gives."""
    t = low_rank_tensor(97, 40)
    prediction = None
    if predicted:
        values = t.double().numpy()
        values[~np.isfinite(values)] = 0
        prediction = lowrank_prediction(values, 3)
    whole = encode_tensor(t, prediction=prediction, **request_)
    monkeypatch.setattr(codec_tensor, "BLOCK_ELEMENTS", 90)  # 2 rows a block: many blocks
    blocks = encode_tensor(t, prediction=prediction, **request_)
    assert blocks[1] == whole[1]
    stats = blocks[0].pop("stats"), whole[0].pop("stats")  # sums taken block by block
    assert blocks[0] == whole[0]
    for key in stats[0]:
        assert stats[0][key] == pytest.approx(stats[1][key], rel=1e-9)
    blocks[0]["stats"] = stats[0]
    restored = decode_tensor(*blocks)
    finite = torch.isfinite(t)
    assert torch.equal(restored[~finite].isnan(), t[~finite].isnan())
    error = (restored[finite].double() - t[finite].double()).abs().max()
    assert float(error) == pytest.approx(blocks[0]["stats"]["max_abs_error"], rel=1e-3)


@pytest.mark.parametrize("quantizer", ["trellis", "scalar"])
def test_a_large_tensor_is_coded_without_int32_copies(monkeypatch, quantizer: str) -> None:
    """The NumPy memory coding takes beside the tensor is its symbols in int8 (1 byte a
    weight) and a few blocks' temporaries: no int32 symbols of the whole (4 bytes a weight),
    no second copy of them as context streams, no float64 prediction of the whole."""
    monkeypatch.setattr(codec_tensor, "BLOCK_ELEMENTS", 1 << 13)
    monkeypatch.setattr(trellis, "SAMPLE_ELEMENTS", 1 << 13)  # the rates' learning sample
    # The one coder's gate (format 17) on, as by default: its sample rows kept as they are
    # coded, the streams' histograms and any walk back into element order taken from
    # their pieces, a block at a time (once 15.0 MB here, from a copy of the streams and
    # every walked block kept alive by its sampled rows).
    assert codec_tensor.TRELLIS_CODER is True
    monkeypatch.setattr(codec_tensor, "CODER_FLOOR_SLACK", 1.0)  # weighed on its sample
    weighed = []
    sample_wins = codec_tensor._sample_wins
    monkeypatch.setattr(codec_tensor, "_sample_wins",
                        lambda *args: weighed.append(1) or sample_wins(*args))
    rows, columns = 2048, 1024
    g = torch.Generator().manual_seed(0)
    t = 0.02 * torch.randn(rows, columns, generator=g)  # at step 0.1: few coded bytes
    values = t.double().numpy()
    prediction = lowrank_prediction(values, 4)
    del values
    numel = rows * columns
    # The kernels compiled or loaded first (numba's own allocations are no coding's), on a
    # tensor that the coder's gate also weighs on a sample: this test alone passes too.
    small = t[:128]
    encode_tensor(small, step=0.1, quantizer=quantizer,
                  prediction=lowrank_prediction(small.double().numpy(), 4))
    weighed.clear()
    tracemalloc.start()
    try:
        entry, _ = encode_tensor(t, step=0.1, quantizer=quantizer, prediction=prediction)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entry["representation"] == "lowrank+residual"
    assert peak < 2 * numel  # int32 symbols alone would be 4 × numel
    assert weighed == ([1] if quantizer == "trellis" else [])  # the gate's sample was weighed


def test_dropped_samples_are_taken_again_exactly(monkeypatch) -> None:
    monkeypatch.setattr(ratecontrol, "SAMPLE_ELEMENTS", 1000)  # a sampling stride above 1
    tensors = {"w.weight": low_rank_tensor(120, 40), "h.weight": low_rank_tensor(96, 48).half()}
    weights = ModelWeights.from_tensors(tensors)
    for name in tensors:
        tc = tensor_candidates(weights.info(name), weights.numpy(name), ("quantized", "lowrank"))
        assert [c.name for c in tc.candidates] == ["quantized", "lowrank+residual"]
        first = [c.sample for c in tc.candidates]
        ratecontrol.drop_samples([tc])
        assert tc.candidates[0].sample is None  # plain quantisation's
        assert tc.candidates[1].sample is first[1]  # a prediction's is kept
        ratecontrol.resample(tc, weights.tensor(name))  # from the tensor, not float64 values
        for sample, candidate in zip(first, tc.candidates, strict=True):
            assert candidate.sample.dtype == np.float32
            assert np.array_equal(candidate.sample, sample)


def test_samples_are_not_held_while_a_round_is_coded(tmp_path: Path, monkeypatch) -> None:
    g = torch.Generator().manual_seed(3)
    tensors = {f"layers.{i}.weight": torch.randn(96, 80, generator=g) * (i + 1)
               for i in range(4)}
    model = save_weights(tensors, tmp_path / "m.safetensors")
    held: list[ratecontrol.TensorCandidates] = []
    rounds = []

    def solve(coded, *args, **kwargs):  # noqa: ANN001, ANN202
        held[:] = coded
        assert all(c.sample is not None for tc in coded for c in tc.candidates)
        rounds.append(1)
        return ratecontrol.solve_on_curves(coded, *args, **kwargs)

    def encode(*args, **kwargs):  # noqa: ANN202
        assert all(c.sample is None for tc in held for c in tc.candidates
                   if c.prediction is None)
        return original(*args, **kwargs)

    original = compress._encode_choice
    monkeypatch.setattr(compress, "solve_on_curves", solve)
    monkeypatch.setattr(compress, "_encode_choice", encode)
    report = compress.compress_model(load_weights(model), tmp_path / "m.dna",
                                     Target("bits_per_weight", 2.0),
                                     representations=("quantized", "lowrank"))
    assert len(rounds) >= 2  # a round after the first took the samples again
    assert report.bits_per_weight <= 2.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_float64_is_read_a_chunk_at_a_time(tmp_path: Path, monkeypatch,
                                           dtype: torch.dtype) -> None:
    """`ModelWeights.numpy` of a safetensors tensor converts as it reads (chunks of a few
    elements here, the last one ragged): the values `.to(float64)` of the whole give."""
    monkeypatch.setattr(safetensors_format, "CONVERT_CHUNK_BYTES", 40)
    t = (torch.randn(37, 11) * 100).to(dtype)
    if dtype.is_floating_point:
        t[0, 0], t[5, 7] = math.nan, -math.inf
    weights = load_weights(save_weights({"w": t}, tmp_path / "m.safetensors"))
    values = weights.numpy("w")
    assert values.dtype == np.float64 and values.shape == (37, 11)
    np.testing.assert_array_equal(values, t.to(torch.float64).numpy())
    torch.testing.assert_close(weights.tensor("w"), t, rtol=0, atol=0, equal_nan=True)



def _bytes_reachable(root: object) -> int:
    """Bytes of the bytes objects and arrays reachable from ``root`` (each counted once)
    through containers and the package's objects (not modules, functions or the model)."""
    import gc

    seen, total, todo = {id(root)}, 0, list(gc.get_referents(root))
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, ModelWeights):
            continue
        seen.add(id(obj))
        if isinstance(obj, bytes | bytearray):
            total += len(obj)
        elif isinstance(obj, np.ndarray):
            total += obj.nbytes if obj.base is None else 0
        elif isinstance(obj, dict | list | tuple | set | frozenset) or \
                type(obj).__module__.startswith("weightdna."):
            todo.extend(gc.get_referents(obj))
    return total


def test_the_driver_does_not_hold_the_coded_sections(tmp_path: Path, monkeypatch) -> None:
    """The coded sections and the rate control's samples wait in a spill file beside the
    output, not in memory: while the step is solved the candidates hold a small share of
    their samples' bytes; when the file is written (every tensor coded) the coder holds a
    small share of the sections' bytes, the file is copied from the spill a block at a
    time, and it is the file written from the same sections held in memory; the spill
    leaves nothing behind."""
    from weightdna.codec import container, spill

    g = torch.Generator().manual_seed(5)
    tensors = {f"layers.{i}.weight": torch.randn(128, 96, generator=g) * (1 + i % 5)
               for i in range(16)}
    model = save_weights(tensors, tmp_path / "m.safetensors")
    coders, seen, reads = [], {}, []

    class Coder(compress._Coder):
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            coders.append(self)

    def write(path, entries, sections, **kwargs):  # noqa: ANN001, ANN202
        seen["held"] = _bytes_reachable(coders[0])
        monkeypatch.setattr(spill.Spill, "read", read)
        size = original(path, entries, sections, **kwargs)
        monkeypatch.setattr(spill.Spill, "read", plain_read)
        seen["plain"] = original(tmp_path / "plain.dna", entries,
                                 [{k: bytes(v) for k, v in s.items()} for s in sections],
                                 **kwargs)
        return size

    def read(self, offset: int, length: int) -> bytes:  # noqa: ANN001
        reads.append(length)
        return plain_read(self, offset, length)

    def solve(coded, *args, **kwargs):  # noqa: ANN001, ANN202
        seen["samples"] = sum(np.asarray(c.sample).nbytes for tc in coded
                              for c in tc.candidates if c.sample is not None)
        seen["candidates"] = _bytes_reachable(list(coded))
        return ratecontrol.solve_on_curves(coded, *args, **kwargs)

    original, plain_read = container.write_dna_file, spill.Spill.read
    monkeypatch.setattr(compress, "solve_on_curves", solve)
    monkeypatch.setattr(compress, "_Coder", Coder)
    monkeypatch.setattr(compress, "write_dna_file", write)
    monkeypatch.setattr(spill.Spill, "COPY_BLOCK", 1 << 12)
    report = compress.compress_model(load_weights(model), tmp_path / "m.dna",
                                     Target("bits_per_weight", 8.0),
                                     representations=("quantized",))
    coded = sum(t.bytes for t in report.tensors)
    assert coded > 150_000 and len(coders) == 1
    assert seen["held"] < coded / 20, (seen, coded)
    assert seen["candidates"] < seen["samples"] / 10, seen
    assert reads and max(reads) <= 1 << 12 and sum(reads) == coded
    assert seen["plain"] == report.file_bytes
    assert (tmp_path / "m.dna").read_bytes() == (tmp_path / "plain.dna").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dna", "m.safetensors",
                                                          "plain.dna"]
