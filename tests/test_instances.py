"""Two real ``mimir serve`` processes on one PostgreSQL database behave as one service: they start
at the same moment and migrate once, a user and key created once work on both, a sign-in on
one is valid on the other, a session started on one continues on the other, and
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
from contextlib import contextmanager

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

CONFIG = """
[models.m]
backend = "scripted"
path = "scripted"
options = { replies = ["Summation adds the numbers of a sequence."], token_s = 0.2 }

[tutor]
thinking = false
"""
AUTH = """
[server]
auth = "password"
"""
PASSWORD = "correct horse battery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _two_instances(tmp_path, url: str, config: str):
    """Two ``mimir serve`` processes started at the same moment, each with its own home and port."""
    path = tmp_path / f"mimir-{time.monotonic_ns()}.toml"
    path.write_text(config)
    ports = [_free_port(), _free_port()]
    procs = []
    for port in ports:
        home = tmp_path / f"home-{port}"
        env = {**os.environ, "MIMIR_HOME": str(home), "MIMIR_CONFIG": str(path), "MIMIR_DATABASE_URL": url}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mimir.cli.main", "serve", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        ))
    try:
        deadline = time.monotonic() + 300
        for proc, port in zip(procs, ports):
            _wait_ready(proc, port, deadline)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mimir serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code in (200, 303, 404):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("mimir serve did not answer in time")


def _ask(port: int, message: str, session_id: str, key: str | None = None) -> dict:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "mimir-tutor", "messages": [{"role": "user", "content": message}], "session_id": session_id},
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _cli(env: dict, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "mimir.cli.main", *args], input=stdin, capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_two_instances_share_one_database(tmp_path, postgres_url):
    from mimir.storage.conversations import ConversationStore
    from mimir.storage.db import Database
    from mimir.storage.migrations import MIGRATIONS

    host = socket.gethostname()
    # Both start at the same moment on an empty database: both migrate at start, each migration once.
    with _two_instances(tmp_path, postgres_url, CONFIG) as ports:
        with Database.open(postgres_url, migrate=False) as db:
            names = [r[0] for r in db.read("SELECT name FROM _migrations")]
            assert sorted(names) == sorted(n for n, _ in MIGRATIONS)

        first = _ask(ports[0], "What is summation?", "new")
        session_id = first["mimir"]["session_id"]
        second = _ask(ports[1], "And what is 2 + 3?", session_id)  # the session continues on the other
        assert second["mimir"]["session_id"] == session_id
        third = _ask(ports[0], "Thanks!", session_id)

        with Database.open(postgres_url) as db:
            turns = ConversationStore(db).turns(session_id)
            assert [t.id for t in turns] == [r["mimir"]["turn_id"] for r in (first, second, third)]
            assert [t.seq for t in turns] == [1, 2, 3]
            assert [t.instance for t in turns] == [f"{host}:{ports[0]}", f"{host}:{ports[1]}", f"{host}:{ports[0]}"]

        # Any home sees the same sessions and telemetry: the state is the database, not the process.
        env = {**os.environ, "MIMIR_DATABASE_URL": postgres_url, "MIMIR_HOME": str(tmp_path / "elsewhere")}
        listed = json.loads(_cli(env, "sessions", "list", "--json"))
        assert [s["turn_count"] for s in listed if s["id"] == session_id] == [3]
        steps = json.loads(_cli(env, "memory", "--last", "3", "--json"))["steps"]
        by_turn = {s["turn_id"]: s["instance"] for s in steps}
        assert by_turn[first["mimir"]["turn_id"]] == f"{host}:{ports[0]}"
        assert by_turn[second["mimir"]["turn_id"]] == f"{host}:{ports[1]}"
        table = _cli({**env, "COLUMNS": "200"}, "memory", "--last", "3")
        assert "instance" in table and f"{host}:{ports[1]}" in table

        # One turn at a time per user, counted across both instances (per_user_concurrency = 1).
        body = {"model": "mimir-tutor", "messages": [{"role": "user", "content": "Tell me more"}],
                "session_id": session_id, "user": "sam"}
        with httpx.stream("POST", f"http://127.0.0.1:{ports[0]}/v1/chat/completions",
                          json={**body, "stream": True}, timeout=300) as running:
            assert running.status_code == 200
            lines = running.iter_lines()
            for line in lines:
                if line.startswith("data: {") and '"content"' in line:
                    break  # the turn on instance 0 is generating
            busy = httpx.post(f"http://127.0.0.1:{ports[1]}/v1/chat/completions", json=body, timeout=60)
            assert busy.status_code == 429, busy.text
            assert "across every server" in busy.json()["error"]["message"] and "retry-after" in busy.headers
            for _ in lines:
                pass  # the first turn finishes
        for _ in range(100):  # its slot is freed as the worker ends, just after the stream does
            after = httpx.post(f"http://127.0.0.1:{ports[1]}/v1/chat/completions", json=body, timeout=300)
            if after.status_code != 429:
                break
            time.sleep(0.2)
        assert after.status_code == 200, after.text


def test_users_keys_and_sign_ins_work_on_every_instance(tmp_path, postgres_url):
    env = {**os.environ, "MIMIR_DATABASE_URL": postgres_url, "MIMIR_HOME": str(tmp_path / "admin-home")}
    _cli(env, "users", "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    _cli(env, "users", "add", "sam", "--password-stdin", stdin=PASSWORD)
    key = _cli(env, "keys", "create", "sam").strip()
    with _two_instances(tmp_path, postgres_url, CONFIG + AUTH) as ports:
        first = _ask(ports[0], "What is summation?", "new", key)
        second = _ask(ports[1], "And 2 + 3?", first["mimir"]["session_id"], key)
        assert second["mimir"]["session_id"] == first["mimir"]["session_id"]
        refused = httpx.post(f"http://127.0.0.1:{ports[1]}/v1/chat/completions", timeout=60,
                             json={"model": "mimir-tutor", "messages": [{"role": "user", "content": "hi"}]},
                             headers={"Authorization": "Bearer not-a-key"})
        assert refused.status_code == 401

        # A sign-in on one instance is valid on the other (sign-ins live in the database).
        signed = httpx.post(f"http://127.0.0.1:{ports[0]}/login",
                            data={"name": "sam", "password": PASSWORD, "next": "/"}, timeout=60)
        assert signed.status_code == 303, signed.text
        cookie = {"mimir_session": signed.cookies["mimir_session"]}
        page = httpx.get(f"http://127.0.0.1:{ports[1]}/", cookies=cookie, headers={"Accept": "text/html"}, timeout=60)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        anonymous = httpx.get(f"http://127.0.0.1:{ports[1]}/", headers={"Accept": "text/html"}, timeout=60)
        assert anonymous.status_code == 303

        # A key revoked through one instance's database stops working on both.
        key_id = json.loads(_cli(env, "keys", "list", "--json"))[0]["id"]
        _cli(env, "keys", "revoke", key_id)
        for port in ports:
            gone = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                              json={"model": "mimir-tutor", "messages": [{"role": "user", "content": "hi"}]},
                              headers={"Authorization": f"Bearer {key}"})
            assert gone.status_code == 401
