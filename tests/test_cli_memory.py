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


def by_name(steps: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in steps}


def loads_in(steps: list[dict]) -> list[tuple[str, dict]]:
    return [(s["name"], e) for s in steps for e in s["events"] if e["kind"] == "load"]


def test_ask_json_prints_the_turn_with_its_steps(scripted_config):
    out = run("--config", str(scripted_config), "ask", "--json", "What is summation?")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["response"] == "Summation adds a sequence of numbers."
    steps = data["steps"]
    assert [s["seq"] for s in steps] == list(range(len(steps)))
    for key in ("name", "agent", "model", "wall_s", "rss_before_bytes", "rss_after_bytes", "rss_peak_bytes",
                "cuda_peak_allocated_bytes", "events"):
        assert all(key in s for s in steps), key
    response = by_name(steps)["response"]
    assert (response["agent"], response["model"]) == ("response", "tutor")
    assert response["tokens_out"] == 6 and response["tokens_in"] > 0
    # The scripted model really allocates 24 MiB: the step that loaded it shows it.
    ((name, load),) = loads_in(steps)
    loading = by_name(steps)[name]
    assert load["model_id"] == "tutor" and load["estimate_bytes"] == 24 * MiB and load["measured_bytes"] >= 20 * MiB
    assert loading["rss_after_bytes"] - loading["rss_before_bytes"] >= 20 * MiB
    assert all(s["rss_peak_bytes"] >= s["rss_after_bytes"] for s in steps)
    assert data["peak_rss_bytes"] >= max(s["rss_peak_bytes"] for s in steps)
    assert all(s["cuda_peak_allocated_bytes"] is None for s in steps)


def test_memory_shows_what_ask_stored(scripted_config):
    turns = []
    for question in ("one?", "two?", "three?"):
        out = run("--config", str(scripted_config), "ask", "--json", question)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        turns.append((data["turn_id"], [s["name"] for s in data["steps"]]))

    out = run("--config", str(scripted_config), "memory", "--json", "--last", "2")
    assert out.returncode == 0, out.stderr
    steps = json.loads(out.stdout)["steps"]
    expected = [(turn_id, name) for turn_id, names in turns[1:] for name in names]
    assert [(s["turn_id"], s["name"]) for s in steps] == expected
    for turn_id, _ in turns[1:]:  # each ask is a new process: one load per turn
        assert len(loads_in([s for s in steps if s["turn_id"] == turn_id])) == 1

    first_turn, first_names = turns[0]
    out = run("--config", str(scripted_config), "memory", "--turn", first_turn, "--csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["name"] for r in rows] == first_names and {r["turn_id"] for r in rows} == {first_turn}
    assert all(int(r["rss_peak_bytes"]) >= int(r["rss_after_bytes"]) for r in rows)
    assert [r for r in rows if r["name"] == "response"][0]["model"] == "tutor"
    assert sum(r["events"].startswith("load tutor measured=") for r in rows) == 1

    out = run("--config", str(scripted_config), "memory", env={"COLUMNS": "160"})
    assert out.returncode == 0, out.stderr
    for header in ("step", "model", "time", "RSS after", "peak", "delta", "events"):
        assert header in out.stdout
    assert out.stdout.count("response") == 3 and out.stdout.count("load tutor") == 3


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
    ((_, load),) = loads_in(ask["steps"])
    measured = load["measured_bytes"]
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
    out = run("--config", str(scripted_config), "-v", "ask", "What is summation?")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "mimir.telemetry" in line]
    stored = json.loads(run("--config", str(scripted_config), "memory", "--json").stdout)["steps"]
    assert [line.split("step=")[1].split()[0] for line in lines] == [s["name"] for s in stored]
    (response,) = [line for line in lines if "step=response " in line]
    assert "agent=response model=tutor" in response and " rss=" in response and " peak=" in response
    assert sum("loads=1 evictions=0" in line for line in lines) == 1


@pytest.mark.slow
def test_ask_json_on_the_bundled_model_records_its_load():
    out = run("ask", "--json", "--max-tokens", "4", "What is a triangle?", timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    ((name, load),) = loads_in(data["steps"])
    step = by_name(data["steps"])[name]
    assert load["model_id"] == "default" and load["measured_bytes"] > 90 * MiB
    assert step["rss_after_bytes"] - step["rss_before_bytes"] >= load["measured_bytes"] - 16 * MiB
    assert data["peak_rss_bytes"] >= step["rss_after_bytes"]
    stored = json.loads(run("memory", "--json").stdout)["steps"]
    assert {s["turn_id"] for s in stored} == {data["turn_id"]}
    assert [s["name"] for s in stored] == [s["name"] for s in data["steps"]]
    assert loads_in(stored)[0][1]["measured_bytes"] == load["measured_bytes"]
