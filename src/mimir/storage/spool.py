"""The spool: turns and telemetry the database refused, kept as JSON lines until it takes them.

When storing a finished turn fails (database locked past its busy timeout, disk full,
read-only, server gone), the student still gets the answer; the turn is appended to
``MIMIR_HOME/spool.jsonl`` instead, and so is a telemetry record the writer thread could not
store. :func:`replay_spool` stores everything in it through the store classes
(:class:`~mimir.storage.conversations.ConversationStore`,
:class:`~mimir.storage.telemetry_store.TelemetryStore`), so it works for any engine; it runs
when the app builds its tutor (each ``mimir serve``, ``chat`` or ``ask`` start). Lines that
still fail stay for the next start; lines already stored (same turn id) are dropped.

One line per record, written with one ``write`` call under a lock (and ``fsync``)::

    {"kind": "turn", "version": 1, "spooled_at": 1764000000.0, "reason": "...",
     "session_title": "What is...", "turn": {<ConversationStore.add_turn arguments>}}
    {"kind": "telemetry_turn", "version": 1, "spooled_at": ..., "reason": "...",
     "record": {<TurnRecord fields; steps with their events and GPU readings>}}
    {"kind": "telemetry_step", ..., "record": {<StepRecord fields>}}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mimir.storage.conversations import ConversationStore
    from mimir.storage.telemetry_store import TelemetryStore
    from mimir.core.records import StepRecord, TurnRecord

log = logging.getLogger(__name__)

VERSION = 1
SPOOL_NAME = "spool.jsonl"


@dataclass(frozen=True)
class ReplayReport:
    stored: int
    already_stored: int
    kept: int

    def __str__(self) -> str:
        return f"{self.stored} stored, {self.already_stored} already there, {self.kept} kept for later"


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class Spool:
    """Appends and replays ``path``. Every ``Spool`` of one path in a process shares one lock."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(self.path, threading.Lock())

    def _append(self, kind: str, reason: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, "version": VERSION, "spooled_at": time.time(), "reason": reason[:500],
                           **fields}, ensure_ascii=False, default=str)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, (line + "\n").encode("utf-8", "replace"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def add_turn(self, turn: dict[str, Any], *, session_title: str = "", error: str = "") -> None:
        """Keep one turn (the arguments of ``ConversationStore.add_turn``)."""
        self._append("turn", error, session_title=session_title[:60], turn=turn)

    def add_telemetry(self, record: TurnRecord | StepRecord, *, error: str = "") -> None:
        from mimir.core.records import TurnRecord

        kind = "telemetry_turn" if isinstance(record, TurnRecord) else "telemetry_step"
        self._append(kind, error, record=dataclasses.asdict(record))

    def entries(self) -> list[dict[str, Any]]:
        """The records waiting, oldest first (unreadable lines are skipped with a warning)."""
        if not self.path.exists():
            return []
        out = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("spool line %d of %s is not JSON; skipped", number, self.path)
        return out

    def __len__(self) -> int:
        return len(self.entries())

    def _rewrite(self, keep: list[dict[str, Any]]) -> None:
        if not keep:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in keep), encoding="utf-8")
        os.replace(tmp, self.path)


def replay_spool(spool: Spool, conversations: ConversationStore, telemetry: TelemetryStore | None) -> ReplayReport:
    """Store what the spool holds; keep what still fails. Safe to run at every start."""
    with spool._lock:
        entries = spool.entries()
        if not entries:
            return ReplayReport(0, 0, 0)
        keep, stored, already = [], 0, 0
        for entry in entries:
            try:
                done = _replay_one(entry, conversations, telemetry)
            except Exception as exc:  # noqa: BLE001 - the database still refuses: try next start
                log.warning("spooled %s not stored yet: %s", entry.get("kind"), exc)
                keep.append(entry)
                continue
            stored += done
            already += not done
        spool._rewrite(keep)
    report = ReplayReport(stored, already, len(keep))
    log.warning("replayed the spool %s: %s", spool.path, report)
    return report


def _replay_one(entry: dict[str, Any], conversations: ConversationStore, telemetry: TelemetryStore | None) -> bool:
    """Store one entry; False when it was already stored."""
    from mimir.errors import NotFoundError

    kind = entry.get("kind")
    if kind == "turn":
        turn = dict(entry["turn"])
        try:
            conversations.get_turn(turn["turn_id"])
            return False
        except NotFoundError:
            pass
        try:
            conversations.get_session(turn["session_id"])
        except NotFoundError:
            conversations.create_session(entry.get("session_title") or "New session", session_id=turn["session_id"])
        conversations.add_turn(**turn)
        return True
    if kind not in _TELEMETRY:
        raise ValueError(f"unknown spool record kind {kind!r}")
    if telemetry is None:
        raise RuntimeError("telemetry storage is off")
    from_dict, table, key, save = _TELEMETRY[kind]
    record = from_dict(entry["record"])
    if telemetry.db.read(f"SELECT 1 FROM {table} WHERE {key} = ?", (getattr(record, key),)):
        return False
    getattr(telemetry, save)(record)
    return True


def step_record_from_dict(data: dict[str, Any]) -> StepRecord:
    from mimir.core.events import ModelEvent
    from mimir.core.gpu import GpuMemory
    from mimir.core.records import StepRecord

    names = {f.name for f in dataclasses.fields(StepRecord)}
    fields = {k: v for k, v in data.items() if k in names}
    fields["gpu_devices"] = tuple(GpuMemory(**d) for d in data.get("gpu_devices") or ())
    fields["events"] = tuple(ModelEvent(**e) for e in data.get("events") or ())
    return StepRecord(**fields)


def turn_record_from_dict(data: dict[str, Any]) -> TurnRecord:
    from mimir.core.records import TurnRecord

    names = {f.name for f in dataclasses.fields(TurnRecord)}
    fields = {k: v for k, v in data.items() if k in names}
    fields["steps"] = tuple(step_record_from_dict(s) for s in data.get("steps") or ())
    return TurnRecord(**fields)


#: Telemetry kind -> (from dict, table, key column = record field, TelemetryStore method).
_TELEMETRY = {
    "telemetry_turn": (turn_record_from_dict, "telemetry_turns", "turn_id", "save_turn"),
    "telemetry_step": (step_record_from_dict, "telemetry_steps", "step_id", "save_step"),
}
