"""Credentials in model URLs never reach a page, an error, a log line or the database:
real CLI runs against a remote model whose URL carries a password, and nothing listening."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from mimir.app import MimirApp
from mimir.config import load_settings
from mimir.errors import GenerationError
from mimir.models.spec import ModelSource
from mimir.redact import redact_secrets

SECRET = "hunter2-very-secret"


def test_passwords_and_secret_query_values_are_masked():
    assert redact_secrets(f"https://bob:{SECRET}@gpu:8000/v1") == "https://bob:***@gpu:8000/v1"
    assert redact_secrets(f"http://h:1/v1?api_key={SECRET}&x=1") == "http://h:1/v1?api_key=***&x=1"
    assert redact_secrets(f"see http://h/v1?token={SECRET}#frag") == "see http://h/v1?token=***#frag"
    for kept in ("http://host:8000/v1", "postgresql://mimir@db:5432/mimir", "no url at all", "a=b"):
        assert redact_secrets(kept) == kept


def test_redaction_stays_fast_on_hostile_text():
    hostile = ("a://" + "b:" * 50_000) + ("x" * 100_000) + ("?key=" * 20_000)
    started = time.perf_counter()
    redact_secrets(hostile)
    assert time.perf_counter() - started < 5  # linear: a generous bound, not a benchmark


def test_errors_and_model_descriptions_never_carry_the_password():
    error = GenerationError("big", f"cannot reach https://bob:{SECRET}@gpu:8000/v1/chat/completions")
    assert SECRET not in str(error) and "bob:***@gpu" in str(error)
    source = ModelSource("url", f"https://bob:{SECRET}@gpu:8000/v1")
    assert source.describe() == "url:https://bob:***@gpu:8000/v1"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failing_remote_model_leaks_its_password_nowhere(tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text(f"""
[models.remote]
backend = "openai"
url = "http://bob:{SECRET}@127.0.0.1:{_closed_port()}/v1"
options = {{ model = "m", timeout_s = 5 }}

[tutor]
thinking = false
""")
    env = {**os.environ, "MIMIR_CONFIG": str(config)}

    def mimir(*args):
        return subprocess.run([sys.executable, "-m", "mimir.cli.main", "-v", *args], capture_output=True,
                              text=True, env=env, timeout=180)

    listed = mimir("models", "--json")
    assert listed.returncode == 0, listed.stderr
    assert SECRET not in listed.stdout + listed.stderr and "bob:***@127.0.0.1" in listed.stdout
    asked = mimir("ask", "What is a fraction?")
    assert asked.returncode != 0
    assert "bob:***@127.0.0.1" in asked.stderr
    assert SECRET not in asked.stdout + asked.stderr  # the error line and the -v log lines
    with MimirApp(load_settings(config)) as app:
        dump = json.dumps([dict(zip(r.keys(), r)) for table in ("turns", "telemetry_steps", "telemetry_turns",
                                                               "telemetry_events")
                           for r in app.db.read(f"SELECT * FROM {table}")], default=str)
    assert "bob:***@127.0.0.1" in dump and SECRET not in dump
