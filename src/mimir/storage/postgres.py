"""PostgreSQL storage: the same :class:`~mimir.storage.db.Database` over psycopg 3 and a pool.

Connections: a ``psycopg_pool.ConnectionPool`` (``[storage] pool_size`` at most, checked
before each use so connections a server restart broke are replaced). A thread's write
transaction holds one pooled connection from ``write()`` to its end; reads inside it use the
same connection (they see its uncommitted rows), other reads borrow one for the query.

Migrations take ``pg_advisory_xact_lock`` inside each migration's transaction, so instances
that start together apply each migration exactly once; the others wait, then find it done.

Slots (:meth:`PostgresDatabase.try_slot`) are session advisory locks on one dedicated
connection: a crashed instance's connection closes and the server frees its slots.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mimir.errors import MissingExtraError, StorageError
from mimir.storage.db import Database, SlotLease
from mimir.storage.dialect import Connection, ConnectionLost, first_line as _first_line, row_factory, session_ended
from mimir.storage.url import StorageTarget

log = logging.getLogger(__name__)

#: The advisory lock key migrations serialise on (any fixed 64-bit number; "mimir-mg").
MIGRATION_LOCK_KEY = 0x6D696D69722D6D67
CONNECT_TIMEOUT_S = 10.0
#: How long one attempt waits for a pooled connection before it counts as a lost connection.
GETCONN_TIMEOUT_S = 5.0


class PostgresDatabase(Database):
    engine = "postgresql"

    def __init__(self, target: StorageTarget, pool: Any):
        import psycopg

        self.target = target
        self.path = None
        self.label = target.label
        self._pool = pool
        self._psycopg = psycopg
        self._local = threading.local()
        self._closed = False
        self._lost = (psycopg.OperationalError, psycopg.InterfaceError)
        self._slot_lock = threading.Lock()
        self._slot_conn: Any = None
        self._held_slots: set[tuple[int, int]] = set()

    @classmethod
    def connect(cls, target: StorageTarget, *, pool_size: int = 5) -> PostgresDatabase:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool, PoolTimeout
        except ImportError:
            raise MissingExtraError("psycopg", "postgres", "PostgreSQL storage") from None
        info = target.conninfo()
        # No server-side prepared statements: a migration applied by another instance (a rolling
        # upgrade) would make a prepared ``SELECT *`` fail with "cached plan must not change
        # result type"; it also keeps connection poolers in transaction mode (PgBouncer) working.
        kwargs: dict[str, Any] = {
            "row_factory": row_factory, "connect_timeout": int(CONNECT_TIMEOUT_S), "prepare_threshold": None,
        }
        if "password" in info:
            kwargs["password"] = info["password"]
        # One direct attempt first: a refused connection, a wrong password or a missing database
        # fails now, in one line with the server's reason (the pool would only log and wait).
        try:
            psycopg.connect(info["conninfo"], **{k: v for k, v in kwargs.items() if k not in ("row_factory", "prepare_threshold")}).close()
        except psycopg.Error as exc:
            raise StorageError(target.label, f"cannot connect: {target.scrub(_first_line(exc))}") from None
        pool = ConnectionPool(
            info["conninfo"],
            kwargs=kwargs,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            check=ConnectionPool.check_connection,
            timeout=GETCONN_TIMEOUT_S,
            name="mimir-db",
        )
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except (PoolTimeout, psycopg.Error) as exc:
            pool.close()
            raise StorageError(target.label, f"cannot connect: {target.scrub(_first_line(exc))}") from None
        return cls(target, pool)

    # -- transactions --------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction on one pooled connection; committed at the end, rolled back on error."""
        self._check_open()
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        raw = self._getconn()
        conn = self._wrap(raw)
        self._local.conn = conn
        try:
            try:
                yield conn
            except BaseException:
                self._rollback(raw)
                raise
            try:
                raw.commit()
            except self._psycopg.Error as exc:
                self._rollback(raw)
                if raw.broken or raw.closed or session_ended(exc):
                    raise ConnectionLost(self.label, f"the connection was lost at commit ({_first_line(exc)})") from None
                raise StorageError(self.label, self._explain(exc)) from None
        finally:
            self._local.conn = None
            self._pool.putconn(raw)

    def _read_once(self, sql: str, params) -> list:
        self._check_open()
        current = getattr(self._local, "conn", None)
        if current is not None:
            return current.execute(sql, params).fetchall()
        raw = self._getconn()
        try:
            rows = self._wrap(raw).execute(sql, params).fetchall()
            raw.commit()
            return rows
        except BaseException:
            self._rollback(raw)
            raise
        finally:
            self._pool.putconn(raw)

    def _in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def _lock_migrations(self, conn: Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))

    def _getconn(self) -> Any:
        from psycopg_pool import PoolTimeout

        try:
            return self._pool.getconn(timeout=GETCONN_TIMEOUT_S)
        except PoolTimeout:
            raise ConnectionLost(self.label, "no connection to the server within the timeout") from None

    def _wrap(self, raw: Any) -> Connection:
        return Connection(raw, "postgresql", self.label, integrity=(self._psycopg.IntegrityError,), lost=self._lost)

    def _rollback(self, raw: Any) -> None:
        if raw.closed or raw.broken:
            return
        try:
            raw.rollback()
        except self._psycopg.Error:
            pass

    def _explain(self, exc: BaseException) -> str:
        return self.target.scrub(_first_line(exc))

    def check_writable(self, timeout_s: float) -> str:
        """A fresh connection within ``timeout_s`` to a primary (not a read-only standby) that reads the schema."""
        self._check_open()
        psycopg = self._psycopg
        info = self.target.conninfo()
        try:
            with psycopg.connect(
                info["conninfo"], password=info.get("password"), autocommit=True, connect_timeout=max(1, round(timeout_s))
            ) as conn:
                ms = max(1, int(timeout_s * 1000))
                conn.execute(f"SET statement_timeout = {ms}")
                if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    raise StorageError(self.label, "the server is a read-only standby")
                conn.execute("SELECT COUNT(*) FROM _migrations").fetchone()
        except psycopg.Error as exc:
            raise StorageError(self.label, self._explain(exc)) from None
        return "the primary server answers and the schema is readable"

    # -- slots across instances ------------------------------------------------------------
    def try_slot(self, key: str, limit: int) -> SlotLease | None:
        """One of ``limit`` slots named ``key``, held across every instance on this database, or None.

        Session advisory locks ``(crc32(key), slot)`` on a dedicated connection; this process
        remembers what it holds, since one session may take the same advisory lock twice.
        """
        k1 = _int32(zlib.crc32(key.encode("utf-8")))
        with self._slot_lock:
            self._check_open()
            for slot in range(limit):
                if (k1, slot) in self._held_slots:
                    continue
                if self._slot_execute("SELECT pg_try_advisory_lock(%s, %s)", (k1, slot))[0]:
                    self._held_slots.add((k1, slot))
                    return SlotLease(key, slot, lambda s=slot: self._release_slot(k1, s))
        return None

    def _release_slot(self, k1: int, slot: int) -> None:
        with self._slot_lock:
            if (k1, slot) not in self._held_slots:
                return
            self._held_slots.discard((k1, slot))
            if self._closed or self._slot_conn is None:
                return
            try:
                self._slot_execute("SELECT pg_advisory_unlock(%s, %s)", (k1, slot))
            except StorageError:
                pass  # the connection is gone, and with it the lock

    def _slot_execute(self, sql: str, params: tuple) -> Any:
        psycopg = self._psycopg
        if self._slot_conn is None or self._slot_conn.closed or self._slot_conn.broken:
            if self._held_slots:
                log.warning("the slot connection to %s was lost; the server freed this instance's slots", self.label)
                self._held_slots.clear()
            info = self.target.conninfo()
            try:
                self._slot_conn = psycopg.connect(
                    info["conninfo"], password=info.get("password"), autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
                )
            except psycopg.Error as exc:
                raise ConnectionLost(self.label, f"cannot connect for a slot lock ({self._explain(exc)})") from None
        try:
            return self._slot_conn.execute(sql, params).fetchone()
        except psycopg.Error as exc:
            raise ConnectionLost(self.label, f"slot lock failed ({self._explain(exc)})") from None

    def close(self) -> None:
        """Close the pool (and the slot connection, which frees its slots). Idempotent."""
        with self._slot_lock:
            if self._closed:
                return
            self._closed = True
            if self._slot_conn is not None:
                self._slot_conn.close()
        self._pool.close()


def _int32(n: int) -> int:
    return n - (1 << 32) if n >= 1 << 31 else n
