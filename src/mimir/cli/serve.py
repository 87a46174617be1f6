"""``mimir serve``: the web app (chat, memory, cache and models tabs) and the
OpenAI-compatible API (``/v1``) on one local port."""

from __future__ import annotations

import typer

from mimir.cli.context import state


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(7860, "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port)."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth",
        help='Serve a non-loopback --host with [server] auth = "none" anyway: every visitor is an admin.',
    ),
) -> None:
    """Start the web app (chat, memory, cache, models) and the OpenAI-compatible API under /v1.

    Beyond this machine (--host 0.0.0.0), set [server] auth = "password" and add users
    (mimir users add); see "Serving a class" in the README.
    """
    from mimir.ui.server import serve as run_server

    app = state(ctx).app()
    if app.settings.storage.instance is None and "db" not in app.__dict__:
        # Several instances on one host differ by port: name this one after both.
        import dataclasses
        import socket

        storage = dataclasses.replace(app.settings.storage, instance=f"{socket.gethostname()}:{port}")
        app.settings = dataclasses.replace(app.settings, storage=storage)
    run_server(app, host=host, port=port, insecure_no_auth=insecure_no_auth)
