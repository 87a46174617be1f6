"""``mimir db``: apply migrations, check the database, copy an installation into PostgreSQL.

The database is the one the settings name (``[storage] url`` / ``MIMIR_DATABASE_URL``, else
``$MIMIR_HOME/mimir.db``). Every URL printed has its password redacted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mimir.cli.context import state
from mimir.errors import StorageError

db_app = typer.Typer(help="Apply migrations, check the database, copy data into PostgreSQL.", no_args_is_help=True)


def _open(ctx: typer.Context, *, migrate: bool):
    from mimir.storage.db import Database

    settings = state(ctx).app().settings
    return Database.from_settings(settings, migrate=migrate)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Apply the migrations this database has not had yet (the app also does this when it starts)."""
    from mimir.storage.migrations import MIGRATIONS

    with _open(ctx, migrate=False) as db:
        applied = db.migrate(MIGRATIONS)
        total = len(db.applied_migrations())
        if applied:
            for name in applied:
                typer.echo(f"applied {name}")
            typer.echo(f"{db.label}: {len(applied)} migration(s) applied, {total} in all")
        else:
            typer.echo(f"{db.label}: up to date ({total} migrations)")


@db_app.command("check")
def check(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Connectivity, server version, schema version and pending migrations; exit 8 if unusable."""
    started = time.perf_counter()
    with _open(ctx, migrate=False) as db:
        connect_s = time.perf_counter() - started
        writable = db.check_writable(5.0)
        if db.engine == "sqlite":
            version = f"SQLite {sqlite3.sqlite_version}"
        else:
            version = "PostgreSQL " + str(db.read("SHOW server_version")[0][0])
        applied = db.applied_migrations() if _has_migrations_table(db) else []
        pending = db.pending_migrations()
    report = {
        "database": db.label,
        "engine": db.engine,
        "server": version,
        "connect_s": round(connect_s, 4),
        "writable": writable,
        "schema_version": applied[-1] if applied else None,
        "applied": len(applied),
        "pending": pending,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"database   {db.label}")
    typer.echo(f"server     {version} (connected in {connect_s * 1000:.0f} ms; {writable})")
    typer.echo(f"schema     {report['schema_version'] or '(empty)'} ({len(applied)} migrations applied)")
    if pending:
        typer.echo(f"pending    {len(pending)}: {', '.join(pending)} (run `mimir db upgrade`, or start the app)")
    else:
        typer.echo("pending    none")


@db_app.command("copy")
def copy(
    ctx: typer.Context,
    source: Path = typer.Option(..., "--from", help="The SQLite file to copy from (e.g. ~/.mimir/mimir.db)."),
    to: str = typer.Option(
        None, "--to", help="postgresql:// URL of the new, empty database (default: the configured [storage] url)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be copied; copy nothing."),
) -> None:
    """Copy every row of an existing installation into a new database, and check every row arrived.

    The destination is migrated first and must be empty. The copy is one transaction: if any
    table's count differs afterwards, nothing is kept (exit 8). Passwords come from
    MIMIR_DATABASE_PASSWORD, [storage] password_file or ~/.pgpass, never from the command line.
    """
    from mimir.storage.copy import plan_copy
    from mimir.storage.db import Database
    from mimir.storage.url import StorageTarget, storage_target

    source = source.expanduser()
    if not source.is_file():
        raise StorageError(str(source), "no such SQLite file")
    settings = state(ctx).app().settings
    if to is None:
        target = storage_target(settings)
        if target.engine != "postgresql":
            raise StorageError("--to", "give a postgresql:// URL, or set [storage] url / MIMIR_DATABASE_URL")
    else:
        try:
            configured = storage_target(settings) if settings.storage.url else None
            password = configured.password if configured is not None else None
            target = StorageTarget.parse(to, password=password)
        except ValueError as exc:
            raise StorageError("--to", str(exc)) from None
    if target.engine == "sqlite" and target.path == source:
        raise StorageError(str(source), "source and destination are the same file")
    with Database.open(source) as src, Database.open(target, pool_size=2) as dst:
        plan = plan_copy(src, dst)
        table = Table(title=f"{src.label} -> {dst.label}")
        for col in ("table", "source rows", "copied rows", ""):
            table.add_column(col, justify="right" if "rows" in col else "left")
        if dry_run:
            for t in plan.tables:
                table.add_row(t.name, str(t.source_rows), "-", "")
            Console().print(table)
            typer.echo(f"dry run: {plan.total_rows} rows in {len(plan.tables)} tables would be copied")
            return
        done = plan.execute()
        for t in done:
            table.add_row(t.name, str(t.source_rows), str(t.copied_rows), "ok" if t.ok else "MISSING")
        Console().print(table)
        typer.echo(f"copied {sum(t.copied_rows or 0 for t in done)} of {plan.total_rows} rows in {len(done)} tables: every row accounted for")


def _has_migrations_table(db) -> bool:
    try:
        db.read("SELECT COUNT(*) FROM _migrations")
        return True
    except Exception:
        return False
