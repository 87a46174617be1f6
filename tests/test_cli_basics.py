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


#: Every command a user can run, written out: a command added or dropped must show here.
COMMANDS = {
    "pull": "Hugging Face cache",
    "models": "Configured models",
    "ask": "one question",
    "chat": "session is saved",
    "eval": "precision and recall",
    "memory": "each step",
    "serve": "OpenAI-compatible API",
    "audit": "audit log",
    "sessions": "tutoring sessions",
    "cache": "Hugging Face model cache",
    "users": "users",
    "keys": "API keys",
    "db": "migrations",
}


def help_commands(text: str) -> dict[str, str]:
    """Command name -> its help text, from the "Commands" box of ``--help``."""
    box = text.split("Commands", 1)[1]
    found: dict[str, str] = {}
    last = None
    for line in box.splitlines():
        inner = line.strip().strip("│").rstrip()
        if not inner.startswith(" ") or not inner.strip():
            continue
        if inner[1] != " ":  # a command's first line; wrapped help lines are indented further
            last, _, help_text = inner.strip().partition(" ")
            found[last] = help_text.strip()
        elif last is not None:
            found[last] += " " + inner.strip()
    return found


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0, out.stderr
    listed = help_commands(out.stdout)
    assert set(listed) == set(COMMANDS)
    for name, words in COMMANDS.items():
        assert listed[name].strip(), f"{name} has no help line"
        assert words.lower() in listed[name].lower()
        sub = run(name, "--help")
        assert sub.returncode == 0 and "Usage:" in sub.stdout and f" {name} " in sub.stdout


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


def scripted_config(tmp_path, options: str, context_length: int | None = None) -> str:
    cfg = tmp_path / "mimir.toml"
    ctx = f"context_length = {context_length}\n" if context_length else ""
    cfg.write_text(f'[tutor]\nthinking = false\n\n[models.default]\nbackend = "scripted"\npath = "scripted"\n{ctx}'
                   f"options = {options}\n")
    return str(cfg)


def test_missing_optional_dependency_exits_3(tmp_path):
    # The API server needs the "web" extra. A ``sys.modules`` guard makes uvicorn's import
    # fail in this process as if it were not installed.
    script = (
        "import runpy, sys\n"
        "sys.modules['uvicorn'] = None\n"
        "sys.argv = ['mimir', 'serve', '--port', '0']\n"
        "runpy.run_module('mimir.cli.main', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line == "error: The web app needs the 'uvicorn' package: pip install 'mimir-tutor[ui]'"


def test_input_that_cannot_fit_the_context_window_exits_6(tmp_path):
    # A 64-token window: the question alone (60 words) is longer than the window, so neither
    # dropping history nor cutting the system prompt makes room.
    cfg = scripted_config(tmp_path, '{ replies = ["ok"] }', context_length=64)
    out = run("--config", cfg, "ask", "Why is " + "the sky blue " * 20)
    assert out.returncode == 6, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: input needs ") and "model 'default' has a 64-token context window" in line
    assert "Traceback" not in out.stderr


def test_model_failing_while_generating_exits_7(tmp_path):
    cfg = scripted_config(tmp_path, '{ replies = ["ok"], fail_on = "explode" }')
    out = run("--config", cfg, "ask", "Please explode for me")
    assert out.returncode == 7, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line == "error: model 'default' failed while generating: scripted failure on 'explode'"
    assert "Traceback" not in out.stderr
