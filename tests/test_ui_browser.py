"""The web app in a real headless Chromium, against a real ``mimir serve`` on the bundled model.

Needs Playwright's Python package (the ``dev`` extra; its driver is bundled) and a Chromium
executable: Debian's ``chromium`` (``make test`` installs it with apt-get when it runs as root),
or the one named by ``MIMIR_CHROMIUM``. Playwright never downloads a browser here. Skipped,
with the reason, when either is missing.

With ``MIMIR_SCREENSHOTS_DIR`` set, a screenshot of each tab is saved there.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from cache_trees import build_cache
from serving import Server

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

    # Past sessions: the local user's (auth = "none": one user), listed again after a reload
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#sessions")).to_contain_text("1 session of yours", timeout=UI_TIMEOUT_MS)
    page.click("#sessions input")
    expect(page.locator("ul[role=listbox] li").first).to_contain_text(QUESTION, timeout=UI_TIMEOUT_MS)
    context.close()


SCRIPTED_CLASS = """
[models.default]
backend = "scripted"
path = "scripted"
options = { replies = ["A sum adds numbers together."] }

[tutor]
thinking = false

[server]
auth = "password"
"""


@pytest.fixture
def class_server(tmp_path):
    """``mimir serve`` with ``auth = "password"``, an admin (ada) and a student (sam)."""
    import subprocess
    import sys

    config = tmp_path / "mimir.toml"
    config.write_text(SCRIPTED_CLASS)
    env = {**os.environ, "MIMIR_CONFIG": str(config), "GRADIO_ANALYTICS_ENABLED": "False"}
    for name, role in (("ada", "admin"), ("sam", "student")):
        subprocess.run([sys.executable, "-m", "mimir.cli.main", "users", "add", name, "--role", role,
                        "--password-stdin"], input=f"{name} password", env=env, check=True, capture_output=True, text=True)
    server = Server(env)
    try:
        yield server.ready_url()
        assert server.proc.poll() is None, "the server died during the test:\n" + server.output
    finally:
        server.stop()


def sign_in(page, url: str, name: str, password: str | None = None) -> None:
    page.goto(url)
    page.wait_for_selector("#login-form", timeout=UI_TIMEOUT_MS)
    page.fill("#name", name)
    page.fill("#password", password or f"{name} password")
    page.click("#login-submit")


def test_sign_in_as_student_and_admin_shows_each_the_right_tabs(browser, class_server):
    from playwright.sync_api import expect

    url = class_server
    student = browser.new_context(viewport={"width": 1280, "height": 900})
    page = student.new_page()
    sign_in(page, url, "sam", "not the password")
    expect(page.locator("#login-error")).to_contain_text("Wrong user name or password", timeout=UI_TIMEOUT_MS)
    sign_in(page, url, "sam")
    page.wait_for_selector("#message textarea", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#user-line")).to_contain_text("sam", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("tab", name="Chat")).to_be_visible()
    expect(page.get_by_role("tab", name="Memory")).to_be_visible()
    expect(page.get_by_role("tab", name="Cache")).to_be_hidden()
    expect(page.get_by_role("tab", name="Models")).to_be_hidden()
    cookie = next(c for c in student.cookies() if c["name"] == "mimir_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.fill("#message textarea", QUESTION)
    page.click("#send")
    expect(page.locator("#chatbot")).to_contain_text("A sum adds numbers together.", timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#sessions")).to_contain_text("1 session of yours", timeout=UI_TIMEOUT_MS)
    shoot(page, "signed-in-student")
    page.click("#logout-button")
    page.wait_for_selector("#login-form", timeout=UI_TIMEOUT_MS)
    page.goto(url)  # signed out: back to the sign-in page
    page.wait_for_selector("#login-form", timeout=UI_TIMEOUT_MS)
    student.close()

    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    page = admin.new_page()
    sign_in(page, url, "ada")
    page.wait_for_selector("#message textarea", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#user-line")).to_contain_text("ada", timeout=UI_TIMEOUT_MS)
    for tab in ("Chat", "Memory", "Cache", "Models"):
        expect(page.get_by_role("tab", name=tab)).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#sessions")).to_contain_text("1 session of all users", timeout=UI_TIMEOUT_MS)
    page.click("#sessions input")
    expect(page.locator("ul[role=listbox] li").first).to_contain_text("sam", timeout=UI_TIMEOUT_MS)
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("#models-table")).to_contain_text("scripted", timeout=UI_TIMEOUT_MS)
    shoot(page, "signed-in-admin")
    admin.close()
