"""Screenshots of the web app's four tabs for the README, from a real run on the bundled model.

Starts ``mimir serve`` on a free port with a throw-away ``MIMIR_HOME`` and a small demo
Hugging Face cache (two repos, one of them with an old revision, and an interrupted
download), asks two questions in headless Chromium (the second draws a chart), then saves
``chat.png``, ``memory.png``, ``cache.png`` and ``models.png``::

    .venv/bin/python bench/screenshots.py                 # into docs/screenshots/
    .venv/bin/python bench/screenshots.py --out /tmp/shots --max-tokens 64

Needs Playwright (``dev`` extra) and Chromium (``apt-get install chromium``; or set
``MIMIR_CHROMIUM``). Takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mimir.cache.layout import repo_folder, write_revision

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTIONS = [
    "What is summation?",
    "Make a bar chart of my test scores: math 82, reading 91, science 77. What should I study?",
]


def demo_cache(root: Path) -> None:
    """A small cache: what the Cache tab looks like with something in it."""
    write_revision(root, "HuggingFaceTB/SmolLM2-360M-Instruct", "a" * 40,
                   {"model.safetensors": b"w" * 300_000, "tokenizer.json": b"t" * 40_000})
    write_revision(root, "HuggingFaceTB/SmolLM2-360M-Instruct", "b" * 40,
                   {"model.safetensors": b"v" * 310_000, "tokenizer.json": b"t" * 40_000}, refs=["main"])
    write_revision(root, "sentence-transformers/all-MiniLM-L6-v2", "c" * 40,
                   {"model.safetensors": b"m" * 90_000, "config.json": b"{}"}, refs=["main"])
    (repo_folder(root, "sentence-transformers/all-MiniLM-L6-v2") / "blobs" / "feed.incomplete").write_bytes(b"p" * 5000)


def server_url(proc: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("Mimir web app: "):
                return line.split()[3]
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    sys.exit("mimir serve did not start:\n" + log.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--max-tokens", type=int, default=120, help="[tutor] response_max_tokens for the run")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    chromium = os.environ.get("MIMIR_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        sys.exit("no chromium: apt-get install chromium, or set MIMIR_CHROMIUM")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mimir-shots-") as tmp:
        base = Path(tmp)
        demo_cache(base / "hub")
        config = base / "mimir.toml"
        config.write_text(f"[tutor]\nresponse_max_tokens = {args.max_tokens}\n")
        env = {**os.environ, "MIMIR_HOME": str(base / "home"), "HF_HUB_CACHE": str(base / "hub"),
               "MIMIR_CONFIG": str(config), "GRADIO_ANALYTICS_ENABLED": "False"}
        log = base / "server.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mimir.cli.main", "serve", "--port", "0"],
                                    stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            url = server_url(proc, log)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                for _ in range(240):
                    try:
                        page.goto(url)
                        break
                    except Exception:
                        time.sleep(0.5)
                page.wait_for_selector("#message textarea", timeout=60_000)
                for i, question in enumerate(QUESTIONS, 1):
                    started = time.perf_counter()
                    page.fill("#message textarea", question)
                    page.click("#send")
                    page.wait_for_function(
                        f"document.querySelector('#chatbot').innerText.split('peak RSS').length > {i}",
                        timeout=600_000)
                    print(f"answer {i}: {time.perf_counter() - started:.1f}s")
                page.wait_for_function(  # the chart is fetched after the text arrives
                    "Array.from(document.querySelectorAll('#chatbot img')).every(i => i.complete && i.naturalWidth > 0)",
                    timeout=60_000)
                page.screenshot(path=str(args.out / "chat.png"), full_page=True)
                page.get_by_role("tab", name="Memory").click()
                expect(page.locator("#memory-steps")).to_contain_text("response", timeout=60_000)
                page.wait_for_timeout(1500)  # let the plot image finish drawing
                page.screenshot(path=str(args.out / "memory.png"), full_page=True)
                page.get_by_role("tab", name="Cache").click()
                expect(page.locator("#cache-repos")).to_contain_text("SmolLM2", timeout=60_000)
                page.locator("#prune-old input").check()
                page.click("#prune-plan")
                expect(page.locator("#prune-plan-line")).to_contain_text("Dry run", timeout=60_000)
                page.screenshot(path=str(args.out / "cache.png"), full_page=True)
                page.get_by_role("tab", name="Models").click()
                expect(page.locator("#models-table")).to_contain_text("llama_cpp", timeout=60_000)
                page.screenshot(path=str(args.out / "models.png"), full_page=True)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"saved chat, memory, cache and models screenshots in {args.out}")


if __name__ == "__main__":
    main()
