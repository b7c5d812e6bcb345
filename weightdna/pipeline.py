"""The embedded default job, end to end: train → analyse → compress → restore → evaluate →
report. `weightdna demo` (and `make demo`) runs it on the engine's digits CNN;
`weightdna demo --model minilm` on the installed all-MiniLM-L6-v2."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from weightdna.analysis.run import AnalysisSettings, ModelAnalysis, analyze_weights
from weightdna.atomic import write_text_atomic
from weightdna.baselines.report import markdown as rd_markdown
from weightdna.baselines.report import plot as plot_rd
from weightdna.baselines.sweep import DNA_CODEC, RateDistortion, rate_distortion
from weightdna.codec.compress import (
    CompressionReport,
    Progress,
    compress_model,
    decompress_model,
)
from weightdna.codec.ratecontrol import CANDIDATES, Target
from weightdna.dna import select_tensors
from weightdna.errors import InvalidInputError, ModelFileError
from weightdna.evaluate.accuracy import accuracy_of_restored
from weightdna.evaluate.sentences import load_sentences, sentence_fidelity
from weightdna.nn.model import load_model
from weightdna.report.html import embed_png, render_analysis_html
from weightdna.weights import ModelWeights, load_weights, minilm_path

# The demo's rate-distortion sweep: the .dna codec as `weightdna compress` runs it (rate
# control, one file per rate, its bytes counted: the codec the README describes, a few
# seconds on the CNN), the in-process peers, and NNCodec when bench/peers/setup_peers.sh
# has built its environment (skipped otherwise). Not "weightdna-step", one global step
# without rate control: `weightdna bench rd` shows it beside the codec, where it is
# explained; alone in the demo's plot it read as the codec, 6 dB below what it does.
DEMO_RD_METHODS = (DNA_CODEC, "nncodec", "rtn", "svd", "pruning", "zstd")
DEMO_RD_RATES = (2.0, 3.0, 4.0, 6.0, 8.0)
DEFAULT_TARGET = Target("snr", 30.0)  # MiniLM: mean cosine ≈ 0.995 (BENCHMARKS.md)
MODELS = ("cnn", "minilm")
# MiniLM --quick: analyse and compress only these (the rest stay exact); the full demo's
# rate-distortion sweep runs on them too (1.97M weights), the quick one on two matrices.
QUICK_TENSORS = ("encoder.layer.0.*", "embeddings.position_embeddings.weight")
QUICK_RD_TENSORS = ("embeddings.position_embeddings.weight",
                    "encoder.layer.0.attention.self.query.weight")
# DNA fits dominate the time (≈ 20 s each at 500 steps): --quick fits one, shorter, in the
# analysis (the full analysis four) and none as a compression candidate.
QUICK_ANALYSIS = AnalysisSettings(dna_tensors=1, dna_steps=200)
QUICK_REPRESENTATIONS = ("quantized", "lowrank")

Say = Callable[[str], None]


@dataclass
class DemoResult:
    """Paths written and figures measured by :func:`run_demo`."""

    model_path: Path
    trained: bool  # False when a cached model was reused
    analysis: ModelAnalysis
    compression: CompressionReport
    evaluation: dict[str, float]  # accuracy_of_restored (cnn) or sentence_fidelity (minilm)
    rd: RateDistortion
    paths: dict[str, Path] = field(default_factory=dict)
    model: str = "cnn"
    compressed: tuple[str, ...] = ()  # minilm --quick: the tensors coded; empty: all


def run_demo(
    directory: Path,
    *,
    model: str = "cnn",
    seed: int = 0,
    target: Target = DEFAULT_TARGET,
    retrain: bool = False,
    train: Callable[[int], object] | None = None,
    quick: bool = False,
    sentences: int | None = None,
    say: Say | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the whole pipeline on ``model`` ("cnn" or "minilm"), writing into ``directory``.

    train(seed) -> a training run with ``.model`` (the CLI passes one with a progress bar);
    a model already at ``directory/cnn.safetensors`` is reused unless ``retrain``.
    MiniLM only: ``quick`` restricts analysis and compression to QUICK_TENSORS;
    ``sentences`` embeds only the first that many of the bundled sentences.
    ``progress(stage, done, total)``: the stages of `DEMO_STAGES` as they start (training's
    batches and analysis's tensors counted as they go).
    """
    if model not in MODELS:
        raise InvalidInputError(f"unknown demo model {model!r}; choose from {', '.join(MODELS)}")
    say = say or (lambda message: None)
    report = progress or (lambda stage, done, total: None)
    directory.mkdir(parents=True, exist_ok=True)
    if model == "minilm":
        return _run_minilm(directory, target, quick, sentences, say, report)
    if quick or sentences is not None:
        raise InvalidInputError("--quick and the sentence count apply to --model minilm only")
    return _run_cnn(directory, seed, target, retrain, train, say, report)


# The demo's stages, in order, with their share of the job's time on the CNN (measured:
# analysis dominates); `run_demo` reports each as it runs.
DEMO_STAGES = {"training": 2, "analysing": 6, "compressing": 1, "restoring": 1,
               "evaluating": 1, "rate-distortion": 2, "report": 1}



def _run_cnn(directory: Path, seed: int, target: Target, retrain: bool,
             train: Callable[[int], object] | None, say: Say, report: Progress) -> DemoResult:
    from weightdna.plots import plot_training
    from weightdna.train import train_digits_cnn

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
    analysis = analyze_weights(weights, progress=_tensors_done(say, report))

    say(f"compressing at {target.describe()}")
    report("compressing", 0, 1)
    compression = compress_model(weights, paths["dna"], target, overwrite=True)
    say("restoring")
    report("restoring", 0, 1)
    decompress_model(paths["dna"], paths["restored"], overwrite=True)
    report("evaluating", 0, 1)
    restored = load_weights(paths["restored"]).state_dict()
    accuracy = accuracy_of_restored(paths["model"], restored, seed=seed)

    say("rate-distortion sweep beside the peers")
    report("rate-distortion", 0, 1)
    tensors = {info.name: weights.tensor(info.name) for info in weights.float_infos()}
    rd = rate_distortion(tensors, DEMO_RD_RATES, DEMO_RD_METHODS, progress=say)
    report("report", 0, 1)
    plot_rd(rd, paths["rd_plot"], "digits CNN",
            mark=_own_point(compression, weights, list(tensors), target))
    write_text_atomic(paths["rd_table"], rd_markdown(rd, "digits CNN"))

    result = DemoResult(paths["model"], trained, analysis, compression, accuracy, rd, paths)
    write_text_atomic(paths["report"], render_analysis_html(analysis, sections=_sections(result)))
    return result


def _run_minilm(directory: Path, target: Target, quick: bool, sentences: int | None,
                say: Say, report: Progress) -> DemoResult:
    """The pipeline on the installed all-MiniLM-L6-v2 (MissingDependencyError without it)."""
    if sentences is not None and sentences < 2:
        raise InvalidInputError(f"embed at least 2 sentences, not {sentences}")
    folder = minilm_path()
    weights = load_weights(folder)
    paths = {
        "dna": directory / "minilm.dna",
        "restored": directory / "minilm_restored.safetensors",
        "rd_plot": directory / "rate_distortion.png",
        "rd_table": directory / "rate_distortion.md",
        "report": directory / "report.html",
    }
    if quick:
        say("analysing layer 0 and the position embeddings against shuffled and Gaussian nulls")
        analysis = analyze_weights(weights, QUICK_TENSORS, QUICK_ANALYSIS,
                                   _tensors_done(say, report))
    else:
        say("analysing every matrix against shuffled and Gaussian nulls (minutes; --quick "
            "analyses layer 0 and the position embeddings only)")
        analysis = analyze_weights(weights, progress=_tensors_done(say, report))

    compressed: tuple[str, ...] = ()
    coded, representations = weights, CANDIDATES
    if quick:
        compressed = tuple(info.name for info in select_tensors(weights, QUICK_TENSORS))
        coded = ModelWeights.from_tensors({n: weights.tensor(n) for n in compressed})
        representations = QUICK_REPRESENTATIONS
    say(f"compressing {'the quick tensors' if quick else 'the whole model'} at "
        f"{target.describe()}")
    report("compressing", 0, 1)
    compression = compress_model(coded, paths["dna"], target, representations=representations,
                                 overwrite=True)
    say("restoring")
    report("restoring", 0, 1)
    decompress_model(paths["dna"], paths["restored"], overwrite=True)
    original = weights.state_dict()
    restored = {**original, **load_weights(paths["restored"]).state_dict()}
    texts = load_sentences()
    texts = texts[:sentences] if sentences is not None else texts
    say(f"embedding {len(texts)} sentences with the original and the restored weights")
    report("evaluating", 0, 1)
    fidelity = sentence_fidelity(original, restored, texts, folder)

    say("rate-distortion sweep beside the peers")
    report("rate-distortion", 0, 1)
    rd_names = [info.name for info in select_tensors(weights,
                                                     QUICK_RD_TENSORS if quick else QUICK_TENSORS)]
    rd = rate_distortion({n: weights.tensor(n) for n in rd_names}, DEMO_RD_RATES,
                         DEMO_RD_METHODS, progress=say)
    title = f"MiniLM, {len(rd_names)} tensors"
    plot_rd(rd, paths["rd_plot"], title, mark=_own_point(compression, weights, rd_names, target))
    write_text_atomic(paths["rd_table"], rd_markdown(rd, title))

    report("report", 0, 1)
    result = DemoResult(folder / "model.safetensors", False, analysis, compression, fidelity,
                        rd, paths, "minilm", compressed)
    write_text_atomic(paths["report"], render_analysis_html(analysis, sections=_sections(result)))
    return result


def _own_point(compression: CompressionReport, weights: ModelWeights, names: list[str],
               target: Target) -> tuple[float, float, str]:
    """The demo's own compressed file as a point of its rate-distortion plot: (bits per
    weight, SNR dB, label), on the plot's tensors.

    When the plot's tensors are every tensor the file codes, the whole file's figures: its
    bytes, header included, as the codec's curve counts them. When they are some of them
    (MiniLM), their sections' bytes and their pooled SNR, from the per-tensor report.
    """
    label = f"this demo's file ({target.describe()})"
    coded = {t.name: t for t in compression.tensors}
    floats = {info.name for info in weights.float_infos() if info.name in coded}
    if set(names) == floats:
        return compression.bits_per_weight, compression.snr_db, label
    signal = error = 0.0
    nbytes = count = 0
    for name in names:
        t = coded[name]
        energy = float(weights.tensor(name).double().pow(2).sum())
        signal += energy
        if t.snr_db is not None and math.isfinite(t.snr_db):
            error += energy / 10 ** (t.snr_db / 10)
        nbytes += t.bytes
        count += math.prod(t.shape)
    snr = math.inf if error == 0 else 10 * math.log10(signal / error)
    return 8 * nbytes / count, snr, f"{label}, these tensors' sections"


def _tensors_done(say: Say, report: Progress) -> Callable[[int, int, str], None]:
    """The analysis's progress: every tenth tensor said, every tensor reported."""
    def progress(done: int, total: int, label: str) -> None:
        report("analysing", done, total)
        if done % 10 == 0 and done < total:
            say(f"  tensor {done + 1}/{total}: {label}")

    return progress


def _loads(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        load_model(path)
    except ModelFileError:
        return False
    return True


def _sections(result: DemoResult) -> list[tuple[str, str]]:
    c = result.compression
    rows = [("target", c.target)]
    if result.compressed:
        rows.append(("tensors coded", f"{len(result.compressed)} (--quick: "
                                      f"{', '.join(QUICK_TENSORS)}); the others kept exact"))
    rows += [
        ("file", f"{c.file_bytes:,} bytes ({c.bits_per_weight:.2f} bits/weight, "
                 f"ratio {c.ratio:.1f} against the original tensors)"),
        ("SNR, coded tensors", f"{c.snr_db:.2f} dB"),
        ("PSNR (MAX = max|w| per tensor)", f"{c.psnr_db:.2f} dB"),
    ]
    rows += _evaluation_rows(result.model, result.evaluation)
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


def _evaluation_rows(model: str, e: dict[str, float]) -> list[tuple[str, str]]:
    if model == "minilm":
        return [
            ("sentences embedded", f"{e['sentences']} (original and restored weights)"),
            ("cosine, original vs restored", f"mean {e['mean_cosine']:.4f}, 5th percentile "
                                             f"{e['p5_cosine']:.4f}, min {e['min_cosine']:.4f}"),
            ("Spearman of pairwise similarities", f"{e['spearman']:.4f}"),
        ]
    return [
        ("test accuracy, original", f"{e['original_accuracy']:.4f}"),
        ("test accuracy, restored", f"{e['restored_accuracy']:.4f} "
                                    f"({e['delta_points']:+.2f} points)"),
        ("same prediction on", f"{100 * e['agreement']:.1f}% of {e['test_images']} test images"),
    ]
