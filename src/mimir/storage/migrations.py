"""The database schema, as an ordered list of named migration functions.

Opening a :class:`~mimir.storage.db.Database` applies, in order, every migration whose name
is not yet in the ``_migrations`` table, each in one transaction with its record. To change
the schema, **append** a function decorated with ``@migration`` at the end of this file; never
edit or reorder one that has shipped (databases out there already recorded it by name).

A migration receives the connection (:class:`~mimir.storage.dialect.Connection`) inside the
open transaction; use ``conn.execute`` per statement. The same migrations run on SQLite and
PostgreSQL, so write portable SQL: ``TEXT``, ``INTEGER`` (64-bit on both), ``REAL``
(double on both), explicit text ids or ``INTEGER PRIMARY KEY`` for a row id (no
``AUTOINCREMENT``), ``?`` placeholders, ``ON CONFLICT`` instead of ``INSERT OR ...``, and no
engine-specific functions. ``tests/test_storage_db.py`` runs every migration on both engines.
"""

from __future__ import annotations

from collections.abc import Callable

from mimir.storage.dialect import Connection

MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = []


def migration(fn: Callable[[Connection], None]) -> Callable[[Connection], None]:
    """Register ``fn`` as the next migration, named after the function."""
    if any(name == fn.__name__ for name, _ in MIGRATIONS):
        raise ValueError(f"migration {fn.__name__} is defined twice")
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_telemetry_steps(conn: Connection) -> None:
    """Per-step memory telemetry, the turns they belong to, and model-manager events."""
    conn.execute(
        """
        CREATE TABLE telemetry_turns (
            id INTEGER PRIMARY KEY,
            session_id TEXT,
            turn_id TEXT NOT NULL,
            started_at REAL NOT NULL,
            wall_s REAL NOT NULL,
            peak_rss_bytes INTEGER,
            cuda_peak_allocated_bytes INTEGER,
            step_count INTEGER NOT NULL,
            error TEXT
        )
        """
    )
    conn.execute("CREATE INDEX telemetry_turns_turn ON telemetry_turns (turn_id)")
    conn.execute("CREATE INDEX telemetry_turns_session ON telemetry_turns (session_id, started_at)")
    conn.execute(
        """
        CREATE TABLE telemetry_steps (
            id INTEGER PRIMARY KEY,
            step_id TEXT NOT NULL UNIQUE,
            session_id TEXT,
            turn_id TEXT,
            seq INTEGER NOT NULL,
            name TEXT NOT NULL,
            agent TEXT,
            model TEXT,
            started_at REAL NOT NULL,
            wall_s REAL NOT NULL,
            tokens_in INTEGER,
            tokens_out INTEGER,
            rss_before_bytes INTEGER,
            rss_after_bytes INTEGER,
            rss_peak_bytes INTEGER,
            system_available_bytes INTEGER,
            cuda_allocated_before_bytes INTEGER,
            cuda_allocated_after_bytes INTEGER,
            cuda_reserved_after_bytes INTEGER,
            cuda_peak_allocated_bytes INTEGER,
            gpu_used_before_bytes INTEGER,
            gpu_used_after_bytes INTEGER,
            gpu_total_bytes INTEGER,
            gpu_devices_json TEXT,
            error TEXT
        )
        """
    )
    conn.execute("CREATE INDEX telemetry_steps_turn ON telemetry_steps (turn_id, seq)")
    conn.execute("CREATE INDEX telemetry_steps_started ON telemetry_steps (started_at)")
    conn.execute(
        """
        CREATE TABLE telemetry_events (
            id INTEGER PRIMARY KEY,
            step_id TEXT REFERENCES telemetry_steps (step_id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            model_id TEXT NOT NULL,
            reason TEXT,
            estimate_bytes INTEGER,
            measured_bytes INTEGER,
            wall_s REAL,
            device TEXT,
            at REAL NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX telemetry_events_step ON telemetry_events (step_id, seq)")
    conn.execute("CREATE INDEX telemetry_events_model ON telemetry_events (model_id, kind, at)")


@migration
def m002_conversations(conn: Connection) -> None:
    """Tutor sessions and their turns; a turn's steps are telemetry_steps rows with its turn_id."""
    conn.execute(
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE turns (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            created_at REAL NOT NULL,
            user_message TEXT NOT NULL,
            response TEXT,
            status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
            error TEXT,
            flags_json TEXT NOT NULL,
            tool_output_path TEXT,
            tool_description TEXT,
            notices_json TEXT NOT NULL DEFAULT '[]',
            tokens_in INTEGER,
            tokens_out INTEGER,
            wall_s REAL,
            UNIQUE (session_id, seq)
        )
        """
    )
    conn.execute("CREATE INDEX turns_session ON turns (session_id, seq)")


@migration
def m003_accounts(conn: Connection) -> None:
    """Users and roles, API keys, web sign-ins, the audit log, and who owns each session.

    Portable SQL (PostgreSQL too): TEXT ids made by the application, REAL epoch seconds, no
    AUTOINCREMENT. Sessions stored before this migration keep ``owner_id`` NULL: they
    belong to the local user of ``auth = "none"``, and teachers and admins can read them.
    """
    conn.execute(
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('student', 'teacher', 'admin')),
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            secret_digest TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )
        """
    )
    conn.execute("CREATE INDEX api_keys_user ON api_keys (user_id)")
    conn.execute(
        """
        CREATE TABLE web_logins (
            token_digest TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX web_logins_user ON web_logins (user_id)")
    conn.execute(
        """
        CREATE TABLE audit_log (
            id TEXT PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail TEXT,
            address TEXT
        )
        """
    )
    conn.execute("CREATE INDEX audit_log_at ON audit_log (at)")
    conn.execute("ALTER TABLE sessions ADD COLUMN owner_id TEXT")
    conn.execute("CREATE INDEX sessions_owner ON sessions (owner_id, updated_at)")


@migration
def m004_instance_ids(conn: Connection) -> None:
    """Which Mimir instance stored each turn and step (several instances can share one database)."""
    conn.execute("ALTER TABLE turns ADD COLUMN instance_id TEXT")
    conn.execute("ALTER TABLE telemetry_turns ADD COLUMN instance_id TEXT")
    conn.execute("ALTER TABLE telemetry_steps ADD COLUMN instance_id TEXT")


@migration
def m005_turn_math(conn: Connection) -> None:
    """What the math engine found in a turn: the question under discussion, its answer key
    and hint ladder (JSON), hints given so far, and the verdict on the student's answer.
    Portable SQL (TEXT/INTEGER/REAL, explicit ids) so the PostgreSQL store can run it too."""
    conn.execute(
        """
        CREATE TABLE turn_math (
            turn_id TEXT PRIMARY KEY REFERENCES turns(id) ON DELETE CASCADE,
            session_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            skill TEXT,
            source TEXT,
            question TEXT,
            answer_key_json TEXT,
            hints_given INTEGER NOT NULL DEFAULT 0,
            verdict TEXT,
            verdict_detail TEXT,
            is_open INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    conn.execute("CREATE INDEX turn_math_session ON turn_math (session_id, created_at)")


@migration
def m006_tokens_evaluated(conn: Connection) -> None:
    """Prompt tokens each step's engine really evaluated (the rest came from its prompt cache)."""
    conn.execute("ALTER TABLE telemetry_steps ADD COLUMN tokens_evaluated INTEGER")
