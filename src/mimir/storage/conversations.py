"""Tutor conversations in the database (SQLite or PostgreSQL): sessions and their turns.

A turn stores the student's message, the response (or the error of a failed turn), the
active prompt-state flags, the graph tool's output, and its totals. Its per-step telemetry
lives in ``telemetry_steps`` under the same ``turn_id``. Deleting a session deletes its turns.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from mimir.errors import NotFoundError
from mimir.storage.db import Database, IntegrityError


@dataclass(frozen=True)
class SessionInfo:
    id: str
    title: str
    created_at: float
    updated_at: float
    turn_count: int


@dataclass(frozen=True)
class StoredTurn:
    id: str
    session_id: str
    seq: int
    created_at: float
    user_message: str
    response: str | None
    status: str
    error: str | None
    flags: tuple[str, ...]
    tool_output_path: str | None
    tool_description: str | None
    notices: tuple[str, ...]
    tokens_in: int | None
    tokens_out: int | None
    wall_s: float | None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _title(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 60 else line[:57] + "..."


class ConversationStore:
    def __init__(self, db: Database):
        self.db = db

    # -- sessions ----------------------------------------------------------------------
    def create_session(self, title: str = "New session", session_id: str | None = None) -> str:
        sid = session_id or new_id("s")
        now = time.time()
        try:
            self.db.transact(
                lambda conn: conn.execute(
                    "INSERT INTO sessions (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                    (sid, title, now, now),
                )
            )
        except IntegrityError:  # a retried insert whose first commit landed
            if not self.db.read("SELECT 1 FROM sessions WHERE id = ? AND created_at = ?", (sid, now)):
                raise
        return sid

    def ensure_session(self, session_id: str | None, first_message: str = "") -> str:
        """The id of an existing session, or of a new one (``session_id=None``)."""
        if session_id is None:
            return self.create_session(_title(first_message) if first_message else "New session")
        self.get_session(session_id)
        return session_id

    def get_session(self, session_id: str) -> SessionInfo:
        rows = self.db.read(
            "SELECT s.*, (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS turn_count "
            "FROM sessions s WHERE s.id = ?",
            (session_id,),
        )
        if not rows:
            raise NotFoundError(f"no session '{session_id}'; `mimir sessions list` shows the existing ones")
        return _session(rows[0])

    def list_sessions(self, limit: int = 50) -> list[SessionInfo]:
        rows = self.db.read(
            "SELECT s.*, (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS turn_count "
            "FROM sessions s ORDER BY s.updated_at DESC LIMIT ?",
            (limit,),
        )
        return [_session(r) for r in rows]

    def delete_session(self, session_id: str) -> int:
        """Delete a session and its turns. Returns the number of turns deleted."""
        info = self.get_session(session_id)
        with self.db.write() as conn:
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return info.turn_count

    # -- turns -------------------------------------------------------------------------
    def add_turn(
        self,
        *,
        turn_id: str,
        session_id: str,
        user_message: str,
        response: str | None,
        status: str,
        error: str | None = None,
        flags: Sequence[str] = (),
        tool_output_path: str | None = None,
        tool_description: str | None = None,
        notices: Sequence[str] = (),
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        wall_s: float | None = None,
    ) -> StoredTurn:
        now = time.time()

        def store(conn) -> None:
            # Touch the session first: on PostgreSQL this row lock orders concurrent turns of one
            # session (two instances), so each reads the MAX(seq) the other committed.
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO turns (id, session_id, seq, created_at, user_message, response, status, error,"
                " flags_json, tool_output_path, tool_description, notices_json, tokens_in, tokens_out, wall_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn_id, session_id, seq, now, user_message, response, status, error,
                    json.dumps(sorted(flags)), tool_output_path, tool_description, json.dumps(list(notices)),
                    tokens_in, tokens_out, wall_s,
                ),
            )
            title = conn.execute("SELECT title FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]
            new_title = _title(user_message) if title == "New session" else title
            if new_title != title:
                conn.execute("UPDATE sessions SET title = ? WHERE id = ?", (new_title, session_id))

        # Retried with backoff if the server connection drops. A commit whose reply was lost
        # may have landed: the retry then meets its own turn id, which counts as stored.
        try:
            self.db.transact(store)
        except IntegrityError:
            if not self.db.read("SELECT 1 FROM turns WHERE id = ? AND session_id = ?", (turn_id, session_id)):
                raise
        return self.get_turn(turn_id)

    def get_turn(self, turn_id: str) -> StoredTurn:
        rows = self.db.read("SELECT * FROM turns WHERE id = ?", (turn_id,))
        if not rows:
            raise NotFoundError(f"no turn '{turn_id}'")
        return _turn(rows[0])

    def turns(self, session_id: str, *, limit: int | None = None, only_ok: bool = False) -> list[StoredTurn]:
        """Turns of a session in order; with ``limit``, the last ``limit`` of them."""
        where = "session_id = ?" + (" AND status = 'ok'" if only_ok else "")
        sql = f"SELECT * FROM turns WHERE {where} ORDER BY seq DESC"
        params: tuple = (session_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (session_id, limit)
        return [_turn(r) for r in reversed(self.db.read(sql, params))]


def _session(row) -> SessionInfo:
    return SessionInfo(row["id"], row["title"], row["created_at"], row["updated_at"], row["turn_count"])


def _turn(row) -> StoredTurn:
    return StoredTurn(
        id=row["id"],
        session_id=row["session_id"],
        seq=row["seq"],
        created_at=row["created_at"],
        user_message=row["user_message"],
        response=row["response"],
        status=row["status"],
        error=row["error"],
        flags=tuple(json.loads(row["flags_json"])),
        tool_output_path=row["tool_output_path"],
        tool_description=row["tool_description"],
        notices=tuple(json.loads(row["notices_json"])),
        tokens_in=row["tokens_in"],
        tokens_out=row["tokens_out"],
        wall_s=row["wall_s"],
    )
