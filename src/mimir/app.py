"""The application object the edges (CLI, web UI, HTTP API) share.

``MimirApp`` reads the settings once per process start and builds the long-lived parts
lazily: the model manager now; telemetry, storage and the tutor hang off it as they are
needed. Edges call it; it never calls the edges.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mimir.config import Settings, load_settings
from mimir.runtime.manager import ModelManager

if TYPE_CHECKING:
    from mimir.runtime.admission import Admission
    from mimir.storage.accounts import AccountStore
    from mimir.storage.audit import AuditLog
    from mimir.runtime.runner import Runner
    from mimir.storage.conversations import ConversationStore
    from mimir.storage.db import Database
    from mimir.storage.spool import ReplayReport, Spool
    from mimir.tutor.pipeline import Tutor
    from mimir.telemetry.recorder import Telemetry

log = logging.getLogger(__name__)


class _built_once(cached_property):
    """``cached_property`` that builds under the app's lock, so two threads (web requests)
    asking at once get the same manager or database, never two (3.12 dropped the lock
    ``cached_property`` had)."""

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        with instance._lock:
            return super().__get__(instance, owner)


class MimirApp:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.RLock()  # reentrant: building telemetry builds the db
        #: The Prometheus registry /metrics serves (a ``mimir.ops.metrics.ServerMetrics``), once
        #: the HTTP server installed it. Not typed by import: ``ops`` sits above the app.
        self.server_metrics: Any = None

    @classmethod
    def from_config(cls, config: str | os.PathLike | None = None) -> MimirApp:
        return cls(load_settings(config))

    @_built_once
    def manager(self) -> ModelManager:
        return ModelManager.from_settings(self.settings)

    @_built_once
    def runner(self) -> Runner:
        """The one door to the models: every generation and scoring goes through it."""
        from mimir.runtime.runner import Runner

        return Runner(self.manager)

    @_built_once
    def db(self) -> Database:
        """The database: ``[storage] url`` / ``MIMIR_DATABASE_URL``, else the SQLite file under
        ``MIMIR_HOME`` (opened and migrated on first use). With ``[storage]
        telemetry_retention``, older telemetry is deleted right after."""
        from mimir.storage.db import Database

        db = Database.from_settings(self.settings)
        try:
            apply_retention(self.settings, db)
        except BaseException:
            db.close()
            raise
        return db

    @_built_once
    def accounts(self) -> AccountStore:
        """Users, API keys and web sign-ins."""
        from mimir.storage.accounts import AccountStore

        return AccountStore(self.db)

    @_built_once
    def audit(self) -> AuditLog:
        """Who did what: prunes, unloads, deletions, user and key changes."""
        from mimir.storage.audit import AuditLog

        return AuditLog(self.db)

    @_built_once
    def telemetry(self) -> Telemetry:
        """Per-step telemetry, listening to the manager's events (``[telemetry]`` settings)."""
        from mimir.telemetry.setup import parse_telemetry_options, telemetry_from_settings

        options = parse_telemetry_options(self.settings.telemetry)
        telemetry = telemetry_from_settings(self.settings, self.db if options.store else None)
        telemetry.attach(self.manager)
        return telemetry

    @_built_once
    def conversations(self) -> ConversationStore:
        from mimir.storage.conversations import ConversationStore

        return ConversationStore(self.db)

    @_built_once
    def tutor(self) -> Tutor:
        """The tutor pipeline on this app's manager, telemetry and conversation store."""
        from mimir.tutor.pipeline import Tutor

        tutor = Tutor(self.settings, self.manager, self.telemetry, self.conversations, spool=self.spool,
                      runner=self.runner)
        self.replay_spool()
        return tutor

    @_built_once
    def spool(self) -> Spool:
        """Turns and telemetry the database refused, kept until it takes them."""
        from mimir.storage.spool import SPOOL_NAME, Spool

        return Spool(self.settings.home / SPOOL_NAME)

    def replay_spool(self) -> ReplayReport | None:
        """Store what the spool holds (at each start); what still fails stays for the next."""
        from mimir.storage.spool import replay_spool
        from mimir.storage.telemetry_store import TelemetryStore
        from mimir.telemetry.setup import parse_telemetry_options

        if not self.spool.path.exists():
            return None
        store = TelemetryStore(self.db) if parse_telemetry_options(self.settings.telemetry).store else None
        try:
            return replay_spool(self.spool, self.conversations, store)
        except Exception:  # the database is unusable right now: the spool waits for the next start
            log.exception("replaying the spool %s failed", self.spool.path)
            return None

    @_built_once
    def queue(self) -> Admission:
        """Admission control for turns: a bounded queue served round-robin across users
        (``[server]`` max_queue, per_user_concurrency, turn_timeout). ``queue.depth`` is the
        number of turns waiting (the ``mimir_queue_depth`` gauge)."""
        from mimir.runtime.admission import Admission

        limits = self.settings.limits
        # Instances sharing a PostgreSQL database share the per-user limit (advisory locks).
        shared = self.db.try_slot if self.db.engine == "postgresql" else None
        return Admission(
            engine_slots(self.manager, self.settings), max_queue=limits.max_queue,
            per_user=limits.per_user_concurrency, turn_timeout_s=limits.turn_timeout_s, shared=shared,
        )

    def close(self) -> None:
        if "tutor" in self.__dict__:
            self.tutor.close()  # the math worker process
        if "manager" in self.__dict__:
            self.manager.close()
        # After the manager, so its shutdown unloads are recorded; before the database.
        if "telemetry" in self.__dict__:
            self.telemetry.close()
        if "db" in self.__dict__:
            self.db.close()

    def __enter__(self) -> MimirApp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def engine_slots(manager: ModelManager, settings: Settings) -> int:
    """Turns that may run at once: the response model's parallel slots where its engine
    decodes several sequences together (``manager.parallel``), else 1."""
    parallel = getattr(manager, "parallel", None)
    if parallel is None:
        return 1
    try:
        return max(1, int(parallel(settings.model_for_role("response"))))
    except Exception:  # noqa: BLE001 - an unknown engine serves one turn at a time
        return 1


def apply_retention(settings: Settings, db: Database) -> int:
    """Delete telemetry older than ``[storage] telemetry_retention`` (off: nothing). Returns
    the steps deleted."""
    retention_s = settings.storage.telemetry_retention_s
    if retention_s is None:
        return 0
    import time

    from mimir.storage.telemetry_store import TelemetryStore

    deleted = TelemetryStore(db).delete_older_than(time.time() - retention_s)
    if deleted:
        logging.getLogger(__name__).info("deleted %d telemetry steps older than the retention period", deleted)
    return deleted


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter: the same lines (tracebacks included), with credentials in
    URLs masked."""

    def __init__(self, inner: logging.Formatter | None = None):
        super().__init__()
        self.inner = inner or logging.Formatter(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        from mimir.redact import redact_secrets

        return redact_secrets(self.inner.format(record))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format=LOG_FORMAT,
    )
    redact_log_handlers()


def redact_log_handlers(logger: logging.Logger | None = None) -> None:
    """Wrap the formatter of every handler of ``logger`` (default: the root logger) so that
    its lines are redacted."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))
