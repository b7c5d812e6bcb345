"""The Python API: compress a model to a .dna file, and read one back into torch.

`load_file` and `safe_open` take the places of ``safetensors.torch.load_file`` and
``safetensors.safe_open`` for a .dna file; `compress` and `decompress` are the commands of
the same names. Each calls the codec (`weightdna.codec.compress`,
`weightdna.codec.container`); docs/api.md shows them at work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from weightdna.atomic import check_output
from weightdna.codec.options import CANDIDATES, COMPRESS_FORMS
from weightdna.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

    from weightdna.codec.compress import CompressionReport
    from weightdna.codec.container import DnaFile

PathLike = str | os.PathLike[str]


def compress(
    source: PathLike,
    output: PathLike,
    *,
    bits_per_weight: float | None = None,
    snr: float | None = None,
    psnr: float | None = None,
    max_abs_error: float | None = None,
    lossless: bool = False,
    per_tensor: bool = False,
    per_row: bool = False,
    objective: str = "layer",
    representations: Sequence[str] = CANDIDATES,
    sensitivity: str | None = None,
    calibration: PathLike | Sequence[str] | None = None,
    columns: str | None = None,
    bias_correction: str | None = None,
    include: Sequence[str] = (),
    overwrite: bool = False,
) -> CompressionReport:
    """Compress the model at ``source`` (a file or a Hugging Face folder) to the .dna file
    ``output`` under exactly one target, as `weightdna compress` does; returns its report.

    bits_per_weight: the whole file at most this many bits per weight; snr / psnr: at least
    this many dB (every tensor's with ``per_tensor``); max_abs_error: every element within
    it; lossless: bit-exact. sensitivity: what weighs each tensor by how much its error
    moves the outputs, "none", "auto" (the calibration data of the model's kind) or
    "synthetic" (no data: random token sequences for a BERT model, inputs distilled from
    an engine model); None, the default, is "synthetic" for a BERT model under a
    whole-model target and "none" otherwise, as on the command line. With "synthetic" a
    BERT model's biases are also corrected for its coded weights' error, on random tokens
    (`weightdna.evaluate.correction`).
    calibration: GPTQ on calibration data, as ``--calibration``: "auto" (the data of the
    model's kind: digits images, or the bundled sentences for a Hugging Face folder),
    "synthetic" (inputs distilled from an engine model, or an ONNX graph's synthetic
    inputs, `weightdna.evaluate.onnx_calibration`; no data), the path of a text file
    of one text per line, or the texts themselves, or "none"; None, the default, is
    "synthetic" for an engine model under a bits-per-weight target and "none" otherwise,
    as on the command line.
    columns: "synthetic" codes a BERT model's linear weights with a factor per input
    column from its inputs on random tokens (format version 9; `weightdna.evaluate.columns`),
    as ``--columns synthetic``; "none" codes none; None, the default, is "synthetic" where
    the data-free default runs (a BERT model under a whole-model target, sensitivity
    "synthetic", no calibration) and "none" otherwise, as on the command line.
    bias_correction: "synthetic" moves each bias by its layer's mean output shift once the
    weights are coded, with no data (a BERT model's on random tokens, an ONNX graph's on
    synthetic inputs: `weightdna.evaluate.onnx_correction`), as ``--bias-correction``;
    "none": none; None, the default, is a BERT model's with sensitivity "synthetic" and an
    ONNX graph's under a whole-model target (with onnxruntime), none otherwise, as on the
    command line.
    include: glob patterns of a folder's files stored whatever they are (its config and
    tokenizer files are stored anyway).
    """
    from weightdna.codec.compress import compress_model
    from weightdna.codec.ratecontrol import Target
    from weightdna.evaluate.defaults import compress_inputs
    from weightdna.weights import load_weights

    values = {"bits_per_weight": bits_per_weight, "snr": snr, "psnr": psnr,
              "max_abs_error": max_abs_error}
    given = [kind for kind, value in values.items() if value is not None]
    if len(given) + bool(lossless) != 1:
        raise InvalidInputError("give exactly one target: bits_per_weight, snr, psnr, "
                                "max_abs_error or lossless=True.")
    target = (Target("lossless") if lossless
              else Target(given[0], float(values[given[0]]), per_tensor=per_tensor))
    check_output(output, overwrite, COMPRESS_FORMS)
    weights = load_weights(source)
    inputs = compress_inputs(source, weights, target, include=include, calibration=calibration,
                             sensitivity=sensitivity, columns=columns,
                             bias_correction=bias_correction)
    return compress_model(weights, Path(output), target, representations=representations,
                          per_row=per_row, objective=objective, overwrite=overwrite,
                          **inputs.options())


def decompress(path: PathLike, output: PathLike, *, overwrite: bool = False) -> Path:
    """Restore the .dna file ``path`` in the form ``output`` names, as `weightdna decompress`
    does: ``X.safetensors``, ``X.pt`` (a torch state dict), ``DIR/`` (the model's folder,
    with its stored config and tokenizer) or ``X.onnx`` (a model compressed from ONNX);
    returns ``output`` as a Path."""
    from weightdna.codec.compress import decompress_model

    decompress_model(path, output, overwrite=overwrite)
    return Path(output)


def load_file(path: PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of the .dna file ``path``, decoded, by name: a drop-in for
    ``safetensors.torch.load_file``. Tensors are decoded one at a time and each moved to
    ``device`` at once, so memory holds the model plus one tensor's decoding."""
    with safe_open(path, device=device) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


class safe_open:  # noqa: N801 - the name and use of safetensors.safe_open
    """A .dna file opened lazily, as ``safetensors.safe_open`` opens a safetensors file:
    the header is read and checked at once, each tensor decoded only when asked for.

    >>> with weightdna.safe_open("model.dna") as f:   # doctest: +SKIP
    ...     weight = f.get_tensor(f.keys()[0])
    """

    def __init__(self, path: PathLike, framework: str = "pt",
                 device: str | torch.device = "cpu") -> None:
        from weightdna.codec.container import read_dna_file

        if framework not in ("pt", "torch"):
            raise InvalidInputError(f"weightdna.safe_open returns torch tensors; framework "
                                    f"{framework!r} is not supported (use 'pt').")
        self._dna: DnaFile = read_dna_file(path)
        self._device = device

    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        return None

    def keys(self) -> list[str]:
        """The tensors' names, in the file's order."""
        return list(self._dna.names)

    def metadata(self) -> dict[str, str]:
        """The source's safetensors metadata (what `decompress` writes; ``{"format": "pt"}``
        when the source had none)."""
        from weightdna.codec.bundle import safetensors_metadata

        return safetensors_metadata(self._dna)

    def get_tensor(self, name: str) -> torch.Tensor:
        """The tensor called ``name``, decoded now (KeyError if there is none)."""
        if name not in self._dna.names:
            raise KeyError(name)
        tensor = self._dna.tensor(name)
        return tensor if str(self._device) == "cpu" else tensor.to(self._device)

    @property
    def files(self) -> list[str]:
        """The paths of the model's other files stored in it (config, tokenizer)."""
        return [entry["path"] for entry in self._dna.files]
