"""Servers for tests that talk over real HTTP: ``mimir serve`` in a subprocess, or an ASGI app
under uvicorn in a thread of the test (when the test must look inside the app while it serves)."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def in_thread(asgi_app, timeout_s: float = 60.0) -> Iterator[str]:
    """``asgi_app`` served by uvicorn on a free local port in a daemon thread; yields its URL
    once the server has started, and stops it when the block ends."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def app_in_thread(settings, make_asgi) -> Iterator[tuple]:
    """A :class:`~mimir.app.MimirApp` on ``settings`` served as ``make_asgi(app)`` by
    :func:`in_thread`; yields ``(app, url)`` and closes the app when the block ends."""
    from mimir.app import MimirApp

    app = MimirApp(settings)
    try:
        with in_thread(make_asgi(app)) as url:
            yield app, url
    finally:
        app.close()


class Server:
    """``mimir serve --port 0 [ARGS]`` in a subprocess; its output is kept for failure reports."""

    def __init__(self, env: dict[str, str], *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mimir.cli.main", "serve", "--port", "0", *args],
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

    def ready_url(self, timeout_s: float = 180.0) -> str:
        """The address once the app answers HTTP (the port is bound before it does)."""
        import httpx

        url = self.url(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(url + "login", timeout=5).status_code in (200, 303):
                    return url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mimir serve never answered:\n" + "".join(self.lines)
            time.sleep(0.5)

    def wait(self, timeout_s: float = 120.0) -> int:
        """The exit code of a server expected to stop by itself."""
        self.proc.wait(timeout=timeout_s)
        time.sleep(0.2)  # let the reader thread take the last lines
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
