"""The Python API (`weightdna.compress`, `decompress`, `load_file`, `safe_open`): the
examples of docs/api.md run as written; `load_file` gives what `decompress` writes, and its
peak memory is the model plus one tensor's decoding; `safe_open` decodes only what is
asked for; `import weightdna` stays light."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file as load_safetensors

import weightdna
import weightdna.codec.container as container
from weightdna.codec.ratecontrol import Target
from weightdna.errors import InvalidInputError
from weightdna.weights import ModelWeights

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_examples_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                              raise_on_error=False, verbose=False)
    assert result.attempted >= 15 and result.failed == 0


def test_import_weightdna_stays_light() -> None:
    script = ("import sys, weightdna; assert callable(weightdna.safe_open); "
              "print(sorted(m for m in ('torch', 'numpy', 'weightdna.codec.container') "
              "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("api")
    generator = torch.Generator().manual_seed(1)
    tensors = {"encoder.layer.0.weight": torch.randn(96, 64, generator=generator),
               "encoder.layer.0.bias": torch.randn(96, generator=generator).half(),
               "encoder.layer.1.weight": torch.randn(64, 96, generator=generator).bfloat16(),
               "position_ids": torch.arange(7)}
    from weightdna.codec.compress import compress_model

    path = folder / "m.dna"
    compress_model(ModelWeights.from_tensors(tensors), path, Target("snr", 25.0))
    return path, tensors


def test_load_file_is_what_decompress_writes(coded, tmp_path: Path) -> None:
    path, tensors = coded
    loaded = weightdna.load_file(path)
    written = load_safetensors(weightdna.decompress(path, tmp_path / "r.safetensors"))
    assert sorted(loaded) == sorted(written) == sorted(tensors)
    for name, tensor in loaded.items():
        assert tensor.dtype == tensors[name].dtype and tensor.shape == tensors[name].shape
        assert torch.equal(tensor, written[name])
    assert torch.equal(loaded["position_ids"], tensors["position_ids"])  # buffers exact
    error = (loaded["encoder.layer.0.weight"] - tensors["encoder.layer.0.weight"]).norm()
    assert 0 < error < 0.2 * tensors["encoder.layer.0.weight"].norm()


def test_safe_open_decodes_only_what_is_asked(coded, monkeypatch) -> None:
    path, _ = coded
    decoded = []
    real = container.DnaFile.tensor

    def counting(self, name, *args, **kwargs):
        decoded.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(container.DnaFile, "tensor", counting)
    with weightdna.safe_open(path) as f:
        assert f.keys() == ["encoder.layer.0.bias", "encoder.layer.0.weight",
                            "encoder.layer.1.weight", "position_ids"]
        assert f.metadata() == {"format": "pt"} and f.files == []
        assert decoded == []
        assert f.get_tensor("position_ids").tolist() == list(range(7))
        with pytest.raises(KeyError):
            f.get_tensor("absent")
    assert decoded == ["position_ids"]
    with pytest.raises(InvalidInputError, match="framework"):
        weightdna.safe_open(path, framework="np")


def test_compress_takes_one_target(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="exactly one target"):
        weightdna.compress(tmp_path / "none.safetensors", tmp_path / "m.dna")
    with pytest.raises(InvalidInputError, match=r"NAME\.dna"):
        weightdna.compress(tmp_path / "none.safetensors", tmp_path / "m.safetensors",
                           lossless=True)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_load_file_peak_memory_is_the_model_plus_one_tensor(tmp_path: Path) -> None:
    """Measured in a fresh interpreter: the peak RSS that load_file adds to what the imports
    took is the bytes of the tensors it returns, plus at most one tensor's decoding
    (`container.decode_memory`) and a little."""
    from weightdna.codec.container import decode_memory, write_dna_file
    from weightdna.codec.tensor import encode_tensor

    generator = torch.Generator().manual_seed(0)
    entry, sections = encode_tensor(torch.randn(1024, 1024, generator=generator), step=0.02)
    path = tmp_path / "big.dna"  # 6 tensors of 4 MiB, coded alike
    write_dna_file(path, [{**entry, "name": f"w{i}"} for i in range(6)], [sections] * 6)
    script = textwrap.dedent(f"""
        import json
        import weightdna

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024

        with weightdna.safe_open({str(path)!r}) as f:  # imports and compiled code loaded
            f.get_tensor("w0")
        open("/proc/self/clear_refs", "w").write("5")  # the peak RSS starts again here
        before = status("VmRSS:")
        tensors = weightdna.load_file({str(path)!r})
        model = sum(t.numel() * t.element_size() for t in tensors.values())
        print(json.dumps({{"added": status("VmHWM:") - before, "model": model}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    one = decode_memory("quantized", "float32", [1024, 1024])
    assert measured["model"] == 6 * 4 * 1024 * 1024
    assert measured["model"] <= measured["added"] <= measured["model"] + one + (16 << 20), \
        measured
