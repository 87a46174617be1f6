"""The database: one SQLite file under ``MIMIR_HOME`` (default) or a PostgreSQL server, migrated on open.

Use::

    db = Database.open(settings_target)           # a StorageTarget, a file path or a URL
    with db.write() as conn:                      # one transaction
        conn.execute("INSERT INTO ... VALUES (?, ?)", (...))
    rows = db.read("SELECT ... WHERE x = ?", (1,))
    db.transact(lambda conn: ...)                 # a write retried (with backoff) if the server connection drops
    db.close()

SQL is written once, in the portable subset both engines share, with ``?`` placeholders;
:mod:`mimir.storage.dialect` adapts it for PostgreSQL. Rules both engines keep:

- **fails at start, clearly**: a directory that cannot be created or written, a full disk,
  a file that is not a database, or a server that cannot be reached raises
  :class:`~mimir.errors.StorageError` from :meth:`Database.open`, never later as a silent loss;
- **migrations** are the ordered list in :mod:`mimir.storage.migrations`; each runs in one
  transaction together with its row in ``_migrations``, so a crash never leaves half of one;
  processes that start together serialise on a lock (SQLite's write lock, a PostgreSQL
  advisory lock), so exactly one applies each migration and the others wait;
- **every write is one transaction**: :meth:`Database.write` commits on success and rolls
  back on any exception; nested use joins the outer transaction.

SQLite specifics: WAL journal, so readers in other processes (``mimir memory`` while the app
runs) never block the writer; a busy timeout lets several processes share the file. Locking:
``_lock`` (an RLock) serialises every use of the one connection, which is opened with
``check_same_thread=False`` so the telemetry writer thread and request threads can share it.

PostgreSQL specifics are in :mod:`mimir.storage.postgres` (a connection pool; one connection
per thread's transaction).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mimir.errors import StorageError
from mimir.storage.dialect import Connection, ConnectionLost, IntegrityError
from mimir.storage.url import StorageTarget
from mimir.units import format_bytes

__all__ = ["Connection", "ConnectionLost", "Database", "IntegrityError", "Migration", "SlotLease", "SqliteDatabase"]

#: Refuse to open a database on a disk with less free space than this.
MIN_FREE_BYTES = 8 * 1024 * 1024
BUSY_TIMEOUT_S = 10.0
#: How long a write or read keeps retrying a dropped server connection before it fails.
RETRY_S = 30.0

Migration = Callable[[Connection], None]
T = TypeVar("T")


class SlotLease:
    """One held slot of :meth:`Database.try_slot`; ``release()`` (or leaving ``with``) frees it."""

    def __init__(self, key: str, slot: int, release: Callable[[], None]):
        self.key = key
        self.slot = slot
        self._release = release
        self._released = False
        self._guard = threading.Lock()

    def release(self) -> None:
        """Free the slot. Idempotent."""
        with self._guard:
            if self._released:
                return
            self._released = True
        self._release()

    def __enter__(self) -> SlotLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Database:
    """An open, migrated database (SQLite or PostgreSQL). Thread-safe."""

    engine: str = ""
    #: What may be shown of where it lives: the file path, or the URL without its password.
    label: str = ""
    retry_s: float = RETRY_S
    #: This process's name, stored with each turn and step it writes (``[storage] instance``,
    #: ``MIMIR_INSTANCE``; default: the host name).
    instance: str = ""

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        target: StorageTarget | str | os.PathLike,
        *,
        migrations: Sequence[tuple[str, Migration]] | None = None,
        min_free_bytes: int = MIN_FREE_BYTES,
        pool_size: int = 5,
        migrate: bool = True,
        instance: str | None = None,
    ) -> Database:
        """Open (creating a SQLite file if needed), check it is usable, and migrate.

        ``migrate=False`` opens without applying migrations (``mimir db check``).
        """
        from mimir.storage.migrations import MIGRATIONS

        if not isinstance(target, StorageTarget):
            target = StorageTarget.parse(target) if isinstance(target, str) else StorageTarget.sqlite(target)
        if target.engine == "postgresql":
            from mimir.storage.postgres import PostgresDatabase

            db: Database = PostgresDatabase.connect(target, pool_size=pool_size)
        else:
            db = SqliteDatabase.connect(target.path, min_free_bytes=min_free_bytes)
        db.instance = instance or socket.gethostname()
        if migrate:
            try:
                db.migrate(MIGRATIONS if migrations is None else migrations)
            except BaseException:
                db.close()
                raise
        return db

    @classmethod
    def from_settings(cls, settings, **kwargs) -> Database:
        """The database ``settings`` name (``[storage] url``, else the SQLite file under home)."""
        from mimir.storage.url import storage_target

        return cls.open(
            storage_target(settings), pool_size=settings.storage.pool_size, instance=settings.storage.instance, **kwargs
        )

    # -- migrations ----------------------------------------------------------------------
    def migrate(self, migrations: Sequence[tuple[str, Migration]]) -> list[str]:
        """Apply the migrations not yet recorded, in order. Returns the names applied now."""
        names = [name for name, _ in migrations]
        if len(set(names)) != len(names):
            raise StorageError(self.label, "two migrations share a name")
        applied_now: list[str] = []
        try:
            with self.write() as conn:
                self._lock_migrations(conn)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
                )
            for name, fn in migrations:
                with self.write() as conn:
                    # Checked under the lock: another process may be migrating too.
                    self._lock_migrations(conn)
                    if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                        continue
                    fn(conn)
                    conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
                    applied_now.append(name)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(self.label, self._explain(exc)) from None
        return applied_now

    def applied_migrations(self) -> list[str]:
        """Names recorded in ``_migrations``, in the order they were applied."""
        return [r["name"] for r in self.read("SELECT name FROM _migrations ORDER BY applied_at, name")]

    def pending_migrations(self, migrations: Sequence[tuple[str, Migration]] | None = None) -> list[str]:
        from mimir.storage.migrations import MIGRATIONS

        try:
            done = set(self.applied_migrations())
        except Exception:  # no _migrations table yet
            done = set()
        return [name for name, _ in (MIGRATIONS if migrations is None else migrations) if name not in done]

    # -- use -----------------------------------------------------------------------------
    def write(self):  # pragma: no cover - each engine defines it
        """One write transaction (a context manager yielding a :class:`Connection`)."""
        raise NotImplementedError

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list:
        """Rows of one query; retried with backoff if the server connection drops."""
        return self._retrying(lambda: self._read_once(sql, params))

    def transact(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in one write transaction, run again (with backoff) if the connection drops.

        ``fn`` must be safe to run twice: a lost connection rolls its first run back.
        """

        def once() -> T:
            with self.write() as conn:
                return fn(conn)

        return self._retrying(once)

    def _retrying(self, once: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return once()
            except ConnectionLost:
                if self._in_transaction() or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)  # the server is restarting or the network is back soon: back off
            delay = min(delay * 2, 2.0)

    def check_writable(self, timeout_s: float) -> str:  # pragma: no cover - each engine defines it
        """Whether a write transaction can start now, on a fresh connection, within ``timeout_s``.

        Returns what was checked; raises :class:`StorageError` saying why not (``/readyz``).
        """
        raise NotImplementedError

    def try_slot(self, key: str, limit: int) -> SlotLease | None:  # pragma: no cover - each engine defines it
        """Take one of ``limit`` slots named ``key`` (e.g. a user's concurrent turns), or None if all are held.

        Slots are shared by every process on this database (several ``mimir serve`` instances),
        and a process that dies frees the slots it held.
        """
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - each engine defines it
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(self.label, "the database is closed")

    # -- engine hooks ----------------------------------------------------------------------
    def _read_once(self, sql: str, params) -> list:  # pragma: no cover
        raise NotImplementedError

    def _in_transaction(self) -> bool:  # pragma: no cover
        raise NotImplementedError

    def _lock_migrations(self, conn: Connection) -> None:
        """Make concurrent migrators of this database wait for each other (inside ``conn``'s transaction)."""

    def _explain(self, exc: BaseException) -> str:
        return str(exc)


class SqliteDatabase(Database):
    """One SQLite file, one connection shared by all threads under ``_lock``."""

    engine = "sqlite"

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.label = str(path)
        self._conn = conn
        self._wrapped = Connection(conn, "sqlite", self.label)
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def connect(cls, path: str | os.PathLike, *, min_free_bytes: int = MIN_FREE_BYTES) -> SqliteDatabase:
        path = Path(path).expanduser()
        _check_directory(path, min_free_bytes)
        try:
            conn = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(str(path), f"cannot open: {exc}") from None
        conn.row_factory = sqlite3.Row
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(str(path), f"cannot switch to WAL journal mode (got '{mode}')")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
        except StorageError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(str(path), _explain(exc)) from None
        return cls(path, conn)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE): committed when the block ends, rolled back on error.

        Nested use joins the outer transaction (the lock is reentrant).
        """
        with self._lock:
            self._check_open()
            if self._conn.in_transaction:
                yield self._wrapped
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(str(self.path), _explain(exc)) from None
            try:
                yield self._wrapped
            except sqlite3.IntegrityError:
                self._rollback()
                raise  # callers catch constraint violations (a retried insert that landed)
            except sqlite3.Error as exc:
                # SQLITE_FULL, IOERR and some others roll the transaction back themselves: a
                # second ROLLBACK would fail with "cannot rollback" and hide the real cause.
                self._rollback()
                raise StorageError(str(self.path), _explain(exc)) from None
            except BaseException:
                self._rollback()
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(str(self.path), _explain(exc)) from None

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already."""
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is in trouble; the caller reports the first error

    def _read_once(self, sql: str, params) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    def _in_transaction(self) -> bool:
        return self._conn.in_transaction

    def check_writable(self, timeout_s: float) -> str:
        """``BEGIN IMMEDIATE`` on a fresh connection: a file another process holds locked fails it."""
        self._check_open()
        conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(self.label, _explain(exc)) from None
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return "a write transaction can start"

    def try_slot(self, key: str, limit: int) -> SlotLease | None:
        """Slots as lock files next to the database (``locks/``), held with ``flock``: the OS frees
        them when a process dies; every process that opens this file on this host shares them."""
        self._check_open()
        folder = self.path.parent / "locks"
        folder.mkdir(exist_ok=True)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
        for slot in range(limit):
            fd = os.open(folder / f"{digest}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return SlotLease(key, slot, lambda fd=fd: os.close(fd))
        return None

    def _explain(self, exc: BaseException) -> str:
        return _explain(exc) if isinstance(exc, sqlite3.Error) else str(exc)

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
