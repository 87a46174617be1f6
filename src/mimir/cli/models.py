"""``mimir models``: configured models, which roles use them, estimates and measured sizes;
``mimir models catalog``: known-good models to pull, with the memory each needs."""

from __future__ import annotations

import json
import typer
from rich.console import Console
from rich.table import Table

from typing import Optional

from mimir.cli.context import state
from mimir.inventory import model_rows
from mimir.units import format_bytes


models_app = typer.Typer(help="Configured models (and `models catalog`: models you can pull).")


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    load: bool = typer.Option(
        False, "--load", help="Load each model once (one at a time, within the budget) to measure it."
    ),
) -> None:
    """List configured models with their memory estimate, and measured size once loaded."""
    if ctx.invoked_subcommand is not None:
        return
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


@models_app.command("catalog")
def catalog(
    ctx: typer.Context,
    context_length: Optional[int] = typer.Option(
        None, "--context", min=64, help="Context length to estimate for (default: the response model's)."
    ),
    offline: bool = typer.Option(False, "--offline", help="Do not ask the Hub for exact file sizes."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Known-good GGUF instruct models for tutoring: the memory each needs at the context
    length, and whether it fits the budget. Pull one with the command in the last column."""
    from mimir.ops.catalog import catalog_rows

    settings = state(ctx).app().settings
    ctx_len = context_length or settings.models[settings.model_for_role("response")].context_length
    rows = catalog_rows(context_length=ctx_len, budget_bytes=settings.budget.ram_bytes, online=not offline)
    if as_json:
        typer.echo(json.dumps({"context_length": ctx_len, "budget_bytes": settings.budget.ram_bytes,
                               "models": [r.to_dict() for r in rows]}, indent=2))
        return
    table = Table(title=f"Model catalogue at {ctx_len} tokens (budget {format_bytes(settings.budget.ram_bytes)} RAM)")
    for col in ("id", "params", "license", "file size", "needs", "fits", "repo"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.entry.id, r.entry.parameters_str, r.entry.license, r.size_str, format_bytes(r.estimate.total_bytes),
                      "yes" if r.fits else "no", r.entry.repo)
    Console().print(table)
    Console().print("pull one with: mimir pull REPO --file FILE --as ID (--json lists each command)", highlight=False)
    if any(not r.size_exact for r in rows):
        Console().print("(approx.): the Hub was not reachable; the size is the catalogue's, as last seen")
