"""Tutor conversations in SQLite: sessions and their turns.

A turn stores the student's message, the response (or the error of a failed turn), the
active prompt-state flags, the graph tool's output, and its totals. Its per-step telemetry
lives in ``telemetry_steps`` under the same ``turn_id``. Deleting a session deletes its turns.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mimir.errors import NotFoundError
from mimir.storage.db import Database


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
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO sessions (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (sid, title, now, now),
            )
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
        with self.db.write() as conn:
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
            conn.execute("UPDATE sessions SET updated_at = ?, title = ? WHERE id = ?", (now, new_title, session_id))
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

    # -- math records (answer keys, hints, verdicts) ---------------------------------------
    def add_math(self, turn_id: str, session_id: str, record: Mapping[str, Any]) -> None:
        """Store what the math engine found in a turn (see ``tutor.mathstep.MathNotes.record``)."""
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO turn_math (turn_id, session_id, created_at, skill, source, question, answer_key_json,"
                " hints_given, verdict, verdict_detail, is_open) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn_id, session_id, time.time(), record.get("skill"), record.get("source"), record.get("question"),
                    json.dumps(record["key"]) if record.get("key") is not None else None,
                    int(record.get("hints_given") or 0), record.get("verdict"), record.get("verdict_detail"),
                    1 if record.get("open") else 0,
                ),
            )

    def get_math(self, turn_id: str) -> dict[str, Any] | None:
        rows = self.db.read("SELECT * FROM turn_math WHERE turn_id = ?", (turn_id,))
        return _math(rows[0]) if rows else None

    def open_question(self, session_id: str) -> dict[str, Any] | None:
        """The question still open after the session's last successful turn (a practice
        question or a problem not yet answered right), with its key; ``None`` otherwise."""
        rows = self.db.read(
            "SELECT m.* FROM turn_math m JOIN turns t ON t.id = m.turn_id WHERE t.session_id = ?"
            " AND t.seq = (SELECT MAX(seq) FROM turns WHERE session_id = ? AND status = 'ok')",
            (session_id, session_id),
        )
        if not rows or not rows[0]["is_open"] or rows[0]["answer_key_json"] is None:
            return None
        return _math(rows[0])


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


def _math(row) -> dict[str, Any]:
    return {
        "turn_id": row["turn_id"],
        "skill": row["skill"],
        "source": row["source"],
        "question": row["question"],
        "key": json.loads(row["answer_key_json"]) if row["answer_key_json"] else None,
        "hints_given": row["hints_given"],
        "verdict": row["verdict"],
        "verdict_detail": row["verdict_detail"],
        "open": bool(row["is_open"]),
    }
