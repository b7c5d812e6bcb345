"""`weightdna analyze MODEL`: the structure of a model's weights and a verdict on each claim."""

from __future__ import annotations

import argparse
import json
import warnings
from typing import TYPE_CHECKING

from rich.table import Table

from weightdna.atomic import check_output, write_text_atomic
from weightdna.cli import console, err_console, examples
from weightdna.cli._progress import job_progress
from weightdna.cli._tables import print_table
from weightdna.errors import InvalidInputError

if TYPE_CHECKING:
    from weightdna.analysis.run import ModelAnalysis, TensorAnalysis

COMMANDS = {"analyze": "measure the structure of a model's weights and judge the seed's claims"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from weightdna.analysis.settings import ABOUT_SEED, AnalysisSettings

    parser = subparsers.add_parser(
        "analyze",
        help=COMMANDS["analyze"],
        description=(
            "For every matrix, embedding and conv kernel: PCA energy, local, correlation, "
            "MLE and TwoNN dimension, the Lipschitz constant between neighbouring "
            "coordinates, entropy and local linearity, each beside the same statistic on the "
            "weights shuffled and on Gaussian weights of the same variance and shape; a DNA "
            "at the seed's ratio on a few tensors. Then a verdict (holds / fails / "
            "inconclusive) on each of the seed's claims, with its evidence. Then the structure "
            "lenses, each beside three nulls (shuffled, Gaussian, shuffled within rows): energy "
            "of the DCT and DFT along rows and columns (and within conv windows), Kronecker "
            "separability, low rank, smoothness of conv windows, the column cloud, rows "
            "repeated across tensors; and a structure map that ranks the tensors by how far a "
            "lens sets them apart from the nulls, names the lens and estimates the bits the "
            "structure would save.\n\n" + ABOUT_SEED
        ),
        epilog=examples(
            "weightdna analyze digits_cnn.safetensors --report report.html",
            "weightdna analyze model.safetensors --tensors 'encoder.layer.0.*' --json out.json",
            "weightdna analyze model.safetensors --dna-tensors 0 --json -   # JSON only, no DNA",
            "weightdna analyze model.safetensors --lenses-only   # the structure map alone, fast",
        ),
    )
    parser.add_argument("model", help="model file or Hugging Face model folder")
    parser.add_argument("--json", metavar="OUT.json",
                        help="write the results as JSON to this file ('-': to stdout, no table)")
    parser.add_argument("--report", metavar="REPORT.html",
                        help="write a self-contained HTML report (tables and figures)")
    parser.add_argument("--tensors", action="append", default=[], metavar="GLOB",
                        help="analyse only tensors matching this glob (repeatable)")
    defaults = AnalysisSettings()
    parser.add_argument("--max-rows", type=int, default=defaults.max_rows, metavar="N",
                        help=f"rows sampled from a large tensor (default {defaults.max_rows})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the samples and the null baselines")
    parser.add_argument("--dna-tensors", type=int, default=defaults.dna_tensors, metavar="N",
                        help="tensors, evenly spaced through the model, to fit a DNA to "
                             f"(default {defaults.dna_tensors}; 0: none)")
    parser.add_argument("--dna-steps", type=int, default=defaults.dna_steps, metavar="N",
                        help=f"optimizer steps per DNA (default {defaults.dna_steps})")
    parser.add_argument("--lenses-only", action="store_true",
                        help="only the structure lenses and map: none of the seed's estimators "
                             "and no verdict on its claims (much faster)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from weightdna.analysis.run import analyze_weights
    from weightdna.analysis.settings import ABOUT_SEED, AnalysisSettings
    from weightdna.weights import load_weights

    json_path = None
    if args.json and args.json != "-":
        json_path = check_output(args.json, args.force, {".json": "JSON"})
    report_path = None
    if args.report:
        report_path = check_output(args.report, args.force, {".html": "an HTML report"})
    if args.max_rows < 1 or args.dna_tensors < 0 or args.dna_steps < 1:
        raise InvalidInputError("--max-rows and --dna-steps must be positive, --dna-tensors ≥ 0")
    settings = AnalysisSettings(max_rows=args.max_rows, seed=args.seed,
                                dna_tensors=args.dna_tensors, dna_steps=args.dna_steps,
                                seed_claims=not args.lenses_only)
    weights = load_weights(args.model)
    with job_progress() as bar:
        task = bar.add_task("analyse", total=None)

        def report(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"analyse: {label}")

        # The estimators meet degenerate inputs (repeated rows, few-level weights) and show
        # those estimates as undefined with the reason; numpy's warnings about them would
        # only repeat that, as noise, so they are counted here rather than printed.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            analysis = analyze_weights(weights, args.tensors or None, settings, report)
    numerical = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    for w in caught:
        if w not in numerical:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if numerical:
        err_console.print(f"[dim]{len(numerical)} numerical warning(s) of the estimators not "
                          "shown; their estimates are marked undefined where degenerate[/]",
                          highlight=False)

    if report_path is not None:
        from weightdna.report import render_analysis_html

        write_text_atomic(report_path, render_analysis_html(analysis))
    text = json.dumps(analysis.as_dict(), indent=1, ensure_ascii=False) + "\n"
    if args.json == "-":
        console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return 0
    if json_path is not None:
        write_text_atomic(json_path, text)
    if settings.seed_claims:
        table, notes = _tensor_table(analysis)
        print_table(table)
        for reason, mark in notes.items():
            console.print(f"undefined{mark}: {reason}", highlight=False, markup=False)
        print_table(_claims_table(analysis))
        console.print(ABOUT_SEED, highlight=False)
    _print_structure(analysis)
    console.print(
        f"{len(analysis.tensors)} tensors analysed, {len(analysis.skipped)} skipped, "
        f"in {analysis.seconds:.1f} s", highlight=False,
    )
    for path, what in ((json_path, "json"), (report_path, "report")):
        if path is not None:
            console.print(f"{what}: {path}", highlight=False)
    return 0


def _value(t: TensorAnalysis, stat: str, which: str, notes: dict[str, str],
           digits: str = ".3g") -> str:
    """A value, or "undefined" with its reason numbered into ``notes`` (reason → mark)."""
    reason = t.undefined(stat, which)
    if reason is None:
        return format(t.value(stat, which), digits)
    mark = notes.setdefault(reason, f"[{len(notes) + 1}]")
    return f"undefined{mark}"


def _tensor_table(analysis: ModelAnalysis) -> tuple[Table, dict[str, str]]:
    """The table, and why each "undefined" in it is (reason → its mark)."""
    table = Table(title=f"{analysis.path}: per tensor (weights | null)")
    table.add_column("tensor", overflow="fold")
    table.add_column("matrix")
    table.add_column("rows used", justify="right")
    columns = (
        ("k95/D | Gauss", "pca_k95_fraction", "gaussian"),
        ("local dim | Gauss", "local_dimension", "gaussian"),
        ("corr dim | Gauss", "correlation_dimension", "gaussian"),
        ("Lipschitz med | shuf", "lipschitz_median", "shuffled"),
        ("R² | shuf", "local_linearity_r2", "shuffled"),
        ("H/H_Gauss", "entropy_ratio", "weights"),
    )
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    notes: dict[str, str] = {}
    for t in analysis.tensors:
        cells = [f"{_value(t, stat, 'weights', notes)} | {_value(t, stat, null, notes)}"
                 for _, stat, null in columns[:-1]]
        cells.append(_value(t, "entropy_ratio", "weights", notes, ".3f"))
        table.add_row(t.name, f"{t.rows}×{t.columns}", str(t.sample_rows), *cells)
    return table, notes


def _claims_table(analysis: ModelAnalysis) -> Table:
    from weightdna.analysis.claims import FAILS, HOLDS, INCONCLUSIVE

    verdict_style = {HOLDS: "bold green", FAILS: "bold red", INCONCLUSIVE: "bold yellow"}
    table = Table(title="the seed's claims")
    table.add_column("claim", overflow="fold")
    table.add_column("seed's number")
    table.add_column("verdict")
    table.add_column("evidence", overflow="fold")
    for c in analysis.claims:
        table.add_row(c.claim, c.seed_number, f"[{verdict_style[c.verdict]}]{c.verdict}[/]",
                      c.evidence)
    return table


SHOWN_UNSTRUCTURED = 5


def _print_structure(analysis: ModelAnalysis) -> None:
    """The structure map (structured tensors, then the few closest to it) and its summary."""
    from weightdna.analysis.structure import RULE, STRUCTURED, summary_sentences

    entries = analysis.structure
    found = [s for s in entries if s.verdict == STRUCTURED]
    shown = found + [s for s in entries if s.verdict != STRUCTURED][:SHOWN_UNSTRUCTURED]
    table = Table(title="structure map: tensors by how far a lens sets them apart from the nulls")
    table.add_column("tensor", overflow="fold")
    table.add_column("verdict")
    table.add_column("lens", overflow="fold")
    table.add_column("weights | strongest null", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("bits saved", justify="right")
    for s in shown:
        f = s.best
        if f is None:
            table.add_row(s.tensor, s.verdict, "–", "–", "–", "–")
            continue
        style = "bold green" if s.verdict == STRUCTURED else "dim"
        table.add_row(
            s.tensor, f"[{style}]{s.verdict}[/]", f.lens.name,
            f"{f.value.value:.3g} | {f.null_value.value:.3g} ({f.null})", f"{f.ratio:.3g}",
            f"{f.bits_saved:,.0f}" if s.verdict == STRUCTURED else "–",
        )
    print_table(table)
    hidden = len(entries) - len(shown)
    if hidden:
        console.print(f"{hidden} more tensors like the nulls: every lens of every tensor is "
                      "in --json (structure_map)", highlight=False)
    for line in summary_sentences(entries):
        console.print(line, highlight=False, markup=False)
    console.print(f"[dim]rule: {RULE}[/]", highlight=False)
