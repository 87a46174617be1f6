"""``mimir db upgrade | check | copy`` as a user runs them (a real subprocess), on a SQLite file
and on the real PostgreSQL server the suite starts; and /readyz covering the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mimir.core.events import ModelEvent
from mimir.storage.accounts import AccountStore
from mimir.storage.audit import AuditLog
from mimir.storage.conversations import ConversationStore
from mimir.storage.db import Database
from mimir.storage.migrations import MIGRATIONS
from mimir.storage.telemetry_store import TelemetryStore
from mimir.core.records import StepRecord, TurnRecord


def mimir(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mimir.cli.main", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )


def test_check_and_upgrade_on_the_default_sqlite_file():
    first = mimir("db", "check")
    assert first.returncode == 0, first.stderr
    assert "mimir.db" in first.stdout and f"pending    {len(MIGRATIONS)}" in first.stdout
    up = mimir("db", "upgrade")
    assert up.returncode == 0 and f"{len(MIGRATIONS)} migration(s) applied" in up.stdout
    assert "up to date" in mimir("db", "upgrade").stdout
    report = json.loads(mimir("db", "check", "--json").stdout)
    assert report["engine"] == "sqlite" and report["pending"] == [] and report["schema_version"] == MIGRATIONS[-1][0]


def test_check_on_postgres_with_a_password_never_prints_it(postgres_server):
    from pg_server import PASSWORD_USER

    name = postgres_server.new_database()
    try:
        env = {
            "MIMIR_DATABASE_URL": postgres_server.url(name, user=PASSWORD_USER),
            "MIMIR_DATABASE_PASSWORD": postgres_server.password,
        }
        up = mimir("db", "upgrade", env=env)
        assert up.returncode == 0, up.stderr
        out = mimir("db", "check", env=env)
        assert out.returncode == 0, out.stderr
        assert "PostgreSQL 1" in out.stdout and "pending    none" in out.stdout
        bad = mimir("db", "check", env={**env, "MIMIR_DATABASE_PASSWORD": "wrong-" + postgres_server.password})
        assert bad.returncode == 8 and "password authentication failed" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        for result in (up, out, bad):
            assert postgres_server.password not in result.stdout + result.stderr
    finally:
        postgres_server.drop_database(name)


def _populate(path) -> dict[str, int]:
    fields = {f: None for f in StepRecord.__dataclass_fields__}
    with Database.open(path) as db:
        conv, tel = ConversationStore(db), TelemetryStore(db)
        for s in range(3):
            sid = conv.create_session()
            for t in range(4):
                turn_id = f"t{s}-{t}"
                conv.add_turn(turn_id=turn_id, session_id=sid, user_message=f"q {s} {t} 50% ?", response="a", status="ok")
                steps = tuple(
                    StepRecord(**{**fields, "step_id": f"{turn_id}-{k}", "session_id": sid, "turn_id": turn_id, "seq": k,
                                  "name": "response", "started_at": 1_790_000_000.5 + k, "wall_s": 0.25,
                                  "rss_peak_bytes": 6 * 1024**3, "gpu_devices": (),
                                  "events": (ModelEvent("load", "small", "first use", 100, 120, 0.1, "ram", 1.0),)})
                    for k in range(2)
                )
                tel.save_turn(TurnRecord(sid, turn_id, 1_790_000_000.0, 1.0, steps, 7 * 1024**3))
        tel.save_event(ModelEvent("unload", "small", "shutdown", 100, None, None, "ram", 2.0))
        # Tables other features added through migrations move too: accounts, audit, math.
        accounts = AccountStore(db)
        accounts.add_user("ada", "admin", "correct horse battery")
        accounts.create_key("ada")
        AuditLog(db).record("cli", "user.add", "ada", {"role": "admin"})
        conv.add_math("t0-0", conv.get_turn("t0-0").session_id, {"question": "2x = 6", "key": {"answer": "3"}, "open": True})
        return {n: db.read(f"SELECT COUNT(*) FROM {n}")[0][0] for n in (
            "sessions", "turns", "telemetry_turns", "telemetry_steps", "telemetry_events", "users", "api_keys",
            "audit_log", "turn_math")}


def _contents(db: Database, table: str) -> list[tuple]:
    return sorted(tuple(r) for r in db.read(f"SELECT * FROM {table}"))


def test_copy_moves_every_row_and_checks_the_counts(tmp_path, postgres_url):
    source = tmp_path / "old" / "mimir.db"
    counts = _populate(source)
    out = mimir("db", "copy", "--from", str(source), "--to", postgres_url)
    assert out.returncode == 0, out.stderr
    total = sum(counts.values())
    assert f"copied {total} of {total} rows" in out.stdout and "every row accounted for" in out.stdout
    with Database.open(source) as src, Database.open(postgres_url) as dst:
        for table, n in counts.items():
            assert dst.read(f"SELECT COUNT(*) FROM {table}")[0][0] == n
            assert _contents(dst, table) == _contents(src, table)
        # Row ids continue after the copied ones (identity sequences moved past them).
        TelemetryStore(dst).save_turn(TurnRecord(None, "after-copy", 1.0, 1.0, (), None))
        ids = [r[0] for r in dst.read("SELECT id FROM telemetry_turns ORDER BY id")]
        assert len(set(ids)) == len(ids) == counts["telemetry_turns"] + 1
        # Users and keys copied work on the new database.
        assert AccountStore(dst).authenticate("ada", "correct horse battery").name == "ada"
        # The copied sessions continue on the new database.
        conv = ConversationStore(dst)
        sid = conv.list_sessions()[0].id
        turn = conv.add_turn(turn_id="next", session_id=sid, user_message="more", response="b", status="ok")
        assert turn.seq == 5
    again = mimir("db", "copy", "--from", str(source), "--to", postgres_url)
    assert again.returncode == 8 and "not empty" in again.stderr


def test_copy_dry_run_copies_nothing(tmp_path, postgres_url):
    source = tmp_path / "mimir.db"
    counts = _populate(source)
    out = mimir("db", "copy", "--from", str(source), "--to", postgres_url, "--dry-run")
    assert out.returncode == 0, out.stderr and f"{sum(counts.values())} rows" in out.stdout
    with Database.open(postgres_url) as dst:
        assert dst.read("SELECT COUNT(*) FROM turns")[0][0] == 0


def test_readyz_covers_the_postgres_database(postgres_server, postgres_url, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mimir.api.ops import install_ops
    from mimir.app import MimirApp
    from mimir.config import settings_from_dict

    monkeypatch.setenv("MIMIR_DATABASE_URL", postgres_url)
    app = MimirApp(settings_from_dict({"models": {"m": {"backend": "scripted", "path": "s"}}, "server": {"ready_cache": 0}}))
    with app:
        api = FastAPI()
        install_ops(api, app)
        client = TestClient(api)
        ok = client.get("/readyz")
        assert ok.status_code == 200 and "primary" in ok.json()["checks"]["database"]["detail"]
        postgres_server.stop()
        try:
            down = client.get("/readyz")
        finally:
            postgres_server.start_again()
        assert down.status_code == 503 and down.json()["failing"] == ["database"]
        assert "127.0.0.1" in down.json()["checks"]["database"]["detail"]
        assert client.get("/readyz").status_code == 200
