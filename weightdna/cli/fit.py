"""`weightdna fit MODEL -o model.dna.pt` and `weightdna reconstruct model.dna.pt -o out`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress, TextColumn
from rich.table import Table

from weightdna.atomic import check_output
from weightdna.cli import console, err_console, examples
from weightdna.cli._progress import job_progress
from weightdna.cli._tables import print_table

if TYPE_CHECKING:
    from weightdna.dna.metrics import ErrorMetrics
    from weightdna.dna.model import ModelDNA, ModelFitProgress

COMMANDS = {
    "fit": "fit a coordinate network (the DNA) to a model's weights",
    "reconstruct": "write the weights a .dna.pt file predicts, as safetensors",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from weightdna.dna.options import (
        ARCHITECTURES,
        GRANULARITIES,
        PRECISIONS,
        PSNR_NORMALISATIONS,
        SCHEDULES,
        TARGET_NORMALISATIONS,
    )

    fit = subparsers.add_parser(
        "fit",
        help=COMMANDS["fit"],
        description=(
            "Fit a SIREN (or a Fourier-feature or plain ReLU MLP) to the weights of a model, "
            "one network per tensor, per role or for the whole model, on the four "
            "coordinates (row, column, layer, tensor type). Prints PSNR (its normalisation "
            "named), SNR, relative and maximum error per tensor, and the held-out error "
            "with --holdout. Writes a .dna.pt file that `weightdna reconstruct` reads."
        ),
        epilog=examples(
            "weightdna fit model.safetensors -o model.dna.pt --steps 500",
            "weightdna fit model.safetensors -o model.dna.pt --granularity group --holdout 0.2",
            "weightdna fit model.safetensors -o model.dna.pt --resume model.dna.pt.ckpt",
        ),
    )
    fit.add_argument("model", help="model file or Hugging Face model folder")
    fit.add_argument("-o", "--output", required=True, help="the .dna.pt file to write")
    fit.add_argument("--architecture", choices=ARCHITECTURES, default="siren",
                     help="siren: sine activations; fourier: Fourier features then ReLU; "
                          "relu: a plain ReLU MLP")
    fit.add_argument("--width", type=int, default=64, help="units per layer (default 64)")
    fit.add_argument("--depth", type=int, default=3,
                     help="sine (or ReLU) layers before the linear output (default 3)")
    fit.add_argument("--omega0", type=float, default=30.0, help="SIREN ω₀ (default 30)")
    fit.add_argument("--granularity", choices=GRANULARITIES, default="tensor",
                     help="one network per tensor, per role, or for the whole model")
    fit.add_argument("--steps", type=int, default=2000, help="optimizer steps per network")
    fit.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    fit.add_argument("--batch-size", type=int, default=16384,
                     help="coordinates per step; all of them when fewer (default 16384)")
    fit.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                     help="learning-rate schedule over the steps")
    fit.add_argument("--clip", type=float, default=1.0,
                     help="maximum gradient norm, 0 for none (default 1)")
    fit.add_argument("--patience", type=int, default=0,
                     help="stop after this many evaluations without 0.1%% improvement "
                          "(0: never)")
    fit.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    fit.add_argument("--precision", choices=PRECISIONS, default="float32",
                     help="bfloat16 autocast applies on CUDA only")
    fit.add_argument("--seed", type=int, default=0,
                     help="seed of the networks' initialisation, batches and held-out split")
    fit.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION",
                     help="fraction of coordinates kept out of training; their error is "
                          "reported beside the training error")
    fit.add_argument("--tensors", action="append", default=[], metavar="PATTERN",
                     help="fit only tensors matching this glob (repeatable; default: all "
                          "floating-point tensors)")
    fit.add_argument("--normalise", choices=TARGET_NORMALISATIONS, default="standard",
                     help="per-tensor target normalisation (default: (w-mean)/std)")
    fit.add_argument("--psnr", choices=PSNR_NORMALISATIONS, default="maxabs",
                     help="PSNR normalisation: MAX = max|w| (default) or max(w)-min(w)")
    fit.add_argument("--checkpoint", metavar="PATH",
                     help="where to write checkpoints (default OUTPUT.ckpt, removed on success)")
    fit.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS",
                     help="steps between checkpoints, 0 for none (default 1000)")
    fit.add_argument("--resume", metavar="CHECKPOINT",
                     help="continue an interrupted fit from its checkpoint")
    fit.add_argument("--json", action="store_true",
                     help="print the results as JSON (full names and numbers) instead of a table")
    fit.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    fit.set_defaults(func=run_fit)

    rec = subparsers.add_parser(
        "reconstruct",
        help=COMMANDS["reconstruct"],
        description=(
            "Evaluate every network of a .dna.pt file at its tensors' coordinates and write "
            "all tensors (fitted ones predicted, the others copied exactly) with their "
            "original names, shapes and dtypes."
        ),
        epilog=examples(
            "weightdna reconstruct model.dna.pt -o restored.safetensors",
        ),
    )
    rec.add_argument("dna", help="a .dna.pt file written by `weightdna fit`")
    rec.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    rec.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    rec.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    rec.set_defaults(func=run_reconstruct)


def run_fit(args: argparse.Namespace) -> int:
    from weightdna.dna.fit import FitConfig
    from weightdna.dna.model import fit_model
    from weightdna.weights import load_weights

    output = check_output(args.output, args.force, {".dna.pt": "a fitted DNA"})
    config = FitConfig(
        architecture=args.architecture, width=args.width, depth=args.depth,
        omega0=args.omega0, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
        schedule=args.schedule, clip=args.clip, seed=args.seed, holdout=args.holdout,
        patience=args.patience, checkpoint_every=args.checkpoint_every, device=args.device,
        precision=args.precision,
    )
    weights = load_weights(args.model)
    default_checkpoint = args.checkpoint is None and args.resume is None
    checkpoint = Path(args.checkpoint or args.resume or f"{output}.ckpt")
    if not args.checkpoint_every:
        checkpoint = None

    with _progress() as bar:
        task = bar.add_task("fitting", total=None, loss="", psnr="", snr="")

        def report(p: ModelFitProgress) -> None:
            bar.update(task, description=f"[{p.index + 1}/{p.groups}] {p.group}",
                       completed=p.index * p.fit.steps + p.fit.step,
                       total=p.groups * p.fit.steps, loss=f"loss {p.fit.loss:.3g}",
                       psnr=f"PSNR {p.fit.psnr:.1f} dB", snr=f"SNR {p.fit.snr:.1f} dB")

        try:
            dna = fit_model(weights, config, granularity=args.granularity,
                            tensors=args.tensors or None, target_normalisation=args.normalise,
                            psnr_normalisation=args.psnr, progress=report,
                            checkpoint=checkpoint, resume=args.resume)
        except KeyboardInterrupt:
            if checkpoint is not None and checkpoint.exists():
                err_console.print(f"checkpoint kept: continue with --resume {checkpoint}")
            raise
    dna.save(output, overwrite=args.force)
    if default_checkpoint and checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    if args.json:
        console.print(_as_json(dna, output), markup=False, highlight=False, soft_wrap=True)
        return 0
    print_table(_table(dna))
    console.print(
        f"wrote {output}: {len(dna.networks)} network(s), {dna.parameter_count:,} DNA "
        f"parameters for {dna.fitted_numel:,} weights (ratio "
        f"{dna.fitted_numel / max(dna.parameter_count, 1):.2f}); targets normalised by "
        f"{_TARGET_RULE[dna.target_normalisation]}; PSNR normalisation: "
        f"{_PSNR_RULE[dna.psnr_normalisation]}.", highlight=False)
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    from weightdna.dna.model import ModelDNA
    from weightdna.weights import save_weights

    output = check_output(args.output, args.force, {".safetensors": "safetensors"})
    dna = ModelDNA.load(args.dna)
    tensors = dna.reconstruct(device=args.device)
    metadata = {"format": "pt", "weightdna": f"reconstructed from the DNA {Path(args.dna).name}"}
    save_weights(tensors, output, metadata=metadata, overwrite=args.force)
    console.print(f"wrote {output}: {len(dna.tensors)} tensors predicted by the DNA, "
                  f"{len(dna.kept)} copied exactly.", highlight=False)
    return 0


_TARGET_RULE = {"standard": "(w − mean)/std", "maxabs": "w/max|w|", "none": "nothing"}
_PSNR_RULE = {"maxabs": "MAX = max|w| per tensor", "range": "MAX = max(w) − min(w) per tensor"}


def _progress() -> Progress:
    return job_progress(TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[psnr]}"),
                        TextColumn("{task.fields[snr]}"))


def _as_json(dna: ModelDNA, output: Path) -> str:
    def plain(m: ErrorMetrics | None) -> dict | None:
        # JSON has no infinity: an exact fit's PSNR and SNR are null.
        return None if m is None else {k: v if not isinstance(v, float) or math.isfinite(v)
                                       else None for k, v in m.as_dict().items()}

    return json.dumps({
        "output": str(output),
        "source": dna.source,
        "config": dataclasses.asdict(dna.config),
        "granularity": dna.granularity,
        "target_normalisation": dna.target_normalisation,
        "psnr_normalisation": dna.psnr_normalisation,
        "parameters": dna.parameter_count,
        "fitted_weights": dna.fitted_numel,
        "metrics": plain(dna.metrics),
        "holdout_metrics": plain(dna.holdout_metrics),
        "tensors": [
            {"name": name, "shape": list(t.shape), "dtype": t.dtype, "network": t.network,
             "network_parameters": dna.networks[t.network].parameter_count,
             "metrics": plain(t.metrics), "holdout_metrics": plain(t.holdout_metrics)}
            for name, t in dna.tensors.items()
        ],
        "kept_exactly": sorted(dna.kept),
    }, indent=2)


def _db(x: float) -> str:
    return "∞" if math.isinf(x) and x > 0 else f"{x:.2f}"


def _table(dna: ModelDNA) -> Table:
    holdout = dna.holdout_metrics is not None
    table = Table(title=f"DNA of {dna.source} ({dna.config.architecture} "
                        f"{dna.config.width}×{dna.config.depth}, ω₀={dna.config.omega0:g}, "
                        f"granularity {dna.granularity})")
    table.add_column("tensor", overflow="fold")
    table.add_column("DNA params", justify="right")
    table.add_column("weights/DNA", justify="right")
    table.add_column(f"PSNR ({dna.psnr_normalisation}) dB", justify="right")
    table.add_column("SNR dB", justify="right")
    table.add_column("rel. error", justify="right")
    table.add_column("max error", justify="right")
    if holdout:
        table.add_column("held-out SNR dB", justify="right")
        table.add_column("held-out rel. error", justify="right")

    def cells(m: ErrorMetrics, h: ErrorMetrics | None) -> list[str]:
        row = [_db(m.psnr), _db(m.snr), f"{m.relative_l2:.4f}", f"{m.max_abs:.3g}"]
        if holdout:
            row += ["—", "—"] if h is None else [_db(h.snr), f"{h.relative_l2:.4f}"]
        return row

    for name, t in dna.tensors.items():
        net = dna.networks[t.network]
        table.add_row(name, f"{net.parameter_count:,}", f"{dna.network_ratio(t.network):.2f}",
                      *cells(t.metrics, t.holdout_metrics))
    if dna.metrics is not None:
        table.add_section()
        table.add_row("whole model", f"{dna.parameter_count:,}",
                      f"{dna.fitted_numel / max(dna.parameter_count, 1):.2f}",
                      *cells(dna.metrics, dna.holdout_metrics), style="bold")
    return table
