"""Running an API request's generation through the admission queue (:mod:`mimir.runtime.admission`).

A request gets its ticket in the route (429 or 503 come back before any 200), then its
generation runs in a worker thread of its own: never in the server's thread pool, so turns
waiting in line never starve ``/v1/models`` or the health checks. The event loop only awaits.

- :func:`run_admitted` (``"stream": false``): waits for the result; a client that disconnects
  meanwhile cancels the turn (or its place in line).
- :func:`sse_stream` (``"stream": true``): SSE chunks in OpenAI's format; while the turn waits,
  ``: queue position N`` comments tell the client its place in line. A client that closes
  the stream cancels the turn: generation stops at the next token and its lease is released.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from mimir.api.limits import error_body
from mimir.errors import MimirError
from mimir.runtime.admission import Ticket, TurnControl

#: ``run(on_token, control) -> result dict``: one generation (tutor turn or plain completion).
Run = Callable[[Callable[[str], None], TurnControl], dict]
DISCONNECTED = "the client disconnected"


def user_key(principal: Any, body: Any, client_host: str | None) -> str:
    """Whose turn this is, for fairness and ``per_user_concurrency``: the signed-in user (and
    OpenAI's ``user`` field, for a service that speaks for many students), else ``user``, else
    the session, else the client address."""
    end_user = getattr(body, "user", None)
    if principal is not None and getattr(principal, "user_id", None):
        return f"user:{principal.user_id}" + (f"/{end_user}" if end_user else "")
    if end_user:
        return f"enduser:{end_user}"
    session = getattr(body, "session_id", None)
    if session and session != "new":
        return f"session:{session}"
    return f"address:{client_host or 'unknown'}"


def _start(ticket: Ticket, run: Run, emit: Callable[[tuple[str, Any]], None]) -> None:
    """Wait for a slot, run, and report through ``emit`` in a worker thread of its own."""

    def work() -> None:
        try:
            ticket.wait(on_position=lambda place: emit(("queue", place)))
            emit(("result", run(lambda text: emit(("token", text)), ticket.control)))
        except MimirError as exc:
            emit(("error", exc))
        except Exception as exc:  # noqa: BLE001 - never leave the client hanging
            emit(("error", exc))
        finally:
            ticket.release()
            emit(("done", None))

    threading.Thread(target=work, name="mimir-api-turn", daemon=True).start()


def _threadsafe(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Callable[[tuple[str, Any]], None]:
    def put(item: tuple[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:
            pass  # the loop is gone (server stopped): nobody is listening any more

    return put


async def _watch_disconnect(receive, ticket: Ticket) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ticket.cancel(DISCONNECTED)
            return


async def run_admitted(ticket: Ticket, run: Run, receive) -> dict:
    """The result of ``run`` once admitted; raises its error. ``receive`` is the request's
    ASGI receive, watched for a disconnect."""
    queue: asyncio.Queue = asyncio.Queue()
    _start(ticket, run, _threadsafe(asyncio.get_running_loop(), queue))
    watcher = asyncio.create_task(_watch_disconnect(receive, ticket))
    result: dict | None = None
    error: BaseException | None = None
    try:
        while True:
            kind, item = await queue.get()
            if kind == "result":
                result = item
            elif kind == "error":
                error = item
            elif kind == "done":
                break
    except asyncio.CancelledError:
        ticket.cancel(DISCONNECTED)
        raise
    finally:
        watcher.cancel()
    if error is not None:
        raise error
    assert result is not None
    return result


def chunk(completion_id: str, model: str, delta: dict, finish_reason: str | None = None) -> str:
    data = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(data)}\n\n"


async def sse_stream(completion_id: str, model: str, run: Run, ticket: Ticket) -> AsyncIterator[str]:
    """The turn as server-sent events. A failure after the stream started is sent as an
    ``error`` event (the status line is already out), then ``[DONE]``."""
    queue: asyncio.Queue = asyncio.Queue()
    _start(ticket, run, _threadsafe(asyncio.get_running_loop(), queue))
    finished = False
    try:
        yield chunk(completion_id, model, {"role": "assistant", "content": ""})
        while True:
            kind, item = await queue.get()
            if kind == "done":
                break
            if kind == "queue":
                yield f": queue position {item}\n\n"
            elif kind == "token" and item:
                yield chunk(completion_id, model, {"content": item})
            elif kind == "result":
                yield chunk(completion_id, model, {}, item["finish_reason"])
                if "mimir" in item:
                    yield f"data: {json.dumps({'id': completion_id, 'object': 'mimir.turn', 'mimir': item['mimir']})}\n\n"
            elif kind == "error":
                body = error_body(str(item), item.kind) if isinstance(item, MimirError) else \
                    error_body(f"{type(item).__name__}: {item}", "server_error")
                yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:  # the client went away (the server cancelled this generator)
            ticket.cancel(DISCONNECTED)
