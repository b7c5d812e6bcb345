"""Per-column factors of a ``quantized`` tensor (format version 9): the decoder multiplies
column j by c_j; files without them are written as version 8, byte for byte as before; the
factors' params and section are checked like every other field; `compress_model`'s
``column_factors`` and a BERT model's (`weightdna.evaluate.columns`)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MINILM, requires_minilm

from weightdna.codec import read_dna_file, write_dna_file
from weightdna.codec.compress import compress_model
from weightdna.codec.container import PREFIX, header_block, header_dictionary
from weightdna.codec.entries import COLUMNS_VERSION, VERSION, file_version
from weightdna.codec.ratecontrol import Target
from weightdna.codec.tensor import decode_tensor, encode_tensor, with_columns
from weightdna.codec.zstdframes import compress_bytes
from weightdna.errors import CorruptFileError, InvalidInputError
from weightdna.weights import ModelWeights

STEP = 0.25


def _matrix(rows: int = 12, columns: int = 7, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = torch.tensor(rng.normal(size=(rows, columns)), dtype=torch.float32)
    factors = np.exp2(rng.integers(-8, 9, columns) / 4).astype(np.float32)
    return values, factors


def _coded(values: torch.Tensor, factors: np.ndarray) -> tuple[dict, dict[str, bytes]]:
    return with_columns(encode_tensor(values, name="w", step=STEP), factors)


def test_each_column_is_multiplied_by_its_factor() -> None:
    values, factors = _matrix()
    entry, sections = _coded(values, factors)
    assert entry["params"]["columns"] == 7 and set(sections) == {"symbols", "columns"}
    symbols = np.rint(values.numpy().astype(np.float64) / STEP)
    wanted = torch.from_numpy((symbols * STEP * factors.astype(np.float64)).astype(np.float32))
    assert torch.equal(decode_tensor(entry, sections), wanted)
    plain = decode_tensor(*encode_tensor(values, name="w", step=STEP))
    assert not torch.equal(decode_tensor(entry, sections), plain)


def test_trellis_coded_columns_decode_through_the_factors() -> None:
    values, factors = _matrix(64, 48)
    coded = encode_tensor(values, name="w", bits=3, quantizer="trellis")
    plain = decode_tensor(*coded).double()
    restored = decode_tensor(*with_columns(coded, factors)).double()
    wanted = plain * torch.from_numpy(factors.astype(np.float64))
    assert torch.allclose(restored, wanted, rtol=2e-7, atol=0)


@pytest.mark.parametrize("change", ["count+1", "count0", "count-str", "count-float",
                                    "no-section", "section-short", "nan", "inf", "zero",
                                    "negative", "huge", "tiny", "version8"])
def test_hostile_column_factors_are_refused(change: str) -> None:
    values, factors = _matrix()
    entry, sections = _coded(values, factors)
    params = entry["params"]
    bad = factors.copy()
    version = VERSION
    if change.startswith("count"):
        params["columns"] = {"count+1": 8, "count0": 0, "count-str": "7",
                             "count-float": 7.0}[change]
    elif change == "no-section":
        del sections["columns"]
    elif change == "section-short":
        sections["columns"] = compress_bytes(factors[:-1].tobytes())
    elif change == "version8":
        version = 8
    else:
        bad[3] = {"nan": np.nan, "inf": np.inf, "zero": 0.0, "negative": -1.0,
                  "huge": 2.0**17, "tiny": 2.0**-17}[change]
        sections["columns"] = compress_bytes(bad.astype("<f4").tobytes())
    with pytest.raises(CorruptFileError):
        decode_tensor(entry, sections, version=version)


def test_factors_belong_to_a_quantized_matrix_only() -> None:
    values, factors = _matrix()
    # a section without its param
    entry, sections = encode_tensor(values, name="w", step=STEP)
    with pytest.raises(CorruptFileError, match="sections"):
        decode_tensor(entry, {**sections, "columns": compress_bytes(factors.tobytes())})
    # a 1-d tensor
    entry, sections = encode_tensor(values[0], name="v", step=STEP)
    entry["params"]["columns"] = 1
    with pytest.raises(CorruptFileError, match="columns"):
        decode_tensor(entry, {**sections, "columns": compress_bytes(factors[:1].tobytes())})
    # inside a transform's coefficients (not a quantized entry's own params)
    entry, sections = encode_tensor(values, name="w", bits=4, transform="dct")
    entry["params"]["coefficients"]["columns"] = 7
    with pytest.raises(CorruptFileError, match="columns|per-column"):
        decode_tensor(entry, {**sections, "columns": compress_bytes(factors.tobytes())})
    # the writer's side
    with pytest.raises(InvalidInputError):
        with_columns(encode_tensor(values, name="w", lossless=True), factors)
    with pytest.raises(InvalidInputError):
        with_columns(encode_tensor(values, name="w", step=STEP), factors[:-1])
    with pytest.raises(InvalidInputError):
        with_columns(encode_tensor(values, name="w", step=STEP), factors * 2.0**20)


def _rewrite_version(path: Path, version: int) -> Path:
    raw = path.read_bytes()
    _, _, stored, _, _ = PREFIX.unpack(raw[:PREFIX.size])
    text = zlib.decompressobj(zdict=header_dictionary()).decompress(
        raw[PREFIX.size:PREFIX.size + stored])
    json.loads(text)
    out = path.with_name(f"v{version}.dna")
    out.write_bytes(header_block(text, version) + raw[PREFIX.size + stored:])
    return out


def test_files_are_version_9_only_with_factors(tmp_path: Path) -> None:
    values, factors = _matrix()
    with_factors, plain = _coded(values, factors), encode_tensor(values, name="w", step=STEP)
    assert file_version([with_factors[0]]) == COLUMNS_VERSION == 9
    assert file_version([plain[0]]) == 8
    write_dna_file(tmp_path / "c.dna", [with_factors[0]], [with_factors[1]])
    write_dna_file(tmp_path / "p.dna", [plain[0]], [plain[1]])
    dna = read_dna_file(tmp_path / "c.dna")
    assert dna.version == 9
    assert torch.equal(dna.tensor("w"), decode_tensor(*with_factors))
    assert read_dna_file(tmp_path / "p.dna").version == 8
    # a version-8 file that holds them is refused; a version-9 file without them reads
    with pytest.raises(CorruptFileError, match="version 9"):
        read_dna_file(_rewrite_version(tmp_path / "c.dna", 8)).tensor("w")
    assert torch.equal(read_dna_file(_rewrite_version(tmp_path / "p.dna", 9)).tensor("w"),
                       decode_tensor(*plain))


def _small() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"lin.weight": torch.randn(48, 64, generator=generator),
            "lin.bias": torch.randn(48, generator=generator) * 0.1,
            "out.weight": torch.randn(16, 48, generator=generator)}


def test_compress_model_codes_the_divided_tensor_and_stores_the_factors(tmp_path: Path
                                                                      ) -> None:
    tensors = _small()
    weights = ModelWeights.from_tensors(tensors)
    factors = {"lin.weight": np.exp2(np.linspace(-2, 2, 64)).astype(np.float32)}
    target = Target("bits_per_weight", 3.0)
    report = compress_model(weights, tmp_path / "c.dna", target, column_factors=factors)
    compress_model(weights, tmp_path / "p.dna", target)
    assert report.bits_per_weight <= 3.0
    dna, before = read_dna_file(tmp_path / "c.dna"), read_dna_file(tmp_path / "p.dna")
    assert (dna.version, before.version) == (9, 8)
    entry = dna.entries[dna.index("lin.weight")]
    assert entry["params"]["columns"] == 64
    assert "columns" not in dna.entries[dna.index("out.weight")]["params"]
    restored = dna.tensor("lin.weight")
    # columns with larger factors were coded smaller: their error is larger
    error = (restored - tensors["lin.weight"]).pow(2).mean(0)
    assert error[48:].mean() > 4 * error[:16].mean()
    plain_error = (before.tensor("lin.weight") - tensors["lin.weight"]).pow(2).mean(0)
    assert plain_error[48:].mean() < 2 * plain_error[:16].mean()


@pytest.mark.parametrize("bad", ["bias", "length", "nan", "zero", "name", "target"])
def test_compress_model_refuses_bad_column_factors(tmp_path: Path, bad: str) -> None:
    weights = ModelWeights.from_tensors(_small())
    factors = {"lin.weight": np.ones(64)}
    target = Target("bits_per_weight", 3.0)
    if bad == "bias":
        factors = {"lin.bias": np.ones(1)}
    elif bad == "length":
        factors = {"lin.weight": np.ones(63)}
    elif bad in ("nan", "zero"):
        factors["lin.weight"][5] = np.nan if bad == "nan" else 0.0
    elif bad == "name":
        factors = {"absent.weight": np.ones(64)}
    else:
        target = Target("max_abs_error", 0.01)
    with pytest.raises(InvalidInputError):
        compress_model(weights, tmp_path / "x.dna", target, column_factors=factors)


@requires_minilm
def test_the_factors_follow_the_inputs_second_moments() -> None:
    from weightdna.evaluate.columns import (
        COLUMN_ALPHA,
        bert_column_factors,
        input_second_moments,
    )

    moments = input_second_moments(MINILM)
    factors = bert_column_factors(MINILM)
    name = "encoder.layer.0.intermediate.dense.weight"
    name = next(n for n in factors if n.endswith(name))
    h, c = moments[name], factors[name]
    # larger inputs, smaller factors (their columns coded finer), by (h/mean)^(-α/2)
    assert np.corrcoef(np.log2(h), np.log2(c))[0, 1] < -0.9
    assert np.abs(np.log2(c) + COLUMN_ALPHA / 2 * np.log2(np.maximum(h, 1e-3 * h.mean())
                                                           / h.mean())).max() <= 1 / 8 + 1e-9


def test_the_factors_count_against_the_memory_limit() -> None:
    from weightdna.codec.entries import decode_memory

    values, factors = _matrix()
    entry, sections = _coded(values, factors)
    need = decode_memory("quantized", "float32", [12, 7]) + 12 * 7
    assert torch.equal(decode_tensor(entry, sections, max_memory=need),
                       decode_tensor(entry, sections))
    with pytest.raises(CorruptFileError, match="memory limit"):
        decode_tensor(entry, sections, max_memory=need - 1)


def test_a_resume_finishes_the_same_file_and_knows_the_factors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from weightdna.weights import load_weights

    source = tmp_path / "small.safetensors"
    save_file(_small(), str(source))
    factors = {"lin.weight": np.exp2(np.linspace(-2, 2, 64))}
    target = Target("bits_per_weight", 3.0)
    whole = tmp_path / "whole.dna"
    compress_model(load_weights(source), whole, target, column_factors=factors)

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "encoding" and done == 1:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.dna"
    for _ in range(2):  # the second time to resume with other factors
        with pytest.raises(KeyboardInterrupt):
            compress_model(load_weights(source), out, target, column_factors=factors,
                           resumable=True, progress=interrupt)
        other = {"lin.weight": factors["lin.weight"][::-1].copy()}
        with pytest.raises(InvalidInputError, match="other settings"):
            compress_model(load_weights(source), out, target, column_factors=other,
                           resume=True)
    compress_model(load_weights(source), out, target, column_factors=factors, resume=True)
    assert out.read_bytes() == whole.read_bytes()
    assert read_dna_file(out).version == 9


def test_workers_read_the_divided_tensors_and_write_the_same_bytes(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """With factors a model is still coded by the worker processes (each reads its tensors
    from the source file and divides them by the factors the driver wrote beside), into the
    bytes of one process; the factors' file is gone afterwards."""
    import multiprocessing
    import tempfile

    from safetensors.torch import save_file

    from weightdna.codec import workers as workers_module
    from weightdna.weights import load_weights

    source = tmp_path / "small.safetensors"
    save_file(_small(), str(source))
    factors = {"lin.weight": np.exp2(np.linspace(-2, 2, 64))}
    target = Target("bits_per_weight", 3.0)
    one, two = tmp_path / "one.dna", tmp_path / "two.dna"
    compress_model(load_weights(source), one, target, column_factors=factors)
    # A short folder: the fork server's socket may be made in it (multiprocessing's own
    # temp folder, made in the temp folder of the moment), and under pytest-xdist's tmp_path
    # (…/popen-gw1/test_workers_read_the_divided_0/scratch/pymp-…/listener-…) its path
    # passed AF_UNIX's 107 bytes where no fork server ran yet in that process. The process's
    # multiprocessing folder is put back as it was afterwards; this one is left in place
    # (a fork server started here keeps its socket in it for the rest of the process).
    scratch = Path(tempfile.mkdtemp(prefix="wdna-"))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setitem(multiprocessing.current_process()._config, "tempdir", None)
    runners = []
    made = workers_module.make_runner

    def spy(*args, **kwargs):
        runner = made(*args, **kwargs)
        runners.append(runner)
        return runner

    def started(self) -> bool:  # every task to a worker: none run here while they start
        self._starting.join()
        for future in self._warming or []:
            future.result()
        self._warming = None
        return True

    monkeypatch.setattr("weightdna.codec.compress.make_runner", spy)
    monkeypatch.setattr(workers_module.PoolRunner, "_ready", started)
    compress_model(load_weights(source), two, target, column_factors=factors, workers=2)
    assert isinstance(runners[0], workers_module.PoolRunner)
    assert runners[0].source[2] is not None  # the workers were given the factors
    assert two.read_bytes() == one.read_bytes()
    # (multiprocessing's own folder, its fork server's socket, lives as long as the process)
    assert not [p for p in scratch.iterdir() if not p.name.startswith("pymp-")]


@requires_minilm
def test_the_command_line_codes_a_bert_with_column_factors(tmp_path: Path, capsys) -> None:
    """`compress --columns synthetic` (and the API's ``columns``): a BERT folder's linear
    weights carry factors (version 9) that decompress back; a model that is no BERT is
    refused with what to do."""
    pytest.importorskip("transformers")
    from support import tiny_bert_folder

    from weightdna.cli import main

    folder = tiny_bert_folder(tmp_path / "tiny")
    out = tmp_path / "tiny.dna"
    assert main(["compress", str(folder), "-o", str(out), "--bits-per-weight", "3",
                 "--columns", "synthetic", "--sensitivity", "none", "--check", "none",
                 "--json"]) == 0
    dna = read_dna_file(out)
    with_factors = [e["name"] for e in dna.entries if "columns" in e["params"]]
    assert dna.version >= 9 and len(with_factors) >= 6, with_factors  # 12: its stored files
    assert all(name.endswith(".weight") and "encoder.layer." in name for name in with_factors)
    assert main(["decompress", str(out), "-o", str(tmp_path / "back") + "/"]) == 0
    capsys.readouterr()
    import weightdna  # the Python API takes the same option

    weightdna.compress(folder, tmp_path / "api.dna", bits_per_weight=3, sensitivity="none",
                       columns="synthetic")
    assert (tmp_path / "api.dna").read_bytes() == out.read_bytes()
    with pytest.raises(InvalidInputError, match="unknown columns"):
        weightdna.compress(folder, tmp_path / "x.dna", bits_per_weight=3, columns="auto")

    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.ones(8, 8)}, str(plain))
    assert main(["compress", str(plain), "-o", str(tmp_path / "p.dna"), "--bits-per-weight",
                 "3", "--columns", "synthetic"]) == 1
    assert "--columns synthetic needs a BERT model" in capsys.readouterr().err
    # Asked for where they do not apply: a clear error, no traceback, no file written.
    refused = tmp_path / "refused.dna"
    assert main(["compress", str(folder), "-o", str(refused), "--snr", "20", "--per-tensor",
                 "--columns", "synthetic"]) == 1
    err = capsys.readouterr().err
    assert "applies to whole-model" in err and "Traceback" not in err
    assert not refused.exists()
    # By default they follow the data-free default, and stay off where they do not apply.
    from weightdna.codec.ratecontrol import Target
    from weightdna.evaluate.columns import columns_mode
    from weightdna.weights import load_weights

    names = list(load_weights(folder).names)
    whole, alone = Target("bits_per_weight", 3.0), Target("snr", 20.0, per_tensor=True)
    assert columns_mode(None, "synthetic", folder, names, whole) == "synthetic"
    assert columns_mode(None, "none", folder, names, whole) == "none"
    assert columns_mode(None, "synthetic", folder, names, alone) == "none"
    assert columns_mode(None, "synthetic", folder, names, whole, ray=True) == "none"
    assert columns_mode(None, "synthetic", folder, names, whole, calibration="auto") == "none"
    assert columns_mode("none", "synthetic", folder, names, whole) == "none"


@pytest.mark.parametrize("rate", [1.0, 3.0])
def test_a_tensor_with_factors_is_planned_as_what_is_stored(tmp_path: Path, rate: float
                                                            ) -> None:
    """A nearly rank-2 matrix is coded low-rank + residual without factors. With them the
    rate control once planned that too, and the tensor was then stored exactly (factors
    apply to ``quantized`` codings only): 26.7 bits per weight it had not counted, which
    the size correction took from everything else (measured: 0.24 bits per weight written
    for a target of 1, SNR 0.2 dB; 0.22 for 3). Now it plans it as quantized only."""
    generator = torch.Generator().manual_seed(0)
    low = torch.randn(256, 2, generator=generator) @ torch.randn(2, 256, generator=generator)
    tensors = {"low.weight": low + 0.01 * torch.randn(256, 256, generator=generator),
               "lin.weight": torch.randn(256, 256, generator=generator),
               "lin.bias": torch.randn(256, generator=generator) * 0.1}
    weights = ModelWeights.from_tensors(tensors)
    factors = {name: np.exp2(np.linspace(-2, 2, 256)).astype(np.float32)
               for name in ("low.weight", "lin.weight")}
    target = Target("bits_per_weight", rate)
    compress_model(weights, tmp_path / "p.dna", target)
    plain = read_dna_file(tmp_path / "p.dna")
    assert plain.version != COLUMNS_VERSION  # 8, or 11 with per-row steps on a grid
    assert not any("columns" in e["params"] for e in plain.entries)
    assert plain.entries[plain.index("low.weight")]["representation"] == "lowrank+residual"
    report = compress_model(weights, tmp_path / "c.dna", target, column_factors=factors)
    assert 0.95 * rate <= report.bits_per_weight <= rate, report.bits_per_weight
    dna = read_dna_file(tmp_path / "c.dna")
    for name in factors:
        entry = dna.entries[dna.index(name)]
        assert entry["representation"] == "quantized" and entry["params"]["columns"] == 256
