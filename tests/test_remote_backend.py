"""The openai backend against a real model server: llama.cpp's own OpenAI-compatible HTTP
server (``tests/llama_http_server.py``) serving the bundled model over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mimir.app import MimirApp
from mimir.config import bundled_model_spec, settings_from_dict
from mimir.errors import ConfigError, GenerationError, ModelLoadError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.models.spec import ModelSource, ModelSpec
from mimir.runtime.manager import ModelManager

SERVER = Path(__file__).with_name("llama_http_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    gguf = str(bundled_model_spec().source.local_path())
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), gguf, str(port), "smol"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the llama.cpp server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def remote(url: str, model: str = "smol", model_id: str = "remote") -> ModelSpec:
    return ModelSpec(id=model_id, backend="openai", source=ModelSource("url", url), options={"model": model})


def test_streams_from_the_server_and_costs_no_local_budget(server_url):
    manager = ModelManager({"remote": remote(server_url)}, budget_ram_bytes=1)  # 1 byte: still fits
    assert manager.estimate("remote").total_bytes == 0
    with manager.use("remote") as model:
        stream = model.stream([ChatMessage("user", "Name a colour.")], GenerationParams(max_tokens=8, temperature=0))
        pieces = list(stream)
        assert len(pieces) >= 2 and stream.completion.text.strip()
        assert stream.completion.tokens_out == len(pieces)
        stopped = model.chat([ChatMessage("user", "Count from 1 to 10 with commas.")],
                             GenerationParams(max_tokens=30, temperature=0, stop=("4",)))
        assert "4" not in stopped.text and "3" in stopped.text
    manager.close()


def test_scores_choices_from_server_logprobs(server_url):
    manager = ModelManager({"remote": remote(server_url)}, budget_ram_bytes=10**9)
    with manager.use("remote") as model:
        scores = model.score_choices([ChatMessage("user", "Is the sky blue? Answer Yes or No.")], ["Yes", "No"])
    assert set(scores) == {"Yes", "No"}
    assert all(-20 < v < 0 for v in scores.values())
    manager.close()


def test_a_whole_tutor_turn_on_the_remote_model(server_url):
    settings = settings_from_dict({
        "models": {"big": {"backend": "openai", "url": server_url, "options": {"model": "smol"}}},
        "tutor": {"response_max_tokens": 16, "thinking": False, "deciders": {"routing": "model"}},
    })
    with MimirApp(settings) as app:
        result = app.tutor.run_turn("What is a verb?")
        assert result.response.strip()
        steps = {s.name: s for s in result.telemetry.steps}
        assert steps["response"].model == "big" and steps["routing"].model == "big"
        assert steps["response"].tokens_out > 0


def test_unreachable_server_is_a_clear_load_error():
    manager = ModelManager({"remote": remote(f"http://127.0.0.1:{free_port()}/v1")}, budget_ram_bytes=10**9)
    with pytest.raises(ModelLoadError, match="server unreachable"):
        with manager.use("remote"):
            pass


def test_unknown_model_on_the_server_lists_what_it_serves(server_url):
    manager = ModelManager({"remote": remote(server_url, model="gpt-9")}, budget_ram_bytes=10**9)
    with pytest.raises(ModelLoadError, match="serves: smol"):
        with manager.use("remote"):
            pass


def test_server_errors_become_generation_errors(server_url):
    # A spec that claims a larger window than the server has: the local guard lets the
    # prompt through and the server refuses it.
    spec = ModelSpec(id="remote", backend="openai", source=ModelSource("url", server_url),
                     context_length=100_000, options={"model": "smol"})
    manager = ModelManager({"remote": spec}, budget_ram_bytes=10**9)
    with manager.use("remote") as model:
        with pytest.raises(GenerationError, match="HTTP 400"):
            model.chat([ChatMessage("user", "word " * 3000)], GenerationParams(max_tokens=4))
    manager.close()


def test_missing_api_key_env_names_the_variable(server_url, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    spec = ModelSpec(id="r", backend="openai", source=ModelSource("url", server_url),
                     options={"model": "smol", "api_key_env": "NO_SUCH_KEY"})
    with pytest.raises(ModelLoadError, match="NO_SUCH_KEY"):
        with ModelManager({"r": spec}, budget_ram_bytes=10**9).use("r"):
            pass


def test_openai_backend_needs_a_url():
    spec = ModelSpec(id="r", backend="openai", source=ModelSource("path", "/x"))
    with pytest.raises(ConfigError, match="url"):
        ModelManager({"r": spec}, budget_ram_bytes=10**9).estimate("r")
