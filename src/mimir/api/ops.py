"""Operations routes: ``GET /metrics``, ``GET /healthz`` and ``GET /readyz`` (extra: ``ui``).

- ``/healthz``: liveness. The process answers; nothing else is checked.
- ``/readyz``: readiness (:mod:`mimir.ops.health`): 200 with the checks, or 503 naming the
  failing part (``database``, ``model`` or ``generation``). Cached for ``[server] ready_cache``.
- ``/metrics``: Prometheus text format (:mod:`mimir.ops.metrics`), unless ``[server]
  metrics = false`` (then 404). When a bearer token is configured (``[server]
  metrics_token_env``, default ``MIMIR_METRICS_TOKEN``), or authentication is on, a scrape
  must bring that token or come from an admin.

Every request through the app is counted in ``mimir_requests_total`` by route template and
status code: a route counts under its template (``/v1/chat/completions``, and the web app's
own routes such as ``/gradio_api/queue/join``), never the raw path; anything unmatched
counts under ``other``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Request

from mimir.ops.health import ReadinessProbe
from mimir.ops.metrics import CONTENT_TYPE, ServerMetrics
from mimir.ops_options import OpsOptions, parse_ops_options

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mimir.app import MimirApp

#: Route label of requests served by the web app (Gradio, mounted at ``/``).
WEB_ROUTE = "web"
OTHER_ROUTE = "other"


def auth_enabled(app: MimirApp) -> bool:
    """Whether user authentication is on (``[server] auth = "password"``)."""
    return app.settings.auth.required


def request_is_admin(request: Request, app: MimirApp) -> bool:
    """Whether the request comes from a signed-in admin (as the access guard decided). With
    ``auth = "none"`` nobody signs in: the local user does not stand in for the token."""
    from mimir.auth.web import principal_of

    principal = principal_of(request)
    return auth_enabled(app) and principal is not None and principal.can("manage_users")


def queue_depth_of(app: MimirApp) -> Callable[[], int | None]:
    """How ``mimir_queue_depth`` reads the turn queue, when the app has one (an ``admission``
    or ``queue`` object with a ``depth`` property or method); read at every scrape."""
    for name in ("admission", "queue"):
        try:
            queue = getattr(app, name)
        except AttributeError:
            continue
        if hasattr(queue, "depth"):
            return lambda: (queue.depth() if callable(queue.depth) else queue.depth)
    return lambda: None


class RequestMetrics:
    """ASGI middleware counting every HTTP response by route template and status code."""

    def __init__(self, asgi, metrics: ServerMetrics):
        self.asgi = asgi
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.asgi(scope, receive, send)
            return
        status = {"code": 500}

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.asgi(scope, receive, _send)
        finally:
            self.metrics.count_request(_route_label(scope), status["code"])


def _route_label(scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    if scope.get("endpoint") is not None or scope.get("app_root_path") is not None:
        return WEB_ROUTE
    return OTHER_ROUTE


def install_ops(api: FastAPI, app: MimirApp, options: OpsOptions | None = None) -> OpsOptions:
    """Add /healthz, /readyz and (unless disabled) /metrics plus the request counter."""
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, Response

    from mimir.api.openai import error_body

    settings = app.settings
    options = options or parse_ops_options(settings.server, str(settings.source) if settings.source else None)
    probe = ReadinessProbe(app, timeout_s=options.ready_timeout_s, cache_s=options.ready_cache_s)

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "alive"}

    @api.get("/readyz")
    async def readyz():
        result = await run_in_threadpool(probe.check)
        return JSONResponse(result.to_dict(), status_code=200 if result.ok else 503)

    if not options.metrics:
        return options
    metrics = ServerMetrics(app, queue_depth=queue_depth_of(app))
    app.server_metrics = metrics
    api.add_middleware(RequestMetrics, metrics=metrics)

    @api.get("/metrics")
    async def metrics_route(request: Request):
        token = options.metrics_token()
        guarded = token is not None or auth_enabled(app)
        if guarded and not (_bearer_matches(request, token) or request_is_admin(request, app)):
            return JSONResponse(
                error_body("/metrics needs an admin or the metrics bearer token", "authentication_error"),
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    return options


def _bearer_matches(request: Request, token: str | None) -> bool:
    if token is None:
        return False
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
