"""The turn queue over real HTTP (uvicorn in a thread, httpx and the openai client):
429 and 503 with Retry-After before any 200, the place in line in a header and in SSE
comments, and a client that disconnects mid-stream stopping its generation."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from mimir.api.openai import QUEUE_HEADER, TUTOR_MODEL, create_api  # noqa: E402
from mimir.config import settings_from_dict  # noqa: E402
from serving import app_in_thread  # noqa: E402

# Long enough (about 45 s at 0.03 s a token) that a turn is still generating while the test
# queues others behind it, however slow the machine; the tests hang up long before the end.
LONG = " ".join(f"word{i}" for i in range(1500))


@pytest.fixture
def served():
    settings = settings_from_dict({
        "models": {"default": {"backend": "scripted", "path": "s",
                               "options": {"replies": [LONG], "token_s": 0.03}}},
        "tutor": {"thinking": False},
        "server": {"max_queue": 1, "per_user_concurrency": 1},
    })
    with app_in_thread(settings, create_api) as served:
        yield served


def _body(user: str, stream: bool = True, **extra) -> dict:
    return {"model": "default", "stream": stream, "user": user, "max_tokens": 1000,
            "messages": [{"role": "user", "content": "tell me everything"}], **extra}


def _until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_busy_user_gets_429_full_queue_503_and_the_waiting_turn_hears_its_place(served):
    app, url = served
    with httpx.Client(base_url=url, timeout=60) as client, \
            client.stream("POST", "/v1/chat/completions", json=_body("bob")) as running:
        assert running.status_code == 200 and running.headers[QUEUE_HEADER] == "0"
        # Keep the line iterator referenced: closing it (as garbage collection does to a dropped
        # generator, at a moment that depends on what ran before) closes the response, and the
        # server rightly cancels bob's turn as a disconnect.
        bob_lines = running.iter_lines()
        next(bob_lines)  # bob's turn is generating
        _until(lambda: app.queue.running == 1)

        again = client.post("/v1/chat/completions", json=_body("bob", stream=False))
        assert again.status_code == 429 and int(again.headers["retry-after"]) >= 1
        assert again.json()["error"]["type"] == "rate_limit_exceeded"

        with client.stream("POST", "/v1/chat/completions", json=_body("carol")) as waiting:
            assert waiting.status_code == 200 and waiting.headers[QUEUE_HEADER] == "1"
            lines = waiting.iter_lines()
            assert ": queue position 1" in [next(lines) for _ in range(4)]
            assert app.queue.depth == 1

            full = client.post("/v1/chat/completions", json=_body("dave"))
            assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
            assert full.json()["error"]["type"] == "server_overloaded"
            assert not full.headers["content-type"].startswith("text/event-stream")
            assert client.get("/v1/models").status_code == 200  # never waits behind the queue
        assert app.queue.running == 1  # bob was generating all along
        bob_lines.close()


def test_a_client_that_disconnects_mid_stream_stops_its_generation(served):
    app, url = served
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions",
                           json=_body("erin", model=TUTOR_MODEL, session_id="new")) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break  # the answer has started: now hang up
        _until(lambda: app.queue.running == 0)
        assert app.manager.status().get("default").in_use == 0  # the lease is back
        with app.manager.use("default") as model:
            assert model.tokens_streamed < 300  # stopped soon after the hang-up, far from the end (1500)
        sessions = app.conversations.list_sessions()
        turn = app.conversations.turns(sessions[0].id)[-1]
        assert turn.status == "failed" and "client disconnected" in turn.error
        # The user's slot is free again: the next request is served.
        again = client.post("/v1/chat/completions", json=_body("erin", stream=False, max_tokens=3))
        assert again.status_code == 200


def test_the_openai_client_reads_a_queued_answer(served):
    openai = pytest.importorskip("openai")
    app, url = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(model="default", user="fay", max_tokens=4,
                                         messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "word0 word1 word2 word3"
