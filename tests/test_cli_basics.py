"""The ``mimir`` command as a user runs it: a real subprocess, real config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys



def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mimir.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("models", "ask"):
        assert command in out.stdout


def test_models_json_shows_estimates_without_loading():
    out = run("models", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    (model,) = data["models"]
    assert model["id"] == "default" and model["backend"] == "llama_cpp"
    assert sorted(model["roles"]) == ["response", "routing", "thinking", "tool_decision"]
    assert model["estimate_bytes"] > 90 * 1024**2
    assert model["resident"] is False
    assert data["counters"]["loads"] == 0


def test_models_load_measures(tmp_path):
    out = run("models", "--json", "--load")
    assert out.returncode == 0, out.stderr
    (model,) = json.loads(out.stdout)["models"]
    assert model["measured_bytes"] > 90 * 1024**2


def test_ask_streams_an_answer(tmp_path):
    cfg = tmp_path / "mimir.toml"
    cfg.write_text("[tutor]\nthinking_max_tokens = 8\n")
    out = run("--config", str(cfg), "ask", "What is a triangle?", "--max-tokens", "16", timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) > 5


def test_empty_question_is_refused_without_loading():
    out = run("ask", "   ")
    assert out.returncode == 2
    assert "question is empty" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_is_one_clear_line(tmp_path):
    cfg = tmp_path / "mimir.toml"
    cfg.write_text('[budget]\nmemory = "plenty"\n')
    out = run("--config", str(cfg), "models")
    assert out.returncode == 2
    assert "budget.memory" in out.stderr and "Traceback" not in out.stderr


def test_missing_model_file_names_the_file(tmp_path):
    cfg = tmp_path / "mimir.toml"
    cfg.write_text(f'[models.default]\npath = "{tmp_path}/gone.gguf"\n')
    out = run("--config", str(cfg), "ask", "hello")
    assert out.returncode == 4
    assert "gone.gguf" in out.stderr and "file not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_budget_smaller_than_model_fails_before_loading(tmp_path):
    out = run("ask", "hello", env={"MIMIR_BUDGET": "50MiB"})
    assert out.returncode == 5
    assert "does not fit" in out.stderr and "50.0MiB" in out.stderr
