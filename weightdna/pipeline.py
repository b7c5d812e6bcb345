"""The embedded default job, end to end: train → analyse → compress → restore → evaluate →
report. `weightdna demo` (and `make demo`) runs it on the engine's digits CNN."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from weightdna.analysis.run import ModelAnalysis, analyze_weights
from weightdna.atomic import atomic_output
from weightdna.baselines.report import markdown as rd_markdown
from weightdna.baselines.report import plot as plot_rd
from weightdna.baselines.sweep import RateDistortion, rate_distortion
from weightdna.codec.compress import CompressionReport, compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.errors import ModelFileError
from weightdna.evaluate.accuracy import accuracy_of_restored
from weightdna.nn.model import load_model
from weightdna.report.html import embed_png, render_analysis_html
from weightdna.weights import load_weights

# Fast methods for the demo's rate-distortion sweep: our codec at one global step (no DNA
# fits, so seconds), the in-process peers, and NNCodec when bench/peers/setup_peers.sh
# has built its environment (skipped otherwise).
DEMO_RD_METHODS = ("weightdna-step", "nncodec", "rtn", "svd", "pruning", "zstd")
DEMO_RD_RATES = (2.0, 3.0, 4.0, 6.0, 8.0)
DEFAULT_TARGET = Target("snr", 30.0)

Say = Callable[[str], None]


@dataclass
class DemoResult:
    """Paths written and figures measured by :func:`run_demo`."""

    model_path: Path
    trained: bool  # False when a cached model was reused
    analysis: ModelAnalysis
    compression: CompressionReport
    accuracy: dict[str, float]
    rd: RateDistortion
    paths: dict[str, Path] = field(default_factory=dict)


def run_demo(
    directory: Path,
    *,
    seed: int = 0,
    target: Target = DEFAULT_TARGET,
    retrain: bool = False,
    train: Callable[[int], object] | None = None,
    say: Say | None = None,
) -> DemoResult:
    """Run the whole pipeline on the digits CNN, writing everything into ``directory``.

    train(seed) -> a training run with ``.model`` (the CLI passes one with a progress bar);
    a model already at ``directory/cnn.safetensors`` is reused unless ``retrain``.
    """
    from weightdna.plots import plot_training
    from weightdna.train import train_digits_cnn

    say = say or (lambda message: None)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "model": directory / "cnn.safetensors",
        "curves": directory / "cnn_training.png",
        "dna": directory / "cnn.dna",
        "restored": directory / "cnn_restored.safetensors",
        "rd_plot": directory / "rate_distortion.png",
        "rd_table": directory / "rate_distortion.md",
        "report": directory / "report.html",
    }
    trained = retrain or not _loads(paths["model"])
    if trained:
        say("training the digits CNN with the NumPy engine")
        run = (train or (lambda s: train_digits_cnn(seed=s)))(seed)
        run.model.save(paths["model"])
        plot_training(run.history, paths["curves"], title=f"Digits CNN (seed {seed})")
    else:
        say(f"reusing the trained model {paths['model']} (--retrain to train again)")
    weights = load_weights(paths["model"])

    say("analysing its weights against shuffled and Gaussian nulls")
    analysis = analyze_weights(weights)

    say(f"compressing at {target.describe()}")
    compression = compress_model(weights, paths["dna"], target, overwrite=True)
    say("restoring")
    decompress_model(paths["dna"], paths["restored"], overwrite=True)
    restored = load_weights(paths["restored"]).state_dict()
    accuracy = accuracy_of_restored(paths["model"], restored, seed=seed)

    say("rate-distortion sweep beside the peers")
    tensors = {info.name: weights.tensor(info.name) for info in weights.float_infos()}
    rd = rate_distortion(tensors, DEMO_RD_RATES, DEMO_RD_METHODS, progress=say)
    plot_rd(rd, paths["rd_plot"], "digits CNN")
    _write_text(paths["rd_table"], rd_markdown(rd, "digits CNN"))

    result = DemoResult(paths["model"], trained, analysis, compression, accuracy, rd, paths)
    page = render_analysis_html(analysis, sections=_sections(result))
    _write_text(paths["report"], page)
    return result


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path) as f:
        f.write(text.encode("utf-8"))


def _loads(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        load_model(path)
    except ModelFileError:
        return False
    return True


def _sections(result: DemoResult) -> list[tuple[str, str]]:
    c, a = result.compression, result.accuracy
    rows = [
        ("target", c.target),
        ("file", f"{c.file_bytes:,} bytes ({c.bits_per_weight:.2f} bits/weight, "
                 f"ratio {c.ratio:.1f} against the safetensors file)"),
        ("SNR, whole model", f"{c.snr_db:.2f} dB"),
        ("PSNR (MAX = max|w| per tensor)", f"{c.psnr_db:.2f} dB"),
        ("test accuracy, original", f"{a['original_accuracy']:.4f}"),
        ("test accuracy, restored", f"{a['restored_accuracy']:.4f} "
                                    f"({a['delta_points']:+.2f} points)"),
        ("same prediction on", f"{100 * a['agreement']:.1f}% of {a['test_images']} test images"),
    ]
    table = "<table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td class='text'>{html.escape(v)}</td></tr>"
        for k, v in rows
    ) + "</table>"
    rd_png = result.paths["rd_plot"].read_bytes()
    skipped = "".join(
        f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in result.rd.skipped.items()
    )
    rd_body = embed_png(rd_png) + (f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else "")
    return [("Compressed and restored: does it still work?", table),
            ("Rate–distortion beside the peers", rd_body)]
