"""``mimir audit``: who pruned, unloaded, deleted, or changed users and keys, and when."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console
from rich.table import Table

from mimir.cli.context import state


def audit(
    ctx: typer.Context,
    limit: int = typer.Option(100, "--limit", min=1, help="Most entries to show (the newest)."),
    action: str = typer.Option(None, "--action", help="Only this action (e.g. cache.prune, user.add)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The audit log: destructive and administrative actions, oldest first."""
    entries = state(ctx).app().audit.entries(limit=limit, action=action)
    if as_json:
        typer.echo(json.dumps([e.__dict__ for e in entries], indent=2))
        return
    table = Table(title="Audit log")
    for col in ("when", "who", "action", "target", "detail", "from"):
        table.add_column(col)
    for e in entries:
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items())
        table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at)), e.actor, e.action,
                      e.target or "", detail, e.address or "")
    Console(highlight=False).print(table)
