"""Serving the web app with uvicorn (``mimir serve``)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from mimir.errors import ConfigError, InvalidInputError, MissingExtraError

if TYPE_CHECKING:
    from mimir.app import MimirApp

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: While serving, ``[storage] telemetry_retention`` is applied this often.
RETENTION_INTERVAL_S = 3600.0


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (``0.0.0.0`` and ``::`` are not)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_exposure(app: MimirApp, host: str, *, insecure_no_auth: bool = False, out: TextIO | None = None) -> None:
    """Refuse to serve beyond this machine without sign-in, and password mode without users.

    ``auth = "none"`` makes every visitor an admin, so it is allowed only on loopback; an
    explicit ``insecure_no_auth`` starts anyway, with a warning on every start.
    """
    settings = app.settings
    if settings.auth.required:
        if not any(u.role == "admin" for u in app.accounts.list_users()):
            raise ConfigError(
                "server.auth", 'is "password" but no admin exists yet; add one first: '
                "mimir users add NAME --role admin", source=str(settings.source) if settings.source else None,
            )
        return
    if is_loopback(host):
        return
    if not insecure_no_auth:
        raise ConfigError(
            "server.auth",
            f'is "none", so anyone who reaches {host} would be an admin; set [server] auth = "password" '
            "in mimir.toml and add users (mimir users add NAME --role admin), or pass --insecure-no-auth "
            "to serve without sign-in anyway",
            source=str(settings.source) if settings.source else None,
        )
    text = (f"warning: --insecure-no-auth: listening on {host} without sign-in; anyone who reaches this "
            "address is an admin (can prune the cache, unload models, read every session)")
    log.warning(text)
    print(text, file=out or sys.stderr, flush=True)


def _retention_loop(app: MimirApp, stop: threading.Event) -> None:
    from mimir.app import apply_retention

    while not stop.wait(RETENTION_INTERVAL_S):
        try:
            apply_retention(app.settings, app.db)
        except Exception:  # a failed pass is retried next hour; the server keeps serving
            log.exception("applying [storage] telemetry_retention failed")


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (port 0: any free port), or a readable error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InvalidInputError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(app: MimirApp, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, out: TextIO | None = None,
          insecure_no_auth: bool = False) -> None:
    """Start the web app and block until interrupted; the app is closed on the way out.

    Prints one line with the address (``Mimir web app: http://127.0.0.1:7860/``) once the
    port is bound; with ``port=0`` it names the free port the system chose. Refuses a
    non-loopback ``host`` with ``[server] auth = "none"`` unless ``insecure_no_auth``.
    """
    out = out or sys.stdout
    check_exposure(app, host, insecure_no_auth=insecure_no_auth)
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "ui", "The web app") from None
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from mimir.ui.app import create_app

    # Build the long-lived parts now, in this thread: a bad home or config fails here, and
    # request threads never race to build them.
    app.tutor
    server_app = create_app(app)
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"Mimir web app: http://{shown_host}:{bound_port}/ (Ctrl-C stops it)", file=out, flush=True)
    if app.settings.auth.required:
        print("Sign-in required (auth = \"password\"); /v1 needs an API key (mimir keys create NAME)", file=out,
              flush=True)
    grace_s = app.settings.limits.shutdown_timeout_s
    # Uvicorn waits this long for open responses: the drain's deadline plus time to send the end.
    config = uvicorn.Config(server_app, log_level="warning", timeout_graceful_shutdown=int(grace_s) + 5)
    from mimir.app import redact_log_handlers

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn set up its own handlers
        redact_log_handlers(logging.getLogger(name))
    stop = threading.Event()
    if app.settings.storage.telemetry_retention_s is not None:
        threading.Thread(target=_retention_loop, args=(app, stop), name="mimir-retention", daemon=True).start()
    server = _draining_server(uvicorn, config, app, grace_s)
    try:
        server.run(sockets=[sock])
    finally:
        stop.set()
        sock.close()
        # Turns still running (the server was forced, or a response outlived its grace) are
        # stopped and stored before the database closes; then telemetry is flushed and closed.
        app.queue.drain(0)
        if not app.queue.wait_idle(30):
            log.warning("turns still running at exit; they are not stored")
        app.close()
    # Only now, with the database closed, the signal that stopped the server takes its usual
    # effect (uvicorn would raise it before our cleanup ran).
    for sig in reversed(server.deferred_signals):
        signal.raise_signal(sig)


def _draining_server(uvicorn, config, app: MimirApp, grace_s: float):
    """A uvicorn server that, on Ctrl-C or SIGTERM, stops admitting turns at once (503) and
    gives the running ones ``grace_s`` (``[server] shutdown_timeout``) to finish before they
    are stopped; uvicorn meanwhile stops accepting connections and waits for open responses."""

    class DrainingServer(uvicorn.Server):
        draining = False
        deferred_signals: list[int] = []

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:  # keep the signals for after the cleanup instead of raising them now
                    self.deferred_signals = list(self._captured_signals)
                    self._captured_signals.clear()

        def handle_exit(self, sig, frame) -> None:
            if not self.draining:
                self.draining = True
                threading.Thread(target=app.queue.drain, args=(grace_s,), name="mimir-drain", daemon=True).start()
            super().handle_exit(sig, frame)

    return DrainingServer(config)
