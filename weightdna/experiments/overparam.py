"""Over-parameterisation on digits (seed 004): do networks with far more parameters than
training examples still generalise?

One-hidden-layer MLPs 64 → h → 10 of growing width h are each trained to (near) zero
training error with the same recipe; train and test error are recorded against the
parameter count. Classical capacity arguments predict the test error to rise once the
parameters outnumber the examples; seed 004 claims it does not.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from weightdna.atomic import write_text_atomic
from weightdna.data import load_digits
from weightdna.errors import InvalidInputError
from weightdna.nn.losses import SoftmaxCrossEntropy
from weightdna.nn.optimizers import Adam
from weightdna.train import build_digits_mlp, single_blas_thread

# 85 parameters (h = 1) up to about 150k (h = 2048): from far fewer than the 1437 training
# examples to about a hundred times more.
DEFAULT_WIDTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class OverparamRow:
    """One trained width."""

    width: int
    parameters: int
    train_error: float
    test_error: float
    train_loss: float
    test_loss: float
    seconds: float


@dataclass
class OverparamResult:
    """All widths, with the size of the training set they are compared against."""

    rows: list[OverparamRow]
    train_examples: int
    test_examples: int
    epochs: int
    seed: int

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return {**asdict(self), "rows": [asdict(row) for row in self.rows]}


def run_overparam(
    widths: Sequence[int] = DEFAULT_WIDTHS,
    epochs: int = 60,
    seed: int = 0,
    on_width_done: Callable[[OverparamRow], None] | None = None,
) -> OverparamResult:
    """Train one MLP per width on digits and measure train and test error."""
    if not widths or any(int(w) < 1 for w in widths):
        raise InvalidInputError(f"widths must be positive integers, got {list(widths)}")
    if epochs < 1:
        raise InvalidInputError(f"epochs must be >= 1, got {epochs}")
    X_train, X_test, y_train, y_test = load_digits(seed=seed)
    loss = SoftmaxCrossEntropy()
    rows = []
    for width in widths:
        model = build_digits_mlp(seed, hidden=(int(width),))
        start = time.perf_counter()
        with single_blas_thread():
            model.fit(
                X_train,
                y_train,
                epochs=epochs,
                batch_size=64,
                optimizer=Adam(learning_rate=3e-3, decay=1e-3),
                loss=loss,
                seed=seed,
            )
            train_loss, train_accuracy = model.evaluate(X_train, y_train, loss=loss)
            test_loss, test_accuracy = model.evaluate(X_test, y_test, loss=loss)
        row = OverparamRow(
            width=int(width),
            parameters=model.num_parameters(),
            train_error=1.0 - train_accuracy,
            test_error=1.0 - test_accuracy,
            train_loss=train_loss,
            test_loss=test_loss,
            seconds=time.perf_counter() - start,
        )
        rows.append(row)
        if on_width_done is not None:
            on_width_done(row)
    return OverparamResult(
        rows=rows,
        train_examples=len(X_train),
        test_examples=len(X_test),
        epochs=epochs,
        seed=seed,
    )


def write_overparam(result: OverparamResult, directory: str | Path) -> dict[str, Path]:
    """Write ``overparam.json``, ``overparam.csv`` and ``overparam.png`` into ``directory``."""
    from weightdna.plots import plot_error_vs_parameters

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "overparam.json",
        "csv": directory / "overparam.csv",
        "png": directory / "overparam.png",
    }
    write_text_atomic(paths["json"], json.dumps(result.to_dict(), indent=1) + "\n")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(asdict(result.rows[0])))
    writer.writeheader()
    for row in result.rows:
        writer.writerow(asdict(row))
    write_text_atomic(paths["csv"], table.getvalue())
    plot_error_vs_parameters(
        parameters=np.array([r.parameters for r in result.rows]),
        train_error=np.array([r.train_error for r in result.rows]),
        test_error=np.array([r.test_error for r in result.rows]),
        train_examples=result.train_examples,
        path=paths["png"],
    )
    return paths
