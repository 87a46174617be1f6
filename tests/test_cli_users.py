"""``mimir users``, ``mimir keys``, ``mimir audit``, ``mimir sessions delete`` and the
``[storage]`` retention, as a user runs them: real subprocesses on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mimir.app import MimirApp
from mimir.config import load_settings

PASSWORD = "correct horse battery"
SCRIPTED = """
[models.default]
backend = "scripted"
path = "scripted"
options = { replies = ["Math is your strongest subject."] }

[tutor]
thinking = false
"""


def mimir(*args: str, stdin: str | None = None, config: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if config is not None:
        env["MIMIR_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "mimir.cli.main", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def test_users_add_list_passwd_remove_with_audit():
    out = mimir("users", "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "added admin 'ada'"
    assert mimir("users", "add", "sam", "--password-stdin", stdin="student pass\n").returncode == 0
    listed = json.loads(mimir("users", "list", "--json").stdout)
    assert [(u["name"], u["role"]) for u in listed] == [("ada", "admin"), ("sam", "student")]
    assert PASSWORD not in json.dumps(listed)
    assert mimir("users", "passwd", "sam", "--password-stdin", stdin="a newer password\n").returncode == 0
    assert mimir("users", "remove", "sam").returncode == 0

    refused = mimir("users", "remove", "ada")
    assert refused.returncode == 2 and "last admin" in refused.stderr and "Traceback" not in refused.stderr
    audit = json.loads(mimir("audit", "--json").stdout)
    assert [(e["action"], e["target"]) for e in audit] == [
        ("user.add", "ada"), ("user.add", "sam"), ("user.passwd", "sam"), ("user.remove", "sam")]
    assert all(e["actor"].startswith("cli:") for e in audit)
    assert "user.remove" in mimir("audit").stdout


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (("users", "add", "", "--password-stdin"), PASSWORD, "user name is empty"),
        (("users", "add", "x" * 500, "--password-stdin"), PASSWORD, "too long"),
        (("users", "add", "bad\x1bname", "--password-stdin"), PASSWORD, "control characters"),
        (("users", "add", "sam", "--password-stdin"), "\n", "password is empty"),
        (("users", "add", "sam", "--password-stdin"), "x" * 5000, "too long"),
        (("users", "add", "sam", "--password-stdin"), "bell\x07password", "control characters"),
        (("users", "add", "sam", "--role", "root", "--password-stdin"), PASSWORD, "unknown role 'root'"),
        (("users", "add", "sam"), PASSWORD, "--password-stdin"),  # stdin is not a terminal
        (("users", "passwd", "nobody", "--password-stdin"), PASSWORD, "no user 'nobody'"),
        (("keys", "revoke", "nope"), None, "no API key 'nope'"),
    ],
)
def test_bad_input_is_one_clear_line(args, stdin, fragment):
    out = mimir(*args, stdin=stdin)
    assert out.returncode == 2, out
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert json.loads(mimir("users", "list", "--json").stdout) == []


def test_keys_create_prints_the_key_once_and_revoke_works():
    mimir("users", "add", "sam", "--password-stdin", stdin=PASSWORD)
    out = mimir("keys", "create", "sam")
    assert out.returncode == 0, out.stderr
    key = out.stdout
    assert key.endswith("\n") and key.count("\n") == 1 and key.startswith("mimir-")
    (listed,) = json.loads(mimir("keys", "list", "--json").stdout)
    assert listed["user"] == "sam" and listed["active"] and key.strip() not in json.dumps(listed)
    assert key.startswith(f"mimir-{listed['id']}-")
    assert mimir("keys", "revoke", listed["id"]).returncode == 0
    assert not json.loads(mimir("keys", "list", "--json").stdout)[0]["active"]
    with MimirApp(load_settings()) as app:
        db_text = json.dumps([dict(r) for r in app.db.read("SELECT * FROM api_keys")])
    assert key.strip().rsplit("-", 1)[1] not in db_text
    actions = [e["action"] for e in json.loads(mimir("audit", "--json").stdout)]
    assert actions == ["user.add", "key.create", "key.revoke"]


def test_sessions_delete_removes_turns_telemetry_and_chart_files(tmp_path):
    pytest.importorskip("matplotlib")
    config = tmp_path / "mimir.toml"
    config.write_text(SCRIPTED)
    with MimirApp(load_settings(config)) as app:
        kept = app.tutor.run_turn("What is summation?")
        gone = app.tutor.run_turn("Make a bar chart of my scores: math 90, history 75, art 60")
        app.telemetry.flush()
        chart = Path(gone.chart_path)
        assert chart.is_file()
    out = mimir("sessions", "delete", gone.session_id, config=config)
    assert out.returncode == 0, out.stderr
    assert "1 turns" in out.stdout and "1 chart files" in out.stdout
    assert not chart.exists()
    with MimirApp(load_settings(config)) as app:
        rows = app.db.read("SELECT COUNT(*) AS n FROM telemetry_steps WHERE session_id = ?", (gone.session_id,))
        assert rows[0]["n"] == 0
        assert app.db.read("SELECT COUNT(*) AS n FROM telemetry_turns WHERE session_id = ?",
                           (gone.session_id,))[0]["n"] == 0
        assert app.db.read("SELECT COUNT(*) AS n FROM telemetry_steps WHERE session_id = ?",
                           (kept.session_id,))[0]["n"] > 0
        (entry,) = app.audit.entries(action="session.delete")
        assert entry.target == gone.session_id and entry.detail["charts"] == 1


def test_sessions_delete_never_touches_a_chart_path_outside_the_charts_folder(tmp_path):
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"png")
    with MimirApp(load_settings()) as app:
        sid = app.conversations.create_session()
        app.conversations.add_turn(turn_id="t-x", session_id=sid, user_message="hi", response="hello", status="ok",
                                   tool_output_path=str(outside))
    out = mimir("sessions", "delete", sid)
    assert out.returncode == 0 and "0 chart files" in out.stdout
    assert outside.exists()


def test_telemetry_retention_deletes_old_telemetry_only_when_set(tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text(SCRIPTED)
    with MimirApp(load_settings(config)) as app:
        app.tutor.run_turn("What is summation?")
        app.telemetry.flush()
        with app.db.write() as conn:  # make it 40 days old
            conn.execute("UPDATE telemetry_steps SET started_at = started_at - 40 * 86400")
            conn.execute("UPDATE telemetry_turns SET started_at = started_at - 40 * 86400")
        steps = app.db.read("SELECT COUNT(*) AS n FROM telemetry_steps")[0]["n"]
        assert steps > 0
    assert mimir("sessions", "list", config=config).returncode == 0  # off by default: kept
    with MimirApp(load_settings(config)) as app:
        assert app.db.read("SELECT COUNT(*) AS n FROM telemetry_steps")[0]["n"] == steps
        app.tutor.run_turn("And what is a product?")
        app.telemetry.flush()
    config.write_text(SCRIPTED + '\n[storage]\ntelemetry_retention = "30d"\n')
    assert mimir("sessions", "list", config=config).returncode == 0
    with MimirApp(load_settings(config)) as app:
        left = app.db.read("SELECT MIN(started_at) AS t, COUNT(*) AS n FROM telemetry_steps")[0]
        assert 0 < left["n"] < steps + left["n"] and left["t"] > time.time() - 86400
        assert app.db.read("SELECT COUNT(*) AS n FROM telemetry_turns")[0]["n"] == 1
        assert len(app.conversations.list_sessions()) == 2  # conversations are not telemetry


def test_bad_retention_names_the_key(tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text('[storage]\ntelemetry_retention = "soon"\n')
    out = mimir("sessions", "list", config=config)
    assert out.returncode == 2 and "storage.telemetry_retention" in out.stderr


def test_cache_prune_from_the_cli_is_audited_and_a_dry_run_is_not(tmp_path):
    from cache_trees import build_cache

    tree = build_cache(tmp_path / "hf")
    assert mimir("cache", "prune", "--unreferenced", "--cache-dir", str(tree.root)).returncode == 0
    assert json.loads(mimir("audit", "--json").stdout) == []  # a dry run deletes nothing
    out = mimir("cache", "prune", "--unreferenced", "--yes", "--cache-dir", str(tree.root))
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(mimir("audit", "--json").stdout)
    assert entry["action"] == "cache.prune" and entry["actor"].startswith("cli:")
    assert entry["target"] == str(tree.root) and entry["detail"]["freed_bytes"] > 0
