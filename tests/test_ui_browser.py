"""The web app in a real headless Chromium, against a real ``mimir serve`` on the bundled model.

Needs Playwright's Python package (the ``dev`` extra; its driver is bundled) and a Chromium
executable: Debian's ``chromium`` (``make test`` installs it with apt-get when it runs as root),
or the one named by ``MIMIR_CHROMIUM``. Playwright never downloads a browser here. Skipped,
with the reason, when either is missing.

With ``MIMIR_SCREENSHOTS_DIR`` set, a screenshot of each tab is saved there.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cache_trees import build_cache

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Generous: the bundled model shares two cores with whatever else runs. Never asserted on.
ANSWER_TIMEOUT_MS = 300_000
UI_TIMEOUT_MS = 60_000
QUESTION = "What is summation?"


def chromium_executable() -> str | None:
    for candidate in (os.environ.get("MIMIR_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs Playwright: pip install 'mimir-tutor[dev]'"
    )
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium executable: apt-get install chromium chromium-driver (make test does so as root), "
                    "or set MIMIR_CHROMIUM")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as exc:  # an unusable install: say why rather than fail obscurely
            pytest.skip(f"Chromium at {executable} does not start under Playwright: {exc}")
        yield browser
        browser.close()


class Server:
    """``mimir serve --port 0`` in a subprocess; its output is kept for failure reports."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mimir.cli.main", "serve", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.lines: list[str] = []
        self._urls: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("Mimir web app: "):
                self._urls.put(line.split()[3])

    def url(self, timeout_s: float = 180.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                return self._urls.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        raise AssertionError("mimir serve did not start:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    tree = build_cache(tmp_path / "hf")
    config = tmp_path / "mimir.toml"
    config.write_text("[tutor]\nresponse_max_tokens = 24\nthinking_max_tokens = 16\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tree.root), "MIMIR_CONFIG": str(config), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = Server(env)
    try:
        url = server.url()
        import httpx

        deadline = time.monotonic() + 120
        while True:  # the port is bound before the app answers
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mimir serve never answered:\n" + "".join(server.lines)
            time.sleep(0.5)
        yield url, tree
        assert server.proc.poll() is None, "the server died during the test:\n" + "".join(server.lines)
    finally:
        server.stop()


def shoot(page, name: str) -> None:
    folder = os.environ.get("MIMIR_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_chat_memory_cache_and_models_tabs_in_a_real_browser(browser, server):
    from playwright.sync_api import expect

    url, tree = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#message textarea", timeout=UI_TIMEOUT_MS)

    # Chat: a streamed answer with its status line
    page.fill("#message textarea", QUESTION)
    page.click("#send")
    chat = page.locator("#chatbot")
    expect(chat).to_contain_text(QUESTION, timeout=UI_TIMEOUT_MS)
    expect(chat).to_contain_text("peak RSS", timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#chat-status")).to_contain_text("tokens in", timeout=UI_TIMEOUT_MS)
    transcript = chat.inner_text()
    answer = transcript.split(QUESTION, 1)[1].split("tokens in", 1)[0]
    assert len(answer.strip()) > 10, transcript  # the model said something
    shoot(page, "chat")

    # Memory: the turn's steps, with the model load inside one of them
    page.get_by_role("tab", name="Memory").click()
    steps = page.locator("#memory-steps")
    for name in ("history", "routing", "rules", "response", "postprocess"):
        expect(steps).to_contain_text(name, timeout=UI_TIMEOUT_MS)
    expect(steps).to_contain_text("load default")
    expect(page.locator("#memory-resident")).to_contain_text("llama_cpp")
    expect(page.locator("#memory-plot img, #memory-plot svg").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    shoot(page, "memory")

    # Cache: the test cache's repos, then a dry run and a confirmed deletion
    page.get_by_role("tab", name="Cache").click()
    repos = page.locator("#cache-repos")
    for repo in ("org/alpha", "org/beta", "org/gamma", "org/data"):
        expect(repos).to_contain_text(repo, timeout=UI_TIMEOUT_MS)
    expect(page.locator("#cache-warnings")).to_contain_text("incomplete")
    page.click("#prune-plan")
    expect(page.locator("#prune-plan-line")).to_contain_text("Dry run", timeout=UI_TIMEOUT_MS)
    delete = page.locator("#prune-delete")
    expect(delete).to_be_disabled()
    assert tree.repo("org/beta").is_dir()
    shoot(page, "cache")
    page.locator("#prune-confirm input").check()
    expect(delete).to_be_enabled(timeout=UI_TIMEOUT_MS)
    delete.click()
    expect(page.locator("#prune-result")).to_contain_text("Freed", timeout=UI_TIMEOUT_MS)
    assert not tree.repo("org/beta").exists() and tree.outside_file.exists()

    # Models: configured models, roles and counters
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("#models-table")).to_contain_text("llama_cpp", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#models-counters")).to_contain_text("Loads 1")
    shoot(page, "models")

    # Past sessions belong to the browser that started them
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#sessions")).to_contain_text("1 session started in this browser", timeout=UI_TIMEOUT_MS)
    page.click("#sessions input")
    expect(page.locator("ul[role=listbox] li").first).to_contain_text(QUESTION, timeout=UI_TIMEOUT_MS)
    stranger = browser.new_context().new_page()
    stranger.goto(url)
    stranger.wait_for_selector("#message textarea", timeout=UI_TIMEOUT_MS)
    expect(stranger.locator("#sessions")).to_contain_text("None started in this browser", timeout=UI_TIMEOUT_MS)
    stranger.click("#sessions input")
    assert stranger.locator("ul[role=listbox] li").count() == 0
    context.close()
