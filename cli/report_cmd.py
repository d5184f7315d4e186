"""`drox report`: tables and plots over finished runs, grouped by config and aggregated over seeds.

Kept cheap to import (cli/main.py imports it at start-up): the readers and matplotlib load inside
:func:`report`. The work is done by ``drox.evaluation.aggregate`` and ``drox.evaluation.plots``;
docs/report.md describes the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    paths: List[Path] = typer.Argument(
        ..., help="Run folders, or folders holding run folders (searched recursively, e.g. multirun/<date>/<time>)."),
    group_by: Optional[str] = typer.Option(
        None, "--group-by", help="Comma-separated config keys to group runs by (default: every key whose value "
        "differs between runs, except seed, run_dir, resume, logger.*); '' puts all runs in one group."),
    metric: Optional[List[str]] = typer.Option(
        None, "--metric", help="Metrics to report, comma-separated or repeated: metrics.jsonl names "
        "(reward/mean, accuracy) and eval/<summary key> (eval/pass@1). Default: eval pass@k, maj@k, reward/mean, "
        "accuracy."),
    at_step: Optional[int] = typer.Option(
        None, "--at-step", help="Use the values logged at this step instead of each run's last ones."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: report/ in the first PATH)."),
    eval_label: Optional[str] = typer.Option(
        None, "--eval", help="Read the evaluations `drox eval --run RUN --label LABEL` wrote (RUN/evals/LABEL/) "
        "instead of those made during training (RUN/eval/)."),
) -> None:
    """Aggregate runs over seeds: table.csv, table.md (mean, std, Student-t 95% CI, n) and PNG curves."""
    from drox.cli.main import fail  # here: cli/main.py imports this module
    from drox.evaluation.aggregate import ReportError, build_report, format_markdown, parse_list_option, write_tables
    from drox.evaluation.plots import write_plots

    group_keys = None if group_by is None else parse_list_option([group_by])
    try:
        result = build_report(paths, group_by=group_keys, metrics=parse_list_option(metric), at_step=at_step,
                              eval_label=eval_label)
    except ReportError as e:
        fail(str(e))
    out_dir = out if out is not None else Path(paths[0]) / "report"
    warn = typer.style("warning:", fg=typer.colors.YELLOW, bold=True)
    for message in result.warnings:
        typer.echo(f"{warn} {message}", err=True)
    tables = write_tables(result, out_dir)
    figures = write_plots(result, out_dir)
    typer.echo(format_markdown(result), nl=False)  # plain: rich would re-wrap the Markdown table
    written = ", ".join(p.name for p in [tables["csv"], tables["md"], *figures])
    typer.echo(f"-> {out_dir} ({written})")
