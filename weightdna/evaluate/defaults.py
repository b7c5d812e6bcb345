"""What `weightdna compress MODEL` hands `weightdna.codec.compress.compress_model` beside the
weights and the target: the model's stored files (an ONNX graph, a folder's config and
tokenizer: `weightdna.codec.bundle.collect_files`, counted in a bits-per-weight budget) and
the choices each option makes when not given (calibration, sensitivities and the row
weights that go with them, column factors, bias correction). One implementation for the
command, the Python API (`weightdna.api.compress`) and the benches and tests that measure
what a user gets: `compress_model` alone, without ``files``, gives the weights the bytes
the stored graph takes in the command's file (the angle classifier's graph is 11.6% of
its file at 3 bits per weight).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from weightdna.codec.bundle import StoredFiles
    from weightdna.codec.compress import Progress
    from weightdna.codec.ratecontrol import Target
    from weightdna.weights import ModelWeights

# The stages the inputs add before and after coding, as a progress plan names them.
SENSITIVITY_STAGE, CORRECTING_STAGE = "sensitivity", "correcting"


@dataclass
class CompressInputs:
    """`compress_inputs`' answer: what `compress_model` is given (`options`), and what the
    command reports about it."""

    files: StoredFiles
    calibration: Any = None  # Hessians, a SequentialHessians, or None
    mode: str = "none"  # the sensitivity mode (`weightdna.evaluate.sensitivity`)
    sensitivity: dict[str, float] | None = None
    row_weights: dict[str, np.ndarray] = field(default_factory=dict)
    column_factors: dict[str, np.ndarray] | None = None
    adjust: Callable | None = None  # the bias correction (`weightdna.evaluate.correction`)
    progress: Progress | None = None  # what the caller's ``progress_for`` returned

    def options(self) -> dict[str, Any]:
        """`compress_model`'s keyword arguments for these inputs."""
        return {"files": self.files, "calibration": self.calibration,
                "sensitivity": self.sensitivity, "row_weights": self.row_weights or None,
                "column_factors": self.column_factors, "adjust": self.adjust,
                "progress": self.progress}


def compress_inputs(model: str | Path, weights: ModelWeights, target: Target, *,
                    include: Sequence[str] = (), calibration: Any = None,
                    sensitivity: str | None = None, columns: str | None = None,
                    bias_correction: str | None = None, ray: Any = False,
                    warn: Callable[[str], None] | None = None,
                    note: Callable[[str], None] | None = None,
                    progress_for: Callable[[list[str]], Progress] | None = None,
                    ) -> CompressInputs:
    """What `weightdna compress MODEL` (``weights``, loaded from it) gives `compress_model`
    under ``target`` with these options (each None: the command's default; ``include``,
    ``calibration``, ``sensitivity``, ``columns``, ``bias_correction`` and ``ray`` as the
    flags of the same names take them). ``warn`` hears the calibration's warnings, ``note``
    what measuring an ONNX graph's sensitivities or correcting its biases said (or why the
    default made no correction). ``progress_for``: called once the stages to come are known,
    with those added before and after coding (`SENSITIVITY_STAGE`, `CORRECTING_STAGE`); the
    callback it returns hears the sensitivities' measuring and is the inputs' ``progress``."""
    from weightdna.codec.bundle import collect_files
    from weightdna.evaluate.calibration import calibration_for
    from weightdna.evaluate.columns import column_factors_for, columns_mode
    from weightdna.evaluate.correction import bias_correction_for
    from weightdna.evaluate.sensitivity import row_weights_for, sensitivity_mode

    files = collect_files(weights, include)
    hessians = calibration_for(model, calibration, target, warn)
    mode = sensitivity_mode(sensitivity, model, weights.names, target)
    adjust = bias_correction_for(mode, model, weights.names, bias_correction, target,
                                 note=note)
    stages = ([SENSITIVITY_STAGE] if mode != "none" else []) \
        + ([CORRECTING_STAGE] if adjust is not None else [])
    progress = None if progress_for is None else progress_for(stages)
    measured = None
    if mode != "none":
        from weightdna.evaluate.calibration import sensitivity_for_file

        measured = sensitivity_for_file(model, mode == "synthetic", progress, note=note)
    factors = column_factors_for(
        columns_mode(columns, mode, model, weights.names, target, ray,
                     "none" if hessians is None else calibration),
        model, weights.names, target, ray, calibration)
    return CompressInputs(files=files, calibration=hessians, mode=mode, sensitivity=measured,
                          row_weights=row_weights_for(mode, model, weights.names),
                          column_factors=factors, adjust=adjust, progress=progress)
