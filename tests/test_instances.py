"""Two real ``mimir serve`` processes on one PostgreSQL database behave as one service: they start
at the same moment and migrate once, a session started on one continues on the other, and
``mimir memory`` shows the turns of both, each labelled with its instance.

The models are the scripted backend (real processes, real HTTP, real PostgreSQL; only the
words are canned), so the test is about shared state, not about generation speed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

CONFIG = """
[models.m]
backend = "scripted"
path = "scripted"
options = { replies = ["Summation adds the numbers of a sequence."] }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, name: str, url: str, port: int) -> subprocess.Popen:
    home = tmp_path / name
    home.mkdir()
    config = tmp_path / "mimir.toml"
    env = {**os.environ, "MIMIR_HOME": str(home), "MIMIR_CONFIG": str(config), "MIMIR_DATABASE_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "mimir.cli.main", "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def _wait_ready(proc: subprocess.Popen, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mimir serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("mimir serve did not answer /healthz in time")


def _ask(port: int, message: str, session_id: str) -> dict:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "mimir-tutor", "messages": [{"role": "user", "content": message}], "session_id": session_id},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_two_instances_share_one_database(tmp_path, postgres_url):
    from mimir.storage.conversations import ConversationStore
    from mimir.storage.db import Database
    from mimir.storage.migrations import MIGRATIONS

    (tmp_path / "mimir.toml").write_text(CONFIG)
    ports = [_free_port(), _free_port()]
    # Both start at the same moment on an empty database: both migrate concurrently at start.
    procs = [_start(tmp_path, f"home-{i}", postgres_url, port) for i, port in enumerate(ports)]
    try:
        deadline = time.monotonic() + 300
        for proc, port in zip(procs, ports):
            _wait_ready(proc, port, deadline)
        with Database.open(postgres_url, migrate=False) as db:
            names = [r[0] for r in db.read("SELECT name FROM _migrations")]
            assert sorted(names) == sorted(n for n, _ in MIGRATIONS)  # each recorded once

        first = _ask(ports[0], "What is summation?", "new")
        session_id = first["mimir"]["session_id"]
        second = _ask(ports[1], "And what is 2 + 3?", session_id)  # the session continues on the other
        assert second["mimir"]["session_id"] == session_id
        third = _ask(ports[0], "Thanks!", session_id)

        host = socket.gethostname()
        with Database.open(postgres_url) as db:
            turns = ConversationStore(db).turns(session_id)
            assert [t.id for t in turns] == [r["mimir"]["turn_id"] for r in (first, second, third)]
            assert [t.seq for t in turns] == [1, 2, 3]
            assert [t.instance for t in turns] == [f"{host}:{ports[0]}", f"{host}:{ports[1]}", f"{host}:{ports[0]}"]

        # Either instance's home sees the same sessions: the state is the database, not the process.
        env = {**os.environ, "MIMIR_DATABASE_URL": postgres_url, "MIMIR_HOME": str(tmp_path / "elsewhere")}
        listed = subprocess.run(
            [sys.executable, "-m", "mimir.cli.main", "sessions", "list", "--json"],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert listed.returncode == 0, listed.stderr
        assert [s["turn_count"] for s in json.loads(listed.stdout) if s["id"] == session_id] == [3]
        memory = subprocess.run(
            [sys.executable, "-m", "mimir.cli.main", "memory", "--last", "3", "--json"],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert memory.returncode == 0, memory.stderr
        by_turn = {s["turn_id"]: s["instance"] for s in json.loads(memory.stdout)["steps"]}
        assert by_turn[first["mimir"]["turn_id"]] == f"{host}:{ports[0]}"
        assert by_turn[second["mimir"]["turn_id"]] == f"{host}:{ports[1]}"
        table = subprocess.run(
            [sys.executable, "-m", "mimir.cli.main", "memory", "--last", "3"],
            capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=120,
        )
        assert "instance" in table.stdout and f"{host}:{ports[1]}" in table.stdout
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
