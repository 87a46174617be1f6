"""``mimir ask``: one full tutor turn, answered with streamed tokens."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from mimir.cli.context import state
from mimir.errors import InvalidInputError
from mimir.core.records import turn_json
from mimir.tutor.pipeline import TurnResult
from mimir.tutor.summary import turn_status_line

_err = Console(stderr=True, highlight=False)


def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="The question to ask the tutor."),
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Continue this session (default: a new one)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (response, flags, steps) instead of streaming text."),
    max_tokens: Optional[int] = typer.Option(
        None, "--max-tokens", min=1, help="Most tokens in the answer (default: [tutor] response_max_tokens)."
    ),
) -> None:
    """Ask the tutor one question. The answer streams to the terminal.

    The whole pipeline runs (decisions, tool, thinking, response); every step is measured
    (time, tokens, RSS before/after/peak, GPU memory, model loads), logged with -v, and stored
    with the turn under MIMIR_HOME.
    """
    if not question.strip():
        raise InvalidInputError("the question is empty; write what you want to learn about")
    app = state(ctx).app()
    tutor = app.tutor  # opens the database now: a bad MIMIR_HOME fails before any load

    def on_token(text: str) -> None:
        if not as_json:
            sys.stdout.write(text)
            sys.stdout.flush()

    def on_status(text: str) -> None:
        if not as_json:
            _err.print(f"[dim]{text}[/]")

    result = tutor.run_turn(question, session, on_token=on_token, on_status=on_status, max_tokens=max_tokens)
    app.telemetry.flush()
    if as_json:
        typer.echo(json.dumps(result_json(result)))
        return
    sys.stdout.write("\n")
    print_footer(result)


def result_json(result: TurnResult) -> dict:
    out = turn_json(
        result.telemetry,
        result.response,
        flags=list(result.flags),
        chart_path=result.chart_path,
        chart_description=result.chart_description,
        notices=list(result.notices),
        finish_reason=result.finish_reason,
    )
    out["session"], out["turn"] = result.session_id, result.turn_id
    return out


def print_footer(result: TurnResult) -> None:
    """One dim status line (the web app's: time, tokens, segments, peak memory), and notices."""
    if result.chart_path:
        _err.print(f"[cyan]chart:[/] {result.chart_path}")
    for notice in result.notices:
        _err.print(f"[yellow]note:[/] {notice}")
    _err.print(f"[dim]{escape(turn_status_line(result))} · session {result.session_id}[/]")
