"""Request limits of the HTTP API (``[server]`` settings), checked before any work starts.

- :class:`BodyLimit`, an ASGI middleware on ``/v1``: a body over ``max_body`` gets 413 (read
  no further than the limit), a body that is not UTF-8 gets 400; both as OpenAI error bodies.
- :func:`check_chat_request`: message count and length, lone surrogates, ``stop`` and
  ``max_tokens`` against the model's context window. It raises
  :class:`~mimir.errors.RequestLimitError`, which the API answers as a 400 naming the field.

Everything here runs before the response starts, so a streaming request that breaks a limit
gets its error as JSON with a status, never inside a stream that already said 200.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mimir.errors import RequestLimitError
from mimir.tutor.text import unpaired_surrogate

if TYPE_CHECKING:
    from mimir.config import Settings

#: OpenAI's own limit on stop sequences, and a sane length for one.
MAX_STOP = 4
MAX_STOP_CHARS = 64


def error_body(message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


async def _send_error(send, status: int, message: str, kind: str = "invalid_request_error") -> None:
    body = json.dumps(error_body(message, kind)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Read a ``/v1`` request's body up to ``max_bytes``; refuse bigger or non-UTF-8 bodies."""

    def __init__(self, app, max_bytes: int, prefix: str = "/v1/"):
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix) or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        too_big = f"the request body is larger than the server's limit of {self.max_bytes:,} bytes ([server] max_body)"
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, 413, too_big)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _send_error(send, 413, too_big)
                return
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            await _send_error(send, 400, f"the request body is not valid UTF-8 (byte {exc.start}): send JSON as UTF-8")
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls wait for the client to disconnect

        await self.app(scope, replay, send)


def check_chat_request(body, settings: Settings, context_length: int) -> None:
    """Raise :class:`RequestLimitError` for the first limit ``body`` breaks."""
    limits = settings.limits
    if len(body.messages) > limits.max_messages:
        raise RequestLimitError(
            f"{len(body.messages)} messages is more than the server's limit of {limits.max_messages} "
            "([server] max_messages): send fewer earlier messages", param="messages")
    for i, message in enumerate(body.messages):
        if len(message.content) > limits.max_message_chars:
            raise RequestLimitError(
                f"messages[{i}].content has {len(message.content):,} characters, more than the server's limit of "
                f"{limits.max_message_chars:,} ([server] max_message_chars)", param=f"messages.{i}.content")
        at = unpaired_surrogate(message.content)
        if at is not None:
            raise RequestLimitError(
                f"messages[{i}].content holds an unpaired UTF-16 surrogate at character {at}: send valid Unicode",
                param=f"messages.{i}.content")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    if len(stops) > MAX_STOP:
        raise RequestLimitError(f"at most {MAX_STOP} stop sequences, got {len(stops)}", param="stop")
    for stop in stops:
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise RequestLimitError(f"each stop sequence needs 1 to {MAX_STOP_CHARS} characters", param="stop")
        if unpaired_surrogate(stop) is not None:
            raise RequestLimitError("a stop sequence holds an unpaired UTF-16 surrogate", param="stop")
    if body.max_tokens is not None and body.max_tokens >= context_length:
        raise RequestLimitError(
            f"max_tokens={body.max_tokens} leaves no room for the input in the model's {context_length}-token "
            "context window", param="max_tokens")
