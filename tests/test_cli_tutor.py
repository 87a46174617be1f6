"""``mimir ask/chat/sessions/eval`` as a user runs them (real subprocesses, real SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTED = """
[models.default]
backend = "scripted"
path = "scripted"
options = { replies = ["Think about what the sign tells you. What do you get?"] }

[tutor]
thinking_max_tokens = 8
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mimir.toml"
    path.write_text(SCRIPTED)
    return path


def mimir(*args: str, config: Path | None = None, stdin: str | None = None, timeout: float = 120):
    cmd = [sys.executable, "-m", "mimir.cli.main"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def test_ask_json_has_flags_ids_and_steps(config):
    out = mimir("ask", "--json", "Solve 3x - y = 7 and 2x + 3y = 1", config=config)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["session"].startswith("s-") and data["turn"].startswith("t-")
    assert {"GENERAL_FORMATTING", "LATEX_FORMATTING", "GUIDING_TEACHING"} <= set(data["flags"])
    names = [s["name"] for s in data["steps"]]
    assert {"tool_decision", "routing", "rules", "response"} <= set(names)
    for step in data["steps"]:
        assert {"name", "agent", "model", "wall_s", "rss_before_bytes", "rss_after_bytes", "rss_peak_bytes",
                "cuda_peak_allocated_bytes", "events"} <= set(step)
    assert data["peak_rss_bytes"] > 0


def test_sessions_list_show_delete(config):
    first = json.loads(mimir("ask", "--json", "What is osmosis?", config=config).stdout)
    sid = first["session"]
    again = json.loads(mimir("ask", "--json", "--session", sid, "And diffusion?", config=config).stdout)
    assert again["session"] == sid

    listed = json.loads(mimir("sessions", "list", "--json", config=config).stdout)
    assert [s["id"] for s in listed] == [sid] and listed[0]["turn_count"] == 2

    shown = mimir("sessions", "show", sid, config=config)
    assert "What is osmosis?" in shown.stdout and "And diffusion?" in shown.stdout

    deleted = mimir("sessions", "delete", sid, config=config)
    assert deleted.returncode == 0 and "2 turns" in deleted.stdout
    missing = mimir("sessions", "show", sid, config=config)
    assert missing.returncode == 2 and "no session" in missing.stderr


def test_unknown_session_is_a_clear_error(config):
    out = mimir("ask", "--session", "s-nope", "hello", config=config)
    assert out.returncode == 2 and "no session 's-nope'" in out.stderr


def test_chat_holds_a_conversation(config):
    out = mimir("chat", config=config, stdin="What is a cell?\nAnd a nucleus?\n/quit\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("What do you get?") == 2
    sessions = json.loads(mimir("sessions", "list", "--json", config=config).stdout)
    assert len(sessions) == 1 and sessions[0]["turn_count"] == 2


def test_eval_reports_per_flag_scores(config, tmp_path):
    cases = tmp_path / "cases.jsonl"
    lines = [
        {"message": "Give me five practice questions on fractions", "history": [],
         "expect": {"STRUCTURE_PRACTICE_QUESTIONS": True, "LATEX_FORMATTING": True}},
        {"message": "Who painted the Mona Lisa?", "history": [], "expect": {"LATEX_FORMATTING": False}},
        # A deliberately wrong label, to see a mismatch reported.
        {"message": "Tell me about volcanoes", "history": [], "expect": {"TOOL_USE_ENHANCEMENT": True}},
    ]
    cases.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = mimir("eval", str(cases), "--decisions-only", "--json", config=config)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["checked"] == 4 and report["correct"] == 3
    assert len(report["mismatches"]) == 1
    text = mimir("eval", str(cases), config=config)  # full turns
    assert "TOOL_USE_ENHANCEMENT" in text.stdout and "75.0%" in text.stdout


def test_eval_bad_case_file_names_the_line(config, tmp_path):
    cases = tmp_path / "bad.jsonl"
    cases.write_text('{"message": "hi", "history": [], "expect": {"VAGUE_INPUT": true}}\nnot json\n')
    out = mimir("eval", str(cases), config=config)
    assert out.returncode == 2 and ":2" in out.stderr and "Traceback" not in out.stderr
