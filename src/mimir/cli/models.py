"""``mimir models``: configured models, which roles use them, estimates and measured sizes."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mimir.cli.context import state
from mimir.cli.memory import measured_history, record_history
from mimir.errors import MimirError
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


def model_rows(app, *, load: bool = False) -> list[dict[str, Any]]:
    manager = app.manager
    measured: dict[str, int] = {}
    if load:
        record_history(app)  # the loads below are stored, so later runs show their sizes
        for model_id in manager.specs:
            with manager.use(model_id):
                pass
            resident = manager.status().get(model_id)
            if resident is not None:
                measured[model_id] = resident.measured_bytes
    status = manager.status()
    history = measured_history(app)  # last measured load per model, from earlier runs
    rows = []
    for model_id, spec in manager.specs.items():
        error = None
        estimate = None
        try:
            estimate = manager.estimate(model_id)
        except MimirError as exc:
            error = str(exc)
        resident = status.get(model_id)
        rows.append(
            {
                "id": model_id,
                "backend": spec.backend,
                "roles": [role for role, mid in app.settings.roles.items() if mid == model_id],
                "source": spec.source.describe(),
                "context_length": spec.context_length,
                "device": estimate.device if estimate else None,
                "estimate_bytes": estimate.total_bytes if estimate else None,
                "estimate_parts": {
                    "weights_bytes": estimate.weights_bytes,
                    "kv_cache_bytes": estimate.kv_cache_bytes,
                    "overhead_bytes": estimate.overhead_bytes,
                }
                if estimate
                else None,
                "measured_bytes": resident.measured_bytes
                if resident
                else measured.get(model_id, history[model_id].measured_bytes if model_id in history else None),
                # Where measured_bytes comes from: the resident model, or the last load on record.
                "measured_from": "resident" if resident else ("history" if model_id in history else None),
                "resident": resident is not None,
                "in_use": resident.in_use if resident else 0,
                "pinned": spec.pinned,
                "error": error,
            }
        )
    return rows
