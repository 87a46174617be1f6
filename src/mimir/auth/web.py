"""The guard in front of ``mimir serve``: every request, web app and ``/v1`` alike, passes
here before any route sees it.

In order, for each HTTP request:

1. **Host** (DNS rebinding): the ``Host`` header must be an IP address, a name without a dot
   (``localhost``), or one of ``[server] allowed_hosts``. A rebinding attack needs a public
   DNS name that the attacker controls, so any dotted name not listed is refused (421).
2. **Origin** (CSRF), for state-changing methods (POST, PUT, PATCH, DELETE): a browser's
   ``Origin`` (or, lacking it, ``Referer``) must be this server (same host and port as the
   ``Host`` header) or one of ``allowed_hosts`` (403).
3. **Who is asking**: with ``auth = "none"`` the single local user, an admin. With
   ``auth = "password"``: ``/v1/*`` needs ``Authorization: Bearer <key>`` (401 with an
   OpenAI-shaped body otherwise); everything else needs the sign-in cookie, else a page
   load is sent to ``/login`` and any other request gets 401. Open to all: ``/login``,
   ``/healthz`` and ``/readyz`` (probes; no user data). ``/metrics`` is let through and
   checks itself (its bearer token, or a signed-in admin: :mod:`mimir.api.ops`).

The principal is put in ``scope["state"]["principal"]``; handlers read it with
:func:`principal_of` and make their own role checks (:func:`mimir.auth.roles.require`):
hiding a button is never the check.

The sign-in cookie (``mimir_session``) is ``HttpOnly; SameSite=Lax; Path=/``, plus
``Secure`` when the request came over HTTPS (directly, or through a proxy uvicorn trusts to
say so with ``X-Forwarded-Proto``).
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from mimir.auth.roles import LOCAL_ADMIN, Principal
from mimir.auth.throttle import LoginThrottle
from mimir.errors import AuthenticationError, MimirError, TooManyAttemptsError

#: What the guard is given: a ``mimir.app.MimirApp`` (it reads ``settings.auth`` and
#: ``accounts``). Not typed by import: ``auth`` sits below the app (``docs/architecture.md``).
AppLike = Any

log = logging.getLogger(__name__)

COOKIE = "mimir_session"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Paths anyone may reach with ``auth = "password"`` (health probes of a load balancer).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Paths that decide themselves; the guard only says who is signed in, if anyone.
SELF_CHECKED_PATHS = frozenset({"/metrics"})
MAX_FORM_BYTES = 16 * 1024


def scope_of(request: Any) -> dict | None:
    """The ASGI scope behind a Starlette request, a ``gr.Request`` or a scope itself."""
    if isinstance(request, dict):
        return request
    attrs = getattr(request, "__dict__", {})
    if "request" in attrs:  # a gr.Request wraps the Starlette request of the call
        inner = attrs["request"]
        if inner is None:  # a gr.Request that was pickled keeps only the request's state
            state = attrs.get("state")
            return {"state": dict(getattr(state, "_state", {}))} if state is not None else None
        return getattr(inner, "scope", None)
    scope = attrs.get("scope")
    return scope if isinstance(scope, dict) else None


def principal_of(request: Any) -> Principal | None:
    """Who a request acts for, as the guard decided. ``None`` when the guard did not run
    (then nothing is allowed)."""
    state = (scope_of(request) or {}).get("state") or {}
    principal = state.get("principal")
    return principal if isinstance(principal, Principal) else None


def address_of(request: Any) -> str | None:
    """The client's address (after uvicorn's trusted proxy headers), for throttling and audit."""
    client = (scope_of(request) or {}).get("client")
    return client[0] if client else None


# -- Host and Origin ---------------------------------------------------------------------


def _split_host(host: str) -> tuple[str, str | None]:
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    return (name, port) if sep and port.isdigit() else (host, None)


def host_allowed(host_header: str | None, allowed: tuple[str, ...]) -> bool:
    if not host_header or len(host_header) > 300:
        return False
    name, _ = _split_host(host_header)
    if not name:
        return False
    if name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return "." not in name.rstrip(".")


def origin_allowed(origin: str, host_header: str | None, scheme: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser's Origin (or Referer) is this server."""
    if not origin or origin == "null" or len(origin) > 2000:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname.lower() in allowed:
        return True
    if not host_header:
        return False
    default = {"http": "80", "https": "443"}
    origin_port = str(parts.port) if parts.port else default[parts.scheme]
    host_name, host_port = _split_host(host_header)
    return parts.hostname.lower() == host_name and origin_port == (host_port or default.get(scheme, "80"))


# -- responses ---------------------------------------------------------------------------


async def _respond(send, status: int, body: bytes, content_type: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def _json(send, status: int, message: str, kind: str, code: str | None = None,
                headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    await _respond(send, status, body, "application/json", list(headers))


async def _redirect(send, location: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await _respond(send, 303, b"", "text/plain", [(b"location", location.encode("latin-1")), *headers])


def _safe_next(target: str | None) -> str:
    """Only a path on this server (never ``//other.host`` or ``https://...``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or len(target) > 2000:
        return "/"
    return target


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · Mimir tutor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: ui-sans-serif, system-ui, sans-serif; background: #f6f7f9; display: flex;
       justify-content: center; padding-top: 12vh; margin: 0; }}
form {{ background: white; padding: 2em; border-radius: 8px; box-shadow: 0 1px 4px #0002; width: 20em; }}
h1 {{ font-size: 1.3em; margin-top: 0; }}
label {{ display: block; margin: 1em 0 .3em; }}
input {{ width: 100%; padding: .5em; box-sizing: border-box; font-size: 1em; }}
button {{ margin-top: 1.5em; width: 100%; padding: .6em; font-size: 1em; background: #f97316; color: white;
         border: 0; border-radius: 6px; cursor: pointer; }}
.error {{ color: #b91c1c; margin: 1em 0 0; }}
</style></head>
<body><form method="post" action="/login" id="login-form">
<h1>Mimir tutor: sign in</h1>
<input type="hidden" name="next" value="{next}">
<label for="name">User name</label><input id="name" name="name" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
{error}
<button type="submit" id="login-submit">Sign in</button>
</form></body></html>
"""


def login_page(next_path: str = "/", error: str | None = None) -> bytes:
    shown = f'<p class="error" id="login-error" role="alert">{html.escape(error)}</p>' if error else ""
    return LOGIN_PAGE.format(next=html.escape(_safe_next(next_path)), error=shown).encode()


# -- the guard ---------------------------------------------------------------------------


class AccessGuard:
    """ASGI middleware: Host, Origin and sign-in checks for the whole server (see module doc)."""

    def __init__(self, app, mimir_app: AppLike, *, throttle: LoginThrottle | None = None):
        self.app = app
        self.mimir = mimir_app
        self.options = mimir_app.settings.auth
        self.throttle = throttle or LoginThrottle()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path = scope.get("path", "")
        if scope["type"] == "websocket":
            principal = await self._websocket_principal(scope, headers)
            if principal is None:
                await send({"type": "websocket.close", "code": 1008})
                return
            scope.setdefault("state", {})["principal"] = principal
            await self.app(scope, receive, send)
            return
        allowed = self.options.allowed_hosts
        if not host_allowed(headers.get("host"), allowed):
            await _json(send, 421, "this server does not answer to that host name; add it to [server] allowed_hosts",
                        "invalid_request_error")
            return
        method = scope.get("method", "GET")
        if method not in SAFE_METHODS:
            origin = headers.get("origin") or headers.get("referer")
            if origin is not None and not origin_allowed(origin, headers.get("host"), scope.get("scheme", "http"),
                                                         allowed):
                await _json(send, 403, "cross-site request refused (its Origin is not this server)",
                            "invalid_request_error")
                return
        if self.options.mode == "none":
            if path in (LOGIN_PATH, LOGOUT_PATH):
                await _redirect(send, "/")
                return
            scope.setdefault("state", {})["principal"] = LOCAL_ADMIN
            await self.app(scope, receive, send)
            return
        if path == LOGIN_PATH:
            await self._login(scope, receive, send, headers)
            return
        if path == LOGOUT_PATH:
            await self._logout(scope, send, headers)
            return
        if path in OPEN_PATHS or path in SELF_CHECKED_PATHS:
            principal = await self._cookie_principal(headers)
            if principal is not None:
                scope.setdefault("state", {})["principal"] = principal
            await self.app(scope, receive, send)
            return
        if path == "/v1" or path.startswith("/v1/"):
            principal = await self._bearer_principal(headers)
            if principal is None:
                await _json(send, 401, "missing or invalid API key: send Authorization: Bearer <key> "
                            "(an admin creates keys with `mimir keys create NAME`)", "invalid_request_error",
                            "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return
        else:
            principal = await self._cookie_principal(headers)
            if principal is None:
                if method == "GET" and "text/html" in headers.get("accept", ""):
                    target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
                    await _redirect(send, f"{LOGIN_PATH}?next={quote(_safe_next(target), safe='/')}")
                else:
                    await _json(send, 401, "sign in first", "invalid_request_error", "not_signed_in")
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    # -- credentials -------------------------------------------------------------------
    async def _cookie_principal(self, headers: dict[str, str]) -> Principal | None:
        from starlette.concurrency import run_in_threadpool

        token = _cookie(headers, COOKIE)
        if not token:
            return None
        user = await run_in_threadpool(self.mimir.accounts.user_for_login, token)
        return user.principal if user else None

    async def _bearer_principal(self, headers: dict[str, str]) -> Principal | None:
        from starlette.concurrency import run_in_threadpool

        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        try:
            user = await run_in_threadpool(self.mimir.accounts.user_for_key, key.strip())
        except AuthenticationError:
            return None
        return user.principal

    async def _websocket_principal(self, scope, headers: dict[str, str]) -> Principal | None:
        allowed = self.options.allowed_hosts
        if not host_allowed(headers.get("host"), allowed):
            return None
        origin = headers.get("origin")
        scheme = "https" if scope.get("scheme") == "wss" else "http"
        if origin is not None and not origin_allowed(origin, headers.get("host"), scheme, allowed):
            return None
        if self.options.mode == "none":
            return LOCAL_ADMIN
        return await self._cookie_principal(headers)

    # -- sign-in and sign-out ------------------------------------------------------------
    async def _login(self, scope, receive, send, headers: dict[str, str]) -> None:
        from starlette.concurrency import run_in_threadpool

        method = scope.get("method", "GET")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if method in ("GET", "HEAD"):
            await _respond(send, 200, login_page(query.get("next", ["/"])[0]), "text/html; charset=utf-8")
            return
        if method != "POST":
            await _respond(send, 405, b"method not allowed", "text/plain", [(b"allow", b"GET, POST")])
            return
        body = await _read_body(receive, MAX_FORM_BYTES)
        form = parse_qs(body.decode("utf-8", "replace")) if body is not None else {}
        name = form.get("name", [""])[0]
        password = form.get("password", [""])[0]
        next_path = _safe_next(form.get("next", ["/"])[0])
        address = address_of(scope)
        try:
            if body is None:
                raise AuthenticationError("wrong user name or password")
            self.throttle.check(address, name)
            try:
                user = await run_in_threadpool(self.mimir.accounts.authenticate, name, password)
            except AuthenticationError:
                self.throttle.failed(address, name)
                raise
        except TooManyAttemptsError as exc:
            await _respond(send, 429, login_page(next_path, str(exc)), "text/html; charset=utf-8",
                           [(b"retry-after", str(exc.retry_after_s).encode())])
            return
        except MimirError:
            await _respond(send, 401, login_page(next_path, "Wrong user name or password."), "text/html; charset=utf-8")
            return
        self.throttle.succeeded(address, name)
        token = await run_in_threadpool(self.mimir.accounts.start_login, user,
                                        lifetime_s=self.options.login_lifetime_s)
        cookie = _set_cookie(scope, token, int(self.options.login_lifetime_s))
        await _redirect(send, next_path, [(b"set-cookie", cookie.encode("latin-1"))])

    async def _logout(self, scope, send, headers: dict[str, str]) -> None:
        from starlette.concurrency import run_in_threadpool

        if scope.get("method") != "POST":
            await _respond(send, 405, b"sign out with POST /logout", "text/plain", [(b"allow", b"POST")])
            return
        token = _cookie(headers, COOKIE)
        if token:
            await run_in_threadpool(self.mimir.accounts.end_login, token)
        await _redirect(send, LOGIN_PATH, [(b"set-cookie", _set_cookie(scope, "", 0).encode("latin-1"))])


def _headers(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        if name not in out:  # the first of repeated headers
            out[name] = value.decode("latin-1")
    return out


def _cookie(headers: dict[str, str], name: str) -> str | None:
    """The value of cookie ``name``. Parsed by hand: ``http.cookies`` gives up on the whole
    header at the first cookie it dislikes, and other apps on the same host set cookies too."""
    raw = headers.get("cookie")
    if not raw or len(raw) > 16384:
        return None
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None


def _set_cookie(scope, value: str, max_age: int) -> str:
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    return f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}"


async def _read_body(receive, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is larger than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def install_guard(server, mimir_app: AppLike) -> None:
    """Put the guard in front of a FastAPI/Starlette app (outermost middleware), once: every
    door that adds Mimir routes calls this, so no app serves them unguarded."""
    if getattr(server.state, "mimir_guard", False):
        return
    server.state.mimir_guard = True
    server.add_middleware(AccessGuard, mimir_app=mimir_app)
