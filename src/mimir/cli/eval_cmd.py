"""``mimir eval``: run labelled cases and report how well the flags are decided."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mimir.cli.context import state
from mimir.tutor.evaluation import format_report, load_cases, score


def eval_cases(
    ctx: typer.Context,
    cases_file: Path = typer.Argument(..., help="JSONL file: {message, history, expect: {FLAG: bool}} per line."),
    decisions_only: bool = typer.Option(
        False, "--decisions-only", help="Run only the decision steps (fast); otherwise every case is a full turn."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run labelled cases (JSONL) and report per-flag precision and recall, accuracy and mismatches."""
    cases = load_cases(cases_file)
    app = state(ctx).app()
    tutor = app.tutor
    predicted = []
    with typer.progressbar(cases, label=f"{len(cases)} cases", file=None, hidden=as_json) as bar:
        for case in bar:
            if decisions_only:
                predicted.append(tutor.predict_flags(case.message, case.history))
            else:
                predicted.append(frozenset(tutor.run_turn(case.message, history=case.history, persist=False).flags))
    report = score(cases, predicted)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(format_report(report))
