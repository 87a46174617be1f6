"""One SQLite file under ``MIMIR_HOME``, migrated on open.

Use::

    db = Database.open(settings.db_path)          # creates, checks, migrates
    with db.write() as conn:                      # one transaction (BEGIN IMMEDIATE)
        conn.execute("INSERT INTO ...", (...))
    rows = db.read("SELECT ... WHERE x = ?", (1,))
    db.close()

Rules it keeps:

- **fails at start, clearly**: a directory that cannot be created or written, a disk that is
  full, or a file that is not a database raises :class:`~mimir.errors.StorageError` from
  :meth:`Database.open`, never later as a silent loss;
- **WAL journal**, so readers in other processes (``mimir memory`` while the app runs) never
  block the writer; a busy timeout lets several processes share the file;
- **migrations** are the ordered list in :mod:`mimir.storage.migrations`; each runs in one
  transaction together with its row in ``_migrations``, so a crash never leaves half of one;
- **every write is one transaction**: :meth:`Database.write` commits on success and rolls
  back on any exception.

Locking: ``_lock`` (an RLock) serialises every use of the one connection, which is opened
with ``check_same_thread=False`` so the telemetry writer thread and request threads can share
it. Other processes are kept apart by SQLite's own file locks.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mimir.errors import StorageError
from mimir.units import format_bytes

#: Refuse to open a database on a disk with less free space than this.
MIN_FREE_BYTES = 8 * 1024 * 1024
BUSY_TIMEOUT_S = 10.0

Migration = Callable[[sqlite3.Connection], None]


class Database:
    """An open, migrated SQLite database. Thread-safe; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self._closed = False

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        migrations: Sequence[tuple[str, Migration]] | None = None,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> Database:
        """Create the directory and file if needed, check they are usable, and migrate."""
        from mimir.storage.migrations import MIGRATIONS

        path = Path(path).expanduser()
        _check_directory(path, min_free_bytes)
        try:
            conn = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(str(path), f"cannot open: {exc}") from None
        conn.row_factory = sqlite3.Row
        db = cls(path, conn)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(str(path), f"cannot switch to WAL journal mode (got '{mode}')")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            db.migrate(MIGRATIONS if migrations is None else migrations)
        except StorageError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(str(path), _explain(exc)) from None
        return db

    def migrate(self, migrations: Sequence[tuple[str, Migration]]) -> list[str]:
        """Apply the migrations not yet recorded, in order. Returns the names applied now."""
        names = [name for name, _ in migrations]
        if len(set(names)) != len(names):
            raise StorageError(str(self.path), "two migrations share a name")
        applied_now: list[str] = []
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            for name, fn in migrations:
                # Checked inside the transaction: another process may be migrating too.
                with self.write() as conn:
                    done = conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone()
                    if done:
                        continue
                    fn(conn)
                    conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
                    applied_now.append(name)
        return applied_now

    # -- use -----------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back on error.

        Nested use joins the outer transaction (the lock is reentrant).
        """
        with self._lock:
            self._check_open()
            if self._conn.in_transaction:
                yield self._conn
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(str(self.path), _explain(exc)) from None
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StorageError(str(self.path), _explain(exc)) from None

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    def applied_migrations(self) -> list[str]:
        return [r["name"] for r in self.read("SELECT name FROM _migrations ORDER BY rowid")]

    def close(self) -> None:
        """Checkpoint and close. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(str(self.path), "the database is closed")


def _check_directory(path: Path, min_free_bytes: int) -> None:
    """Raise StorageError now for anything that would make later writes fail."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(str(path), f"cannot create directory {directory}: {exc.strerror or exc}") from None
    if path.exists() and not path.is_file():
        raise StorageError(str(path), "the path exists and is not a file")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StorageError(str(path), f"directory {directory} is not writable")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(str(path), "the file is not readable and writable")
    # A real write, since access() says yes to root on read-only mounts.
    probe = directory / f".mimir-write-check-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"ok")
    except OSError as exc:
        raise StorageError(str(path), f"directory {directory} is not writable: {exc.strerror or exc}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(directory).free
    if free < min_free_bytes:
        raise StorageError(
            str(path),
            f"the disk holding {directory} is full ({format_bytes(free)} free, "
            f"need at least {format_bytes(min_free_bytes)})",
        )


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return f"the database is read-only ({text})"
    if "full" in text:
        return f"the disk is full ({text})"
    if "not a database" in text:
        return f"the file is not a SQLite database ({text})"
    return text
