"""Serving the web app with uvicorn (``mimir serve``)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, TextIO

from mimir.errors import InvalidInputError, MissingExtraError

if TYPE_CHECKING:
    from mimir.app import MimirApp

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


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


def serve(app: MimirApp, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, out: TextIO | None = None) -> None:
    """Start the web app and block until interrupted; the app is closed on the way out.

    Prints one line with the address (``Mimir web app: http://127.0.0.1:7860/``) once the
    port is bound; with ``port=0`` it names the free port the system chose.
    """
    out = out or sys.stdout
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
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this address can use the tutor", file=out, flush=True)
    config = uvicorn.Config(server_app, log_level="warning", timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        app.close()
