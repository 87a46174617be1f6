"""``mimir ask --json`` and ``mimir memory`` as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MiB = 1024 * 1024


def run(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mimir.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def scripted_config(tmp_path: Path) -> Path:
    """A config whose response model is a scripted model that really allocates 24 MiB."""
    path = tmp_path / "mimir.toml"
    path.write_text(
        """
[models.tutor]
backend = "scripted"
path = "scripted-tutor"
options = { size_bytes = 25165824, replies = ["Summation adds a sequence of numbers."] }

[roles]
tool_decision = "tutor"
routing = "tutor"
thinking = "tutor"
response = "tutor"
"""
    )
    return path


def test_ask_json_prints_the_turn_with_its_steps(scripted_config):
    out = run("--config", str(scripted_config), "ask", "--json", "What is summation?")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["response"] == "Summation adds a sequence of numbers."
    (step,) = data["steps"]
    assert (step["name"], step["agent"], step["model"]) == ("response", "response", "tutor")
    assert step["tokens_out"] == 6 and step["tokens_in"] > 0
    assert step["rss_after_bytes"] - step["rss_before_bytes"] >= 20 * MiB  # the model's 24 MiB
    assert step["rss_peak_bytes"] >= step["rss_after_bytes"]
    assert data["peak_rss_bytes"] >= step["rss_peak_bytes"]
    assert step["cuda_peak_allocated_bytes"] is None
    (load,) = step["events"]
    assert load["kind"] == "load" and load["model_id"] == "tutor"
    assert load["estimate_bytes"] == 24 * MiB and load["measured_bytes"] >= 20 * MiB


def test_memory_shows_what_ask_stored(scripted_config):
    turns = []
    for question in ("one?", "two?", "three?"):
        out = run("--config", str(scripted_config), "ask", "--json", question)
        assert out.returncode == 0, out.stderr
        turns.append(json.loads(out.stdout)["turn_id"])

    out = run("--config", str(scripted_config), "memory", "--json", "--last", "2")
    assert out.returncode == 0, out.stderr
    steps = json.loads(out.stdout)["steps"]
    assert [s["turn_id"] for s in steps] == turns[1:]
    assert all(s["name"] == "response" and s["events"][0]["kind"] == "load" for s in steps)

    out = run("--config", str(scripted_config), "memory", "--turn", turns[0], "--csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 1 and rows[0]["turn_id"] == turns[0] and rows[0]["model"] == "tutor"
    assert int(rows[0]["rss_peak_bytes"]) >= int(rows[0]["rss_after_bytes"])
    assert rows[0]["events"].startswith("load tutor measured=")

    out = run("--config", str(scripted_config), "memory", env={"COLUMNS": "160"})
    assert out.returncode == 0, out.stderr
    for header in ("step", "model", "time", "RSS after", "peak", "delta", "events"):
        assert header in out.stdout
    assert out.stdout.count("response") == 3 and "load tutor" in out.stdout


def test_memory_on_an_empty_store_says_so():
    out = run("memory")
    assert out.returncode == 0, out.stderr
    assert "No steps recorded yet" in out.stdout


def test_memory_for_an_unknown_turn_is_an_error():
    out = run("memory", "--turn", "no-such-turn")
    assert out.returncode == 2
    assert "no-such-turn" in out.stderr


def test_models_shows_the_last_measured_size_from_history(scripted_config):
    before = json.loads(run("--config", str(scripted_config), "models", "--json").stdout)["models"][0]
    assert before["measured_bytes"] is None and before["measured_from"] is None
    ask = json.loads(run("--config", str(scripted_config), "ask", "--json", "hi").stdout)
    measured = ask["steps"][0]["events"][0]["measured_bytes"]
    out = run("--config", str(scripted_config), "models", "--json")
    assert out.returncode == 0, out.stderr
    (model,) = json.loads(out.stdout)["models"]
    assert model["resident"] is False
    assert model["measured_bytes"] == measured and model["measured_from"] == "history"
    assert model["estimate_bytes"] == 24 * MiB


def test_unwritable_home_fails_before_loading(scripted_config, tmp_path):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("x")
    out = run("--config", str(scripted_config), "ask", "hi", env={"MIMIR_HOME": str(blocker / "sub")})
    assert out.returncode == 8
    assert "cannot use database" in out.stderr and "cannot create directory" in out.stderr


def test_verbose_ask_logs_one_line_per_step(scripted_config):
    out = run("--config", str(scripted_config), "-v", "ask", "hello")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "mimir.telemetry" in line]
    assert len(lines) == 1
    assert "step=response agent=response model=tutor" in lines[0] and "loads=1 evictions=0" in lines[0]


@pytest.mark.slow
def test_ask_json_on_the_bundled_model_records_its_load():
    out = run("ask", "--json", "--max-tokens", "4", "What is a triangle?")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    (step,) = data["steps"]
    (load,) = step["events"]
    assert load["model_id"] == "default" and load["measured_bytes"] > 90 * MiB
    assert step["rss_after_bytes"] - step["rss_before_bytes"] >= load["measured_bytes"] - 16 * MiB
    assert data["peak_rss_bytes"] >= step["rss_after_bytes"]
    stored = json.loads(run("memory", "--json").stdout)["steps"]
    assert [s["turn_id"] for s in stored] == [data["turn_id"]]
    assert stored[0]["events"][0]["measured_bytes"] == load["measured_bytes"]
