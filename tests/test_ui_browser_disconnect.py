"""A visitor who closes the web page mid-answer stops the generation (issue 11: "a client that
disconnects, from SSE or from the web app, stops its generation and releases its lease").

A real headless Chromium drives the real web app (Gradio mounted on FastAPI, served by uvicorn
in a thread of this process, so the test can look at the app's model manager and database). The
model is the scripted backend streaming a 1,500-word reply at one word per 30 ms (45 s in all).
Once the first words show in the page, the page is closed: Gradio sees its event stream drop,
closes the chat generator, and the turn runner cancels the turn. Nothing is timed: the test
waits (bounded) until the queue is idle, then checks where generation stopped.

Needs Playwright and a Chromium executable, like ``test_ui_browser.py``; skipped without them.
"""

from __future__ import annotations

import time

import pytest

from serving import app_in_thread
from test_ui_browser import UI_TIMEOUT_MS, browser  # noqa: F401 - the shared Chromium fixture

pytest.importorskip("gradio")
pytest.importorskip("uvicorn")

from mimir.config import settings_from_dict  # noqa: E402
from mimir.ui.app import create_app  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WORDS = 1500
REPLY = " ".join(f"w{i}" for i in range(WORDS))


def _until(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


@pytest.fixture
def served_web_app():
    settings = settings_from_dict({
        "models": {"default": {"backend": "scripted", "path": "scripted",
                               "options": {"replies": [REPLY], "token_s": 0.03}}},
        "roles": {role: "default" for role in ("tool_decision", "routing", "thinking", "response")},
        "tutor": {"thinking": False, "response_max_tokens": WORDS + 100},
    })
    with app_in_thread(settings, create_app) as served:
        yield served


def test_closing_the_page_mid_answer_stops_the_generation_and_frees_the_model(browser, served_web_app):  # noqa: F811
    from playwright.sync_api import expect

    app, url = served_web_app
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#message textarea", timeout=UI_TIMEOUT_MS)
    page.fill("#message textarea", "tell me everything")
    page.click("#send")
    expect(page.locator("#chatbot")).to_contain_text("w3 ", timeout=UI_TIMEOUT_MS)  # the answer streams
    assert app.queue.running == 1 and app.manager.status().get("default").in_use == 1  # still generating

    page.close()  # the visitor goes away mid-answer
    context.close()

    _until(lambda: app.queue.running == 0)
    assert app.manager.status().get("default").in_use == 0  # the lease is back
    with app.manager.use("default") as model:
        # Stopped soon after the page closed, far from the reply's end.
        assert 3 <= model.tokens_streamed < 300, model.tokens_streamed
    (session,) = app.conversations.list_sessions()
    turn = app.conversations.turns(session.id)[-1]
    assert turn.status == "failed" and "page was closed" in turn.error  # stored like the API's disconnects
