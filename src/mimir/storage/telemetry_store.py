"""Step records in the database (SQLite or PostgreSQL): save a turn (or a lone step) in one transaction, read them back.

Tables (see :mod:`mimir.storage.migrations`): ``telemetry_turns``, ``telemetry_steps`` (with
``session_id``/``turn_id`` text columns, to link them to the tutor's turns) and
``telemetry_events`` (model-manager events; ``step_id`` NULL for events outside any step).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mimir.core.events import ModelEvent
from mimir.core.gpu import GpuMemory
from mimir.core.records import STEP_COLUMNS, StepRecord, TurnRecord
from mimir.redact import redact_secrets
from mimir.storage.conversations import ANY_OWNER
from mimir.storage.db import Connection, Database
from mimir.storage.dialect import Row

_INSERT_STEP = (
    f"INSERT INTO telemetry_steps ({', '.join(STEP_COLUMNS)}, gpu_devices_json, instance_id) "
    f"VALUES ({', '.join('?' for _ in STEP_COLUMNS)}, ?, ?)"
)
_INSERT_EVENT = (
    "INSERT INTO telemetry_events (step_id, seq, kind, model_id, reason, estimate_bytes, measured_bytes, wall_s, device, at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
def _owner_clause(owner: str | None | object, table: str = "") -> tuple[str, tuple]:
    """SQL keeping only rows of sessions owned by ``owner`` (steps outside sessions drop out)."""
    if owner is ANY_OWNER:
        return "", ()
    p = f"{table}." if table else ""
    if owner is None:
        return f" AND {p}session_id IN (SELECT id FROM sessions WHERE owner_id IS NULL)", ()
    return f" AND {p}session_id IN (SELECT id FROM sessions WHERE owner_id = ?)", (owner,)


#: Groups steps into turns; a step outside any turn is a group of its own. The separator is
#: the unit separator character written into the literal (``char()``/``chr()`` differ by engine).
def _group(table: str = "") -> str:
    p = f"{table}." if table else ""
    return f"COALESCE({p}session_id, '') || '\x1f' || COALESCE({p}turn_id, 'step:' || {p}step_id)"


@dataclass(frozen=True)
class MeasuredSize:
    """The last measured load of a model, as history recorded it."""

    model_id: str
    measured_bytes: int | None
    estimate_bytes: int | None
    device: str
    at: float


class TelemetryStore:
    def __init__(self, db: Database):
        self.db = db

    # -- writes (each one transaction) -------------------------------------------------
    # Each is retried with backoff if the server connection drops (Database.transact).
    def save_step(self, record: StepRecord) -> None:
        self.db.transact(lambda conn: _insert_steps(conn, (record,), self.db.instance or None))

    def save_turn(self, record: TurnRecord) -> None:
        """The turn and all its steps and events, in one transaction."""
        self.db.transact(lambda conn: self._insert_turn(conn, record))

    def _insert_turn(self, conn: Connection, record: TurnRecord) -> None:
        conn.execute(
            "INSERT INTO telemetry_turns (session_id, turn_id, started_at, wall_s, peak_rss_bytes, "
            "cuda_peak_allocated_bytes, step_count, error, instance_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.session_id,
                record.turn_id,
                record.started_at,
                record.wall_s,
                record.peak_rss_bytes,
                record.cuda_peak_allocated_bytes,
                len(record.steps),
                _clean(record.error),
                self.db.instance or None,
            ),
        )
        _insert_steps(conn, record.steps, self.db.instance or None)

    def save_event(self, event: ModelEvent, step_id: str | None = None) -> None:
        self.db.transact(lambda conn: _insert_event(conn, event, step_id, 0))

    # -- reads ---------------------------------------------------------------------------
    def recent_steps(self, *, last_turns: int = 5, turn_id: str | None = None,
                     owner: str | None | object = ANY_OWNER) -> list[StepRecord]:
        """Steps of the last ``last_turns`` turns (oldest first, in step order), or of one turn;
        with ``owner``, only steps of that user's sessions.

        A step recorded outside any turn counts as a turn of its own.
        """
        where, params = _owner_clause(owner)
        if turn_id is not None:
            rows = self.db.read(
                f"SELECT * FROM telemetry_steps WHERE turn_id = ?{where} ORDER BY started_at, seq, id", (turn_id, *params)
            )
        else:
            rows = self.db.read(
                f"""
                WITH recent AS (
                    SELECT {_group()} AS g, MIN(started_at) AS t FROM telemetry_steps WHERE 1 = 1{where}
                    GROUP BY {_group()} ORDER BY MAX(started_at) DESC LIMIT ?
                )
                SELECT s.* FROM telemetry_steps s JOIN recent ON {_group('s')} = recent.g
                ORDER BY recent.t, s.seq, s.id
                """,
                (*params, max(0, last_turns)),
            )
        return self._with_events(rows)

    def turns(self, *, last: int = 20, owner: str | None | object = ANY_OWNER) -> list[TurnRecord]:
        """The last ``last`` stored turns (oldest first), with their steps; with ``owner``,
        only turns of that user's sessions (``None``: sessions without an owner)."""
        where, params = _owner_clause(owner)
        turn_rows = self.db.read(
            f"SELECT * FROM (SELECT * FROM telemetry_turns WHERE 1 = 1{where} ORDER BY started_at DESC, id DESC LIMIT ?) "
            "AS recent ORDER BY started_at, id",
            (*params, max(0, last)),
        )
        out = []
        for t in turn_rows:
            if t["session_id"] is None:
                sql, params = "SELECT * FROM telemetry_steps WHERE turn_id = ? AND session_id IS NULL", (t["turn_id"],)
            else:
                sql, params = "SELECT * FROM telemetry_steps WHERE turn_id = ? AND session_id = ?", (t["turn_id"], t["session_id"])
            steps = self._with_events(self.db.read(sql + " ORDER BY seq, id", params))
            out.append(
                TurnRecord(
                    session_id=t["session_id"],
                    turn_id=t["turn_id"],
                    started_at=t["started_at"],
                    wall_s=t["wall_s"],
                    steps=tuple(steps),
                    peak_rss_bytes=t["peak_rss_bytes"],
                    cuda_peak_allocated_bytes=t["cuda_peak_allocated_bytes"],
                    error=t["error"],
                )
            )
        return out

    def step_instances(self, step_ids: Sequence[str]) -> dict[str, str | None]:
        """The instance that stored each step (None: stored before instances were recorded)."""
        return self._instances("telemetry_steps", "step_id", step_ids)

    def turn_instances(self, turn_ids: Sequence[str]) -> dict[str, str | None]:
        """The instance that stored each telemetry turn."""
        return self._instances("telemetry_turns", "turn_id", turn_ids)

    def _instances(self, table: str, key: str, ids: Sequence[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        ids = list(dict.fromkeys(i for i in ids if i is not None))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for r in self.db.read(
                f"SELECT {key}, instance_id FROM {table} WHERE {key} IN ({', '.join('?' for _ in chunk)})", chunk
            ):
                out[r[0]] = r[1]
        return out


    def count_steps(self, *, owner: str | None | object = ANY_OWNER) -> int:
        where, params = _owner_clause(owner)
        return int(self.db.read(f"SELECT COUNT(*) AS n FROM telemetry_steps WHERE 1 = 1{where}", params)[0]["n"])

    def delete_older_than(self, cutoff: float) -> int:
        """Delete telemetry (steps, their events, turn totals, loose events) recorded before
        ``cutoff`` (epoch seconds), in one transaction. Returns the steps deleted."""
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM telemetry_events WHERE step_id IN (SELECT step_id FROM telemetry_steps WHERE started_at < ?)",
                (cutoff,),
            )
            conn.execute("DELETE FROM telemetry_events WHERE step_id IS NULL AND at < ?", (cutoff,))
            steps = conn.execute("DELETE FROM telemetry_steps WHERE started_at < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM telemetry_turns WHERE started_at < ?", (cutoff,))
        return int(steps)

    def events(self, *, step_id: str | None = None, loose: bool = False) -> list[ModelEvent]:
        """Events of one step, or with ``loose`` the events recorded outside any step."""
        if loose:
            rows = self.db.read("SELECT * FROM telemetry_events WHERE step_id IS NULL ORDER BY at, id")
        else:
            rows = self.db.read("SELECT * FROM telemetry_events WHERE step_id = ? ORDER BY seq, id", (step_id,))
        return [_event(r) for r in rows]

    def last_measured_sizes(self) -> dict[str, MeasuredSize]:
        """Per model, the measured size of its most recent successful load."""
        rows = self.db.read(
            """
            SELECT model_id, measured_bytes, estimate_bytes, device, at FROM telemetry_events e
            WHERE kind = 'load' AND id = (
                SELECT id FROM telemetry_events e2 WHERE e2.model_id = e.model_id AND e2.kind = 'load'
                ORDER BY e2.at DESC, e2.id DESC LIMIT 1
            )
            """
        )
        return {
            r["model_id"]: MeasuredSize(r["model_id"], r["measured_bytes"], r["estimate_bytes"], r["device"] or "ram", r["at"])
            for r in rows
        }

    # -- helpers -----------------------------------------------------------------------
    def _with_events(self, rows: Sequence[Row]) -> list[StepRecord]:
        if not rows:
            return []
        ids = [r["step_id"] for r in rows]
        events: dict[str, list[ModelEvent]] = {i: [] for i in ids}
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start : chunk_start + 500]
            for e in self.db.read(
                f"SELECT * FROM telemetry_events WHERE step_id IN ({', '.join('?' for _ in chunk)}) ORDER BY seq, id",
                chunk,
            ):
                events[e["step_id"]].append(_event(e))
        return [_step(r, tuple(events[r["step_id"]])) for r in rows]


def _insert_steps(conn: Connection, records: Sequence[StepRecord], instance: str | None) -> None:
    """Steps and their events with one ``executemany`` each (psycopg pipelines it: one round trip)."""
    step_rows, event_rows = [], []
    for record in records:
        devices = json.dumps([asdict(d) for d in record.gpu_devices]) if record.gpu_devices else None
        values = tuple(_clean(getattr(record, c)) if c == "error" else getattr(record, c) for c in STEP_COLUMNS)
        step_rows.append((*values, devices, instance))
        event_rows.extend(_event_row(event, record.step_id, seq) for seq, event in enumerate(record.events))
    if step_rows:
        conn.executemany(_INSERT_STEP, step_rows)
    if event_rows:
        conn.executemany(_INSERT_EVENT, event_rows)


def _insert_event(conn: Connection, event: ModelEvent, step_id: str | None, seq: int) -> None:
    conn.execute(_INSERT_EVENT, _event_row(event, step_id, seq))


def _event_row(event: ModelEvent, step_id: str | None, seq: int) -> tuple:
    return (
        step_id,
        seq,
        event.kind,
        event.model_id,
        _clean(event.reason),
        event.estimate_bytes,
        event.measured_bytes,
        event.wall_s,
        event.device,
        event.at,
    )


def _clean(text: str | None) -> str | None:
    """Error and reason text as stored: credentials in URLs masked."""
    return redact_secrets(text) if text else text


def _event(row: Row) -> ModelEvent:
    return ModelEvent(
        kind=row["kind"],
        model_id=row["model_id"],
        reason=row["reason"] or "",
        estimate_bytes=row["estimate_bytes"] or 0,
        measured_bytes=row["measured_bytes"],
        wall_s=row["wall_s"],
        device=row["device"] or "ram",
        at=row["at"],
    )


def _step(row: Row, events: tuple[ModelEvent, ...]) -> StepRecord:
    devices = tuple(GpuMemory(**d) for d in json.loads(row["gpu_devices_json"])) if row["gpu_devices_json"] else ()
    return StepRecord(
        **{c: row[c] for c in STEP_COLUMNS},
        gpu_devices=devices,
        events=events,
    )
