"""``mimir serve`` shuts down gracefully on SIGTERM (a real server process, real HTTP).

It stops admitting turns, lets running turns finish within ``[server] shutdown_timeout`` (or
stops them past it), then closes the database cleanly: no partial turn, every telemetry record
flushed, the WAL checkpointed away. Issue 15's promise about SIGTERM is the first test."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("gradio")

from serving import Server  # noqa: E402

WORDS = 40


def _config(path: Path, shutdown_timeout: str) -> Path:
    reply = " ".join(f"w{i}" for i in range(WORDS))
    path.write_text(f"""
[models.default]
backend = "scripted"
path = "scripted"
options = {{ replies = ["{reply}"], token_s = 0.1 }}

[tutor]
thinking = false

[server]
shutdown_timeout = "{shutdown_timeout}"
""")
    return path


def _serve(tmp_path: Path, shutdown_timeout: str) -> tuple[Server, str, Path]:
    home = tmp_path / "home"
    env = {**os.environ, "MIMIR_HOME": str(home), "MIMIR_CONFIG": str(_config(tmp_path / "mimir.toml", shutdown_timeout)),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    server = Server(env)
    return server, server.ready_url(), home


def _stream_in_thread(url: str, lines: list[str], started: threading.Event) -> threading.Thread:
    body = {"model": "mimir-tutor", "stream": True, "session_id": "new",
            "messages": [{"role": "user", "content": "Tell me about fractions"}]}

    def run() -> None:
        try:
            with httpx.stream("POST", url + "v1/chat/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if not line:
                        continue  # the blank line ending each event
                    lines.append(line)
                    if '"content": "w' in line:
                        started.set()
        except httpx.HTTPError as exc:
            lines.append(f"error: {exc}")
        finally:
            started.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _sigterm_mid_answer(tmp_path: Path, shutdown_timeout: str) -> tuple[list[str], Path]:
    """Serve, start a streamed tutor turn, send SIGTERM once the answer is flowing; the
    stream's lines and the home once the server has exited."""
    server, url, home = _serve(tmp_path, shutdown_timeout)
    lines: list[str] = []
    started = threading.Event()
    try:
        client = _stream_in_thread(url, lines, started)
        assert started.wait(120), server.output
        server.proc.send_signal(signal.SIGTERM)  # mid-answer
        client.join(120)
        assert server.wait(120) in (0, -signal.SIGTERM), server.output  # cleaned up, then the signal
    finally:
        server.stop()
    return lines, home


def _database(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(home / "mimir.db"))


def test_sigterm_during_a_turn_finishes_it_closes_the_database_cleanly_and_flushes_all_telemetry(tmp_path):
    lines, home = _sigterm_mid_answer(tmp_path, "60s")
    assert lines[-1] == "data: [DONE]", lines[-5:]
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                   for line in lines if line.startswith("data: {") and '"choices"' in line)
    assert text == " ".join(f"w{i}" for i in range(WORDS))  # the whole answer arrived
    assert not (home / "mimir.db-wal").exists() or (home / "mimir.db-wal").stat().st_size == 0
    with _database(home) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        turns = db.execute("SELECT id, status, response FROM turns").fetchall()
        assert [(status, response) for _, status, response in turns] == [("ok", text)]  # no partial turn
        [(steps,)] = db.execute("SELECT step_count FROM telemetry_turns WHERE turn_id = ?", (turns[0][0],)).fetchall()
        stored_steps = db.execute("SELECT COUNT(*) FROM telemetry_steps WHERE turn_id = ?", (turns[0][0],)).fetchone()[0]
        assert steps >= 3 and stored_steps == steps  # every telemetry record flushed
    assert not (home / "spool.jsonl").exists()


def test_a_turn_outliving_the_shutdown_timeout_is_stopped_and_stored_as_failed(tmp_path):
    lines, home = _sigterm_mid_answer(tmp_path, "1s")
    assert any("shutting down" in line for line in lines), lines[-5:]
    with _database(home) as db:
        [(status, error)] = db.execute("SELECT status, error FROM turns").fetchall()
        assert status == "failed" and "shutting down" in error
        assert db.execute("SELECT COUNT(*) FROM telemetry_turns").fetchone()[0] == 1
