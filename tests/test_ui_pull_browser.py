"""The Models tab's pull action in a real headless Chromium, against a real ``mimir serve``
that downloads from the local Hub-compatible server (tests/hub_server.py)."""

from __future__ import annotations

import os
import time
import tomllib

import pytest

from hub_server import HubServer
from test_ui_browser import UI_TIMEOUT_MS, Server, browser  # noqa: F401  (browser is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
REPO = "mimir-test/SmolLM2-135M-Instruct-GGUF"
FILE = "smollm2-135m-instruct-q4_1.gguf"


@pytest.fixture
def hub(bundled_gguf):
    with HubServer() as hub:
        hub.add(REPO, {FILE: bundled_gguf.read_bytes(), "README.md": b"# test\n"})
        yield hub


def test_an_admin_pulls_a_model_from_the_models_tab(browser, hub, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    config = tmp_path / "mimir.toml"
    config.write_text("# served by the browser test\n[tutor]\nresponse_max_tokens = 16\n")
    env = {**os.environ, "MIMIR_CONFIG": str(config), "HF_ENDPOINT": hub.url, "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("HF_HUB_OFFLINE", None)
    server = Server(env)
    try:
        url = server.url()
        page = browser.new_page()
        deadline = time.monotonic() + 120
        while True:  # the port is bound before the app answers
            try:
                page.goto(url, timeout=UI_TIMEOUT_MS)
                break
            except Exception:
                assert time.monotonic() < deadline, "".join(server.lines)
                time.sleep(0.5)
        page.get_by_role("tab", name="Models").click()
        page.get_by_text("Pull a model from the Hugging Face Hub (admins)").click()
        page.locator("#pull-repo textarea").fill(REPO)
        page.locator("#pull-id textarea").fill("small")
        page.locator("#pull-roles").get_by_label("response").check()
        page.locator("#pull-plan").click()
        expect(page.locator("#pull-message")).to_contain_text("To download: 93.8MiB", timeout=UI_TIMEOUT_MS)
        assert hub.downloads(FILE) == []  # the plan downloads nothing
        page.locator("#pull-run").click()
        expect(page.locator("#pull-message")).to_contain_text("restart the server to use it", timeout=UI_TIMEOUT_MS)
        expect(page.locator("#pull-message")).to_contain_text("fits the")
        assert hub.downloads(FILE) == [None]
        data = tomllib.loads(config.read_text())
        assert data["models"]["small"]["repo"] == REPO and data["roles"]["response"] == "small"
        assert config.read_text().startswith("# served by the browser test")
        assert server.proc.poll() is None, "".join(server.lines)
    finally:
        server.stop()
