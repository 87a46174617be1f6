"""``mimir chat``: an interactive tutoring session with streamed answers."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.console import Console

from mimir.cli.ask import print_footer
from mimir.cli.context import state
from mimir.errors import MimirError

HELP = "Commands: /new starts a new session, /quit (or Ctrl-D) leaves."


def chat(
    ctx: typer.Context,
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Resume this session."),
) -> None:
    """Talk with the tutor; each answer streams, and the session is saved as you go."""
    app = state(ctx).app()
    tutor = app.tutor
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if session is not None:
        info = app.conversations.get_session(session)
        console.print(f"[dim]resuming '{info.title}' ({info.turn_count} turns)[/]")
    console.print(f"[dim]Mimir tutor. {HELP}[/]")
    while True:
        try:
            message = console.input("[bold green]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            break
        command = message.strip().lower()
        if command in {"/quit", "/exit"}:
            break
        if command == "/new":
            session = None
            console.print("[dim]new session[/]")
            continue
        if not command:
            continue
        console.print("[bold blue]mimir>[/] ", end="")
        try:
            result = tutor.run_turn(
                message,
                session,
                on_token=lambda t: (sys.stdout.write(t), sys.stdout.flush()),
                on_status=lambda t: err.print(f"[dim]{t}[/]"),
            )
        except MimirError as exc:  # the session stays usable; the failed turn is stored
            console.print()
            err.print(f"[bold red]error:[/] {exc}")
            continue
        session = result.session_id
        console.print()
        print_footer(result)
    app.telemetry.flush()
