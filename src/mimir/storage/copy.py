"""Copy an installation's data from one database to another (``mimir db copy``).

Plan, then execute: :func:`plan_copy` opens nothing new, it reads both schemas and the source
counts and says what would move (:class:`CopyPlan`); :meth:`CopyPlan.execute` copies every
table in one destination transaction, parents before children (foreign keys), in batches,
then counts the destination again and fails (rolling everything back) unless every row is
accounted for. The destination must be migrated and empty: a copy never merges into data.

Tables are found in the source, not listed here, so tables other features add through
migrations (users, keys, audit, ...) move too. Columns are those both sides have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mimir.errors import StorageError
from mimir.storage.db import Connection, Database

BATCH_ROWS = 1000


@dataclass(frozen=True)
class TableCopy:
    name: str
    columns: tuple[str, ...]
    source_rows: int
    copied_rows: int | None = None

    @property
    def ok(self) -> bool:
        return self.copied_rows == self.source_rows


@dataclass(frozen=True)
class CopyPlan:
    source: Database
    destination: Database
    tables: tuple[TableCopy, ...]

    @property
    def total_rows(self) -> int:
        return sum(t.source_rows for t in self.tables)

    def execute(self) -> tuple[TableCopy, ...]:
        """Copy every table in one destination transaction; returns the tables with the counts found after."""
        src, dst = self.source, self.destination
        done: list[TableCopy] = []
        with src.write() as sconn, dst.write() as dconn:  # the source write lock: a consistent snapshot
            for table in self.tables:
                _copy_rows(sconn, dconn, table)
            if dst.engine == "postgresql":
                _reset_identities(dconn, [t.name for t in self.tables])
            for table in self.tables:
                copied = dconn.execute(f'SELECT COUNT(*) FROM "{table.name}"').fetchone()[0]
                done.append(TableCopy(table.name, table.columns, table.source_rows, int(copied)))
            bad = [t for t in done if not t.ok]
            if bad:
                lines = ", ".join(f"{t.name}: {t.copied_rows} of {t.source_rows}" for t in bad)
                raise StorageError(dst.label, f"copy incomplete, nothing kept ({lines})")
        return tuple(done)


def plan_copy(source: Database, destination: Database) -> CopyPlan:
    """What ``execute`` would copy. Raises StorageError if the destination is not empty or lacks a table."""
    names = _ordered_tables(source)
    dest_tables = set(table_names(destination))
    missing = [n for n in names if n not in dest_tables]
    if missing:
        raise StorageError(
            destination.label,
            f"has no table {missing[0]}: its schema is older than the source's (upgrade Mimir there first)",
        )
    tables = []
    for name in names:
        dest_count = destination.read(f'SELECT COUNT(*) FROM "{name}"')[0][0]
        if dest_count:
            raise StorageError(destination.label, f"is not empty (table {name} has {dest_count} rows); copy only into a new database")
        dest_columns = set(column_names(destination, name))
        columns = tuple(c for c in column_names(source, name) if c in dest_columns)
        count = int(source.read(f'SELECT COUNT(*) FROM "{name}"')[0][0])
        tables.append(TableCopy(name, columns, count))
    return CopyPlan(source, destination, tuple(tables))


# -- schema introspection, per engine --------------------------------------------------------------
def table_names(db: Database) -> list[str]:
    """The data tables (not ``_migrations``, not the engine's own)."""
    if db.engine == "sqlite":
        rows = db.read("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    else:
        rows = db.read(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    return [r[0] for r in rows if r[0] != "_migrations"]


def column_names(db: Database, table: str) -> list[str]:
    if db.engine == "sqlite":
        return [r["name"] for r in db.read(f'PRAGMA table_info("{table}")')]
    return [
        r[0]
        for r in db.read(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
    ]


def _parents(db: Database, table: str) -> set[str]:
    if db.engine == "sqlite":
        return {r["table"] for r in db.read(f'PRAGMA foreign_key_list("{table}")')}
    return {
        r[0]
        for r in db.read(
            "SELECT ccu.table_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.constraint_column_usage ccu ON tc.constraint_name = ccu.constraint_name "
            "WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_name = ?",
            (table,),
        )
    }


def _ordered_tables(db: Database) -> list[str]:
    """Tables with every table after the ones its foreign keys point to."""
    names = table_names(db)
    parents = {n: _parents(db, n) - {n} for n in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:  # a cycle: keep the rest in name order
            ready = [n for n in names if n not in ordered]
        ordered.extend(ready)
    return ordered


def _copy_rows(sconn: Connection, dconn: Connection, table: TableCopy) -> None:
    if not table.columns or not table.source_rows:
        return
    cols = ", ".join(f'"{c}"' for c in table.columns)
    cursor = sconn.execute(f'SELECT {cols} FROM "{table.name}"')
    insert = f'INSERT INTO "{table.name}" ({cols}) VALUES ({", ".join("?" for _ in table.columns)})'
    while True:
        batch: Sequence = cursor.fetchmany(BATCH_ROWS)
        if not batch:
            return
        dconn.executemany(insert, [tuple(row) for row in batch])


def _reset_identities(conn: Connection, tables: Sequence[str]) -> None:
    """Explicit ids were copied into identity columns: move each sequence past the highest."""
    for table in tables:
        for (column,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND is_identity = 'YES'",
            (table,),
        ).fetchall():
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE((SELECT MAX(\"{column}\") FROM \"{table}\"), 0) + 1, false)",
                (table, column),
            )
