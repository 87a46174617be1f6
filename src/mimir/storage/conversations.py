"""Tutor conversations in the database (SQLite or PostgreSQL): sessions and their turns.

A turn stores the student's message, the response (or the error of a failed turn), the
active prompt-state flags, the graph tool's output, and its totals. Its per-step telemetry
lives in ``telemetry_steps`` under the same ``turn_id``. Deleting a session deletes its turns,
their telemetry and their chart files (student data).

A session belongs to the user who started it (``owner_id``; NULL for the local user of
``auth = "none"`` and for sessions stored before accounts existed). Lookups that act for a
user pass ``owner=`` and see another user's session exactly as a missing one.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimir.errors import NotFoundError
from mimir.redact import redact_secrets
from mimir.storage.db import Database, IntegrityError

log = logging.getLogger(__name__)

#: ``owner=ANY_OWNER``: no ownership filter (teachers, admins, the CLI on the server machine).
ANY_OWNER = object()


@dataclass(frozen=True)
class SessionInfo:
    id: str
    title: str
    created_at: float
    updated_at: float
    turn_count: int
    owner_id: str | None = None


@dataclass(frozen=True)
class SessionErasure:
    """What deleting a session removed."""

    turns: int
    telemetry_steps: int
    charts: int


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
    #: The Mimir instance that stored it (None for turns stored before instances were recorded).
    instance: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _title(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 60 else line[:57] + "..."


class ConversationStore:
    def __init__(self, db: Database):
        self.db = db

    # -- sessions ----------------------------------------------------------------------
    def create_session(self, title: str = "New session", session_id: str | None = None, *,
                       owner_id: str | None = None) -> str:
        sid = session_id or new_id("s")
        now = time.time()
        try:
            self.db.transact(
                lambda conn: conn.execute(
                    "INSERT INTO sessions (id, title, created_at, updated_at, owner_id) VALUES (?, ?, ?, ?, ?)",
                    (sid, title, now, now, owner_id),
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

    def get_session(self, session_id: str, *, owner: str | None | object = ANY_OWNER) -> SessionInfo:
        """The session; with ``owner``, only if that user owns it (else NotFoundError, the
        same as for an id that does not exist, so ids of others' sessions reveal nothing)."""
        where, params = _owner_filter(owner)
        rows = self.db.read(
            "SELECT s.*, (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS turn_count "
            f"FROM sessions s WHERE s.id = ?{where}",
            (session_id, *params),
        ) if isinstance(session_id, str) else []
        if not rows:
            raise NotFoundError(f"no session '{str(session_id)[:80]}'; `mimir sessions list` shows the existing ones")
        return _session(rows[0])

    def list_sessions(self, limit: int = 50, *, owner: str | None | object = ANY_OWNER) -> list[SessionInfo]:
        """Sessions, most recently used first; with ``owner``, only that user's."""
        where, params = _owner_filter(owner, first=True)
        rows = self.db.read(
            "SELECT s.*, (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS turn_count "
            f"FROM sessions s{where} ORDER BY s.updated_at DESC LIMIT ?",
            (*params, limit),
        )
        return [_session(r) for r in rows]

    def delete_session(self, session_id: str, *, charts_dir: Path | None = None) -> int:
        """Delete a session with its turns and their telemetry. Returns the turns deleted."""
        return self.erase_session(session_id, charts_dir=charts_dir).turns

    def erase_session(self, session_id: str, *, charts_dir: Path | None = None) -> SessionErasure:
        """Delete a session, its turns, their telemetry rows (steps, events, turn totals) in
        one transaction, then the chart files its turns drew inside ``charts_dir`` (a path
        stored in a turn that points elsewhere is never touched)."""
        info = self.get_session(session_id)
        with self.db.write() as conn:
            charts = [r[0] for r in conn.execute(
                "SELECT tool_output_path FROM turns WHERE session_id = ? AND tool_output_path IS NOT NULL", (session_id,)
            ).fetchall()]
            steps = conn.execute("SELECT COUNT(*) FROM telemetry_steps WHERE session_id = ?", (session_id,)).fetchone()[0]
            conn.execute(
                "DELETE FROM telemetry_events WHERE step_id IN (SELECT step_id FROM telemetry_steps WHERE session_id = ?)",
                (session_id,),
            )
            conn.execute("DELETE FROM telemetry_steps WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM telemetry_turns WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        removed = _remove_charts(charts, charts_dir) if charts_dir is not None else 0
        return SessionErasure(turns=info.turn_count, telemetry_steps=int(steps), charts=removed)

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
                " flags_json, tool_output_path, tool_description, notices_json, tokens_in, tokens_out, wall_s,"
                " instance_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn_id, session_id, seq, now, user_message, response, status,
                    redact_secrets(error) if error else error,
                    json.dumps(sorted(flags)), tool_output_path, tool_description, json.dumps(list(notices)),
                    tokens_in, tokens_out, wall_s, self.db.instance or None,
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

    # -- math records (answer keys, hints, verdicts) ---------------------------------------
    def add_math(self, turn_id: str, session_id: str, record: Mapping[str, Any]) -> None:
        """Store what the math engine found in a turn (see ``tutor.mathstep.MathNotes.record``).

        Retried with backoff if the server connection drops; a retry that meets its own row
        (the first commit landed) counts as stored."""
        values = (
            turn_id, session_id, time.time(), record.get("skill"), record.get("source"), record.get("question"),
            json.dumps(record["key"]) if record.get("key") is not None else None,
            int(record.get("hints_given") or 0), record.get("verdict"), record.get("verdict_detail"),
            1 if record.get("open") else 0,
        )
        try:
            self.db.transact(
                lambda conn: conn.execute(
                    "INSERT INTO turn_math (turn_id, session_id, created_at, skill, source, question, answer_key_json,"
                    " hints_given, verdict, verdict_detail, is_open) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
            )
        except IntegrityError:
            if not self.db.read("SELECT 1 FROM turn_math WHERE turn_id = ? AND created_at = ?", (turn_id, values[2])):
                raise

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


def _owner_filter(owner: str | None | object, *, first: bool = False) -> tuple[str, tuple]:
    if owner is ANY_OWNER:
        return "", ()
    word = " WHERE" if first else " AND"
    if owner is None:
        return f"{word} s.owner_id IS NULL", ()
    return f"{word} s.owner_id = ?", (owner,)


def _remove_charts(paths: list[str], charts_dir: Path) -> int:
    root = charts_dir.resolve()
    removed = 0
    for text in paths:
        path = Path(text)
        try:
            resolved = path.resolve()
        except OSError:
            continue
        if resolved.parent != root or path.is_symlink() or not resolved.is_file():
            continue
        try:
            resolved.unlink()
            removed += 1
        except OSError as exc:
            log.warning("could not delete chart %s: %s", resolved, exc.strerror or exc)
    return removed


def _session(row) -> SessionInfo:
    return SessionInfo(row["id"], row["title"], row["created_at"], row["updated_at"], row["turn_count"],
                       row["owner_id"])


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
        instance=row["instance_id"],
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
