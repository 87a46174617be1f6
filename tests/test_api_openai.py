"""The OpenAI-compatible API: through FastAPI's test client, and over a real socket by
Mimir's own openai backend (one Mimir serving models to another)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from mimir.api.openai import TUTOR_MODEL, create_api  # noqa: E402
from mimir.app import MimirApp  # noqa: E402
from mimir.config import settings_from_dict  # noqa: E402
from mimir.models.base import ChatMessage, GenerationParams  # noqa: E402
from mimir.models.spec import ModelSource, ModelSpec  # noqa: E402
from mimir.runtime.manager import ModelManager  # noqa: E402

REPLY = "Start from what you know. What is 2 + 2?"


@pytest.fixture
def app():
    settings = settings_from_dict({
        "models": {"default": {"backend": "scripted", "path": "s",
                               "options": {"replies": [REPLY], "scores": {"Yes": -0.2, "No": -1.0}}}},
        "tutor": {"thinking": False},
    })
    with MimirApp(settings) as mimir_app:
        yield mimir_app


@pytest.fixture
def client(app):
    return TestClient(create_api(app))


def test_models_lists_the_tutor_and_configured_models(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == [TUTOR_MODEL, "default"]


def test_tutor_completion_with_mimir_details(client):
    body = {"model": TUTOR_MODEL, "messages": [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "Can you give me practice questions on fractions?"}]}
    out = client.post("/v1/chat/completions", json=body)
    assert out.status_code == 200, out.text
    data = out.json()
    assert data["object"] == "chat.completion"
    message = data["choices"][0]["message"]
    assert message["role"] == "assistant"
    # The model's reply, then a practice question the math engine generated with its answer key.
    reply, practice = message["content"].split("\n\n**Practice question:** ")
    assert reply == REPLY and practice.strip()
    assert data["usage"]["completion_tokens"] > 0
    assert "STRUCTURE_PRACTICE_QUESTIONS" in data["mimir"]["flags"]
    assert {s["name"] for s in data["mimir"]["steps"]} >= {"routing", "response"}
    assert data["mimir"]["session_id"] is None  # nothing stored without session_id


def test_tutor_session_is_stored_when_asked(client, app):
    first = client.post("/v1/chat/completions", json={
        "model": TUTOR_MODEL, "session_id": "new", "messages": [{"role": "user", "content": "What is a fraction?"}]})
    sid = first.json()["mimir"]["session_id"]
    client.post("/v1/chat/completions", json={
        "model": TUTOR_MODEL, "session_id": sid, "messages": [{"role": "user", "content": "And a ratio?"}]})
    assert [t.user_message for t in app.conversations.turns(sid)] == ["What is a fraction?", "And a ratio?"]


def test_streaming_sends_openai_chunks(client):
    body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "body,status,kind",
    [
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
        ({"model": TUTOR_MODEL, "messages": []}, 400, "invalid_request_error"),
        ({"model": TUTOR_MODEL, "messages": [{"role": "user", "content": "   "}]}, 400, "invalid_request_error"),
        ({"model": TUTOR_MODEL, "messages": [{"role": "assistant", "content": "hi"}]}, 400, "invalid_request_error"),
        ({"model": "default", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}, 400,
         "invalid_request_error"),
        ({"model": "default", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_request_error"),
    ],
)
def test_errors_use_the_openai_error_body(client, body, status, kind):
    out = client.post("/v1/chat/completions", json=body)
    assert out.status_code == status
    assert out.json()["error"]["type"] == kind and out.json()["error"]["message"]


def test_a_model_that_fails_to_load_is_503_and_one_over_budget_is_507():
    settings = settings_from_dict({
        "models": {
            "default": {"backend": "scripted", "path": "s"},
            "broken": {"backend": "scripted", "path": "broken.bin", "options": {"fail": "weights are corrupt"}},
            "huge": {"backend": "scripted", "path": "huge.bin", "options": {"size_bytes": 8 * 1024**3}},
        },
        "roles": {"tool_decision": "default", "routing": "default", "thinking": "default", "response": "broken"},
        "budget": {"memory": "1GiB"},
        "tutor": {"thinking": False},
    })
    load_failed = "model 'broken' failed to load from path:broken.bin: weights are corrupt"
    over_budget = "model 'huge' needs an estimated 8.0GiB of ram; it does not fit the 1.0GiB ram budget even alone"
    cases = [("broken", 503, "model_load_error", load_failed), ("huge", 507, "memory_budget_exceeded", over_budget),
             (TUTOR_MODEL, 503, "model_load_error", load_failed)]  # the tutor's response model is "broken"
    with MimirApp(settings) as mimir_app:
        client = TestClient(create_api(mimir_app))
        for model, status, kind, message in cases:
            body = {"model": model, "messages": [{"role": "user", "content": "What is a prime?"}]}
            out = client.post("/v1/chat/completions", json=body)
            assert out.status_code == status, out.text
            assert out.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}
            # Streamed, the status line is already out: the error comes as an event.
            streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
            assert streamed.status_code == 200
            events = [json.loads(line[6:]) for line in streamed.text.splitlines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
            assert events[-1]["error"]["type"] == kind and events[-1]["error"]["message"] == message
        assert mimir_app.manager.status().resident == ()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_another_mimir_uses_this_one_as_a_model_server(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(app), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        spec = ModelSpec(id="far", backend="openai", source=ModelSource("url", f"http://127.0.0.1:{port}/v1"),
                         options={"model": "default"})
        with ModelManager({"far": spec}, budget_ram_bytes=10**9) as manager, manager.use("far") as model:
            assert model.chat([ChatMessage("user", "hi")], GenerationParams(max_tokens=64)).text == REPLY
            tutor = ModelSpec(id="t", backend="openai", source=ModelSource("url", f"http://127.0.0.1:{port}/v1"),
                              options={"model": TUTOR_MODEL})
        with ModelManager({"t": tutor}, budget_ram_bytes=10**9) as manager, manager.use("t") as model:
            streamed = list(model.stream([ChatMessage("user", "What is 3 x 4?")], GenerationParams(max_tokens=64)))
            assert "".join(streamed) == REPLY
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_web_server_serves_the_api_beside_the_ui(app):
    pytest.importorskip("gradio")
    from mimir.ui.app import create_app

    client = TestClient(create_app(app))
    assert [m["id"] for m in client.get("/v1/models").json()["data"]][0] == TUTOR_MODEL
    out = client.post("/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
    assert out.json()["choices"][0]["message"]["content"] == REPLY
    assert client.get("/").status_code == 200  # the Gradio page
