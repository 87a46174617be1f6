"""``mimir memory``: what each step of recent turns cost, from the telemetry store."""

from __future__ import annotations

import csv
import json
import sys
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from mimir.cli.context import state
from mimir.errors import NotFoundError
from mimir.storage.telemetry_store import TelemetryStore
from mimir.core.records import STEP_CSV_COLUMNS, StepRecord

#: Columns of ``--csv``, in order (events joined with "; "): the step record's, then the
#: instance that stored the step.
CSV_COLUMNS: tuple[str, ...] = STEP_CSV_COLUMNS + ("instance",)


def memory(
    ctx: typer.Context,
    turn: Optional[str] = typer.Option(None, "--turn", help="Show the steps of this turn id only."),
    last: int = typer.Option(5, "--last", "-n", min=1, help="How many recent turns to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
) -> None:
    """Show the memory each step of recent turns took: time, RSS after, peak, delta, model events."""
    app = state(ctx).app()
    store = TelemetryStore(app.db)
    steps = store.recent_steps(last_turns=last, turn_id=turn)
    if turn is not None and not steps:
        raise NotFoundError(f"no telemetry recorded for turn '{turn}'")
    instances = store.step_instances([s.step_id for s in steps])
    if as_json:
        typer.echo(json.dumps({"steps": [{**s.to_dict(), "instance": instances.get(s.step_id)} for s in steps]}, indent=2))
        return
    if as_csv:
        write_csv(steps, sys.stdout, instances)
        return
    console = Console()
    if not steps:
        console.print(f"No steps recorded yet in {app.db.label}. Run [bold]mimir ask[/] first.")
        return
    # Which instance ran each turn matters once several share the database.
    shown = instances if app.db.engine == "postgresql" or len(set(instances.values())) > 1 else None
    console.print(steps_table(steps, title=f"Memory per step ({app.db.label})", instances=shown))


def steps_table(
    steps: list[StepRecord], *, title: str | None = None, instances: dict[str, str | None] | None = None
) -> Table:
    """One row per step; a rule between turns. The GPU column appears when a step has GPU data;
    the instance column when ``instances`` (step id -> instance) is given."""
    show_gpu = any(s.gpu_str != "-" for s in steps)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    columns = [("turn", "left")] + ([("instance", "left")] if instances is not None else []) + [("step", "left"), ("model", "left"), ("time", "right"), ("RSS after", "right")]
    columns += [("peak", "right"), ("delta", "right")] + ([("GPU", "right")] if show_gpu else []) + [("events", "left")]
    for col, justify in columns:
        numeric = justify == "right"
        table.add_column(
            col, justify=justify, overflow="fold", no_wrap=numeric, min_width=16 if col == "events" else None
        )  # type: ignore[arg-type]
    for i, s in enumerate(steps):
        key = (s.session_id, s.turn_id)
        first = i == 0 or s.turn_id is None or (steps[i - 1].session_id, steps[i - 1].turn_id) != key
        last_of_turn = i + 1 == len(steps) or s.turn_id is None or (steps[i + 1].session_id, steps[i + 1].turn_id) != key
        name = s.name if not s.agent or s.agent == s.name else f"{s.name} ({s.agent})"
        row = [(s.turn_id or "-")[:8] if first else ""]
        if instances is not None:
            row.append((instances.get(s.step_id) or "-") if first else "")
        row += [
            name + (" [red]error[/]" if s.error else ""),
            s.model or "-",
            f"{s.wall_s:.2f}s",
            s.rss_after_str,
            s.rss_peak_str,
            s.rss_delta_str,
        ]
        row += [s.gpu_str] if show_gpu else []
        row.append(s.events_str)
        table.add_row(*row, end_section=last_of_turn)
    return table


def write_csv(steps: list[StepRecord], out, instances: dict[str, str | None] | None = None) -> None:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for s in steps:
        data = {**s.to_dict(), "instance": (instances or {}).get(s.step_id)}
        data["events"] = "; ".join(
            f"{e.kind} {e.model_id} measured={e.measured_bytes} estimate={e.estimate_bytes}" for e in s.events
        )
        writer.writerow(["" if data[c] is None else data[c] for c in CSV_COLUMNS])


