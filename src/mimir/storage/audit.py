"""The audit log: who did what, when, from where, for every destructive or administrative
action (cache prunes, model unloads, session deletions, user and key changes).

Entries are only ever added. ``actor`` is a user name, ``local`` (the user of ``auth =
"none"``) or ``cli:<os user>`` for commands run on the server machine. Text is capped and
credentials in it are masked before it is stored.
"""

from __future__ import annotations

import getpass
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mimir.redact import redact_secrets
from mimir.storage.db import Database

MAX_FIELD_CHARS = 2000


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: float
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    address: str | None


def cli_actor() -> str:
    try:
        who = getpass.getuser()
    except Exception:  # no user name in this environment
        who = "unknown"
    return f"cli:{who}"


def _cap(text: str | None) -> str | None:
    return None if text is None else redact_secrets(str(text)[:MAX_FIELD_CHARS])


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    def record(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        detail: Mapping[str, Any] | None = None,
        *,
        address: str | None = None,
    ) -> AuditEntry:
        entry = AuditEntry(
            id=f"a-{uuid.uuid4().hex[:16]}",
            at=time.time(),
            actor=_cap(actor) or "unknown",
            action=action,
            target=_cap(target),
            detail=dict(detail or {}),
            address=_cap(address),
        )
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO audit_log (id, at, actor, action, target, detail, address) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (entry.id, entry.at, entry.actor, entry.action, entry.target,
                 _cap(json.dumps(entry.detail, default=str)), entry.address),
            )
        return entry

    def entries(self, *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries, oldest first."""
        where, params = ("WHERE action = ?", [action]) if action else ("", [])
        rows = self.db.read(
            f"SELECT * FROM (SELECT * FROM audit_log {where} ORDER BY at DESC, id DESC LIMIT ?) AS recent ORDER BY at, id",
            (*params, max(0, limit)),
        )
        return [
            AuditEntry(r["id"], r["at"], r["actor"], r["action"], r["target"], _detail(r["detail"]), r["address"])
            for r in rows
        ]


def _detail(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:  # capped mid-way: keep what is there, as text
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}
