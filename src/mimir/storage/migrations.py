"""The database schema, as an ordered list of named migration functions.

Opening a :class:`~mimir.storage.db.Database` applies, in order, every migration whose name
is not yet in the ``_migrations`` table, each in one transaction with its record. To change
the schema, **append** a function decorated with ``@migration`` at the end of this file; never
edit or reorder one that has shipped (databases out there already recorded it by name).

A migration receives the connection inside the open transaction; use ``conn.execute`` per
statement (``executescript`` would commit early).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = []


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    """Register ``fn`` as the next migration, named after the function."""
    if any(name == fn.__name__ for name, _ in MIGRATIONS):
        raise ValueError(f"migration {fn.__name__} is defined twice")
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_telemetry_steps(conn: sqlite3.Connection) -> None:
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
def m002_conversations(conn: sqlite3.Connection) -> None:
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
def m003_turn_math(conn: sqlite3.Connection) -> None:
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
