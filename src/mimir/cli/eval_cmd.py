"""``mimir eval``: run labelled cases and report how well the flags are decided, or, with
``--quality``, how right the tutor's math is (verdicts, leaks, false equalities, repeats)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mimir.cli.context import state
from mimir.mathcheck.worker import CouldNotCheck
from mimir.tutor.evaluation import format_report, load_cases, score
from mimir.tutor.quality import QualityCase, format_quality, load_quality_cases, run_quality


def eval_cases(
    ctx: typer.Context,
    cases_file: Path = typer.Argument(
        ..., help="JSONL file: {message, history, expect: {FLAG: bool}} per line (with --quality: {kind, message, history, expect})."
    ),
    decisions_only: bool = typer.Option(
        False, "--decisions-only", help="Run only the decision steps (fast); otherwise every case is a full turn."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quality: bool = typer.Option(
        False, "--quality", help="Quality cases: verdicts on student answers and full answers checked for leaks, "
        "false equalities and repeated sentences (docs/math.md)."
    ),
) -> None:
    """Run labelled cases (JSONL) and report per-flag precision and recall, accuracy and mismatches.
    With --quality: verdict accuracy, confidently wrong verdicts, leak rate, false equalities
    and repeated sentences."""
    if quality:
        _eval_quality(ctx, cases_file, as_json)
        return
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


def _eval_quality(ctx: typer.Context, cases_file: Path, as_json: bool) -> None:
    cases = load_quality_cases(cases_file)
    tutor = state(ctx).app().tutor

    def respond(case: QualityCase) -> str:
        return tutor.run_turn(case.message, history=case.history, persist=False).response

    def false_equalities(case: QualityCase, response: str) -> int:
        question = next((m.content for m in reversed(case.history) if m.role == "assistant"), None)
        try:
            return tutor.math.count_false(response, case.message, question)
        except CouldNotCheck as exc:
            typer.echo(f"case at line {case.line}: could not check the response's equalities ({exc})", err=True)
            return 0

    with typer.progressbar(length=len(cases), label=f"{len(cases)} quality cases", hidden=as_json) as bar:
        report = run_quality(
            cases,
            verdict=lambda case: tutor.check_verdict(case.message, case.history),
            respond=respond,
            false_equalities=false_equalities,
            progress=lambda index: bar.update(1),
        )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(format_quality(report))
