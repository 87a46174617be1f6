"""``mimir sessions``: list, show and delete saved tutoring sessions."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console
from rich.table import Table

from mimir.cli.context import state

sessions_app = typer.Typer(help="List, show and delete saved tutoring sessions.", no_args_is_help=True)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


@sessions_app.command("list")
def list_sessions(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", min=1, help="Most sessions to show, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Sessions, most recently used first."""
    items = state(ctx).app().conversations.list_sessions(limit)
    if as_json:
        typer.echo(json.dumps([s.__dict__ for s in items], indent=2))
        return
    owners = {u.id: u.name for u in state(ctx).app().accounts.list_users()}
    table = Table(title="Sessions")
    for col in ("id", "title", "turns", "updated", "owner"):
        table.add_column(col)
    for s in items:
        owner = "local" if s.owner_id is None else owners.get(s.owner_id, "(removed user)")
        table.add_row(s.id, s.title, str(s.turn_count), _when(s.updated_at), owner)
    Console().print(table)


@sessions_app.command("show")
def show_session(
    ctx: typer.Context,
    session_id: str = typer.Argument(..., help="Session id (see `mimir sessions list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A session's turns: messages, answers, flags and status."""
    store = state(ctx).app().conversations
    info = store.get_session(session_id)
    turns = store.turns(session_id)
    if as_json:
        typer.echo(json.dumps({"session": info.__dict__, "turns": [t.__dict__ for t in turns]}, indent=2))
        return
    console = Console(highlight=False)
    console.print(f"[bold]{info.title}[/] ({info.id}, {info.turn_count} turns)")
    for t in turns:
        console.print(f"\n[bold green]#{t.seq} you:[/] {t.user_message}")
        if t.status == "failed":
            console.print(f"[bold red]failed:[/] {t.error}")
        else:
            console.print(f"[bold blue]mimir:[/] {t.response}")
        console.print(f"[dim]{t.id} · {', '.join(t.flags)}" + (f" · chart {t.tool_output_path}" if t.tool_output_path else "") + "[/]")


@sessions_app.command("delete")
def delete_session(
    ctx: typer.Context,
    session_id: str = typer.Argument(..., help="Session id to delete, with all its turns."),
) -> None:
    """Delete a session with its turns, their telemetry and their chart files."""
    from mimir.storage.audit import cli_actor

    app = state(ctx).app()
    gone = app.conversations.erase_session(session_id, charts_dir=app.settings.home / "charts")
    app.audit.record(cli_actor(), "session.delete", session_id,
                     {"turns": gone.turns, "telemetry_steps": gone.telemetry_steps, "charts": gone.charts})
    typer.echo(f"deleted session {session_id} ({gone.turns} turns, {gone.telemetry_steps} telemetry steps, "
               f"{gone.charts} chart files)")
