"""``mimir models``: configured models, which roles use them, estimates and measured sizes."""

from __future__ import annotations

import json
import typer
from rich.console import Console
from rich.table import Table

from mimir.cli.context import state
from mimir.inventory import model_rows
from mimir.units import format_bytes


def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    load: bool = typer.Option(
        False, "--load", help="Load each model once (one at a time, within the budget) to measure it."
    ),
) -> None:
    """List configured models with their memory estimate, and measured size once loaded."""
    app = state(ctx).app()
    manager = app.manager
    rows = model_rows(app, load=load)
    status = manager.status()
    if as_json:
        payload = {
            "budget": {
                "ram_bytes": status.budget_ram_bytes,
                "ram_setting": app.settings.budget.ram_setting,
                "gpu_bytes": status.budget_gpu_bytes,
                "keep_alive_s": app.settings.keep_alive_s,
            },
            "roles": dict(app.settings.roles),
            "models": rows,
            "counters": {
                "loads": status.loads,
                "evictions": status.evictions,
                "unloads": status.unloads,
                "load_failures": status.load_failures,
            },
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    console = Console()
    table = Table(title=f"Models (budget {format_bytes(status.budget_ram_bytes)} RAM"
                  + (f", {format_bytes(status.budget_gpu_bytes)} GPU" if status.budget_gpu_bytes else "") + ")")
    for col in ("id", "backend", "roles", "source", "ctx", "estimate", "measured", "resident"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["id"],
            r["backend"],
            ", ".join(r["roles"]) or "-",
            r["source"],
            str(r["context_length"]),
            r["error"] or format_bytes(r["estimate_bytes"]),
            format_bytes(r["measured_bytes"]) + (" (last run)" if r["measured_from"] == "history" else ""),
            "yes" if r["resident"] else "no",
        )
    console.print(table)
