"""OpenAI-compatible HTTP API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Two kinds of model answer:

- ``mimir-tutor``: the whole tutor pipeline. The last message must be the student's; earlier
  user/assistant messages are the history (system messages are ignored: the tutor brings its
  own). With ``"session_id"`` in the body the turn joins that stored session (``"new"`` starts
  one) and the history comes from storage instead. The reply carries a ``mimir`` object with
  the active flags, session and turn ids, and per-step telemetry.
- any configured model id: plain chat completion with that model, through the manager (so
  the budget, leases and telemetry apply). This lets another Mimir, or any OpenAI client, use
  this process as a model server.

This module needs the ``ui`` extra (fastapi, pydantic); import it only to serve.

``"stream": true`` streams server-sent events in OpenAI's chunk format. Errors use OpenAI's
error body ``{"error": {"message", "type", "param", "code"}}`` with the status each
:class:`~mimir.errors.MimirError` declares.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from mimir.errors import InvalidInputError, MimirError, UnknownModelError
from mimir.models.base import ChatMessage, GenerationParams

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mimir.app import MimirApp

TUTOR_MODEL = "mimir-tutor"


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    #: Mimir extension: join a stored tutor session ("new" starts one).
    session_id: str | None = None


def error_body(message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def install(api: FastAPI, app: MimirApp) -> None:
    """Add the ``/v1`` routes and OpenAI-style error handling to a FastAPI app."""
    from fastapi import Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    @api.exception_handler(MimirError)
    async def _mimir_error(request: Request, exc: MimirError):
        return JSONResponse(error_body(str(exc), exc.kind), status_code=exc.http_status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(
            error_body(f"{param or 'request'}: {first.get('msg', 'invalid request')}", "invalid_request_error", param),
            status_code=400,
        )

    @api.get("/v1/models")
    def list_models() -> dict:
        now = int(time.time())
        ids = [TUTOR_MODEL, *app.settings.models]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": "mimir"} for i in ids]}

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        if body.model != TUTOR_MODEL and body.model not in app.settings.models:
            raise UnknownModelError(body.model, [TUTOR_MODEL, *app.settings.models])
        run = _tutor_runner(app, body) if body.model == TUTOR_MODEL else _model_runner(app, body)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if not body.stream:
            result = await run_in_threadpool(run, lambda text: None)
            return _completion(completion_id, body.model, result)
        return StreamingResponse(_sse(completion_id, body.model, run), media_type="text/event-stream")


def _params(app: MimirApp, body) -> GenerationParams:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationParams(
        max_tokens=body.max_tokens or app.settings.tutor.response_max_tokens,
        temperature=app.settings.tutor.temperature if body.temperature is None else body.temperature,
        top_p=0.95 if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
    )


def _tutor_runner(app: MimirApp, body) -> Callable[[Callable[[str], None]], dict]:
    messages = [m for m in body.messages if m.role != "system"]
    if not messages or messages[-1].role != "user":
        raise InvalidInputError("the last message must be the student's (role 'user')")
    history = [ChatMessage(m.role, m.content) for m in messages[:-1]]
    persist = body.session_id is not None
    session = None if body.session_id in (None, "new") else body.session_id

    def run(on_token: Callable[[str], None]) -> dict:
        result = app.tutor.run_turn(
            messages[-1].content,
            session,
            on_token=on_token,
            history=None if persist else history,
            persist=persist,
            max_tokens=body.max_tokens,
        )
        from mimir.telemetry.records import step_json

        return {
            "text": result.response,
            "finish_reason": "length" if result.finish_reason == "length" else "stop",
            "prompt_tokens": result.tokens_in,
            "completion_tokens": result.tokens_out,
            "mimir": {
                "flags": list(result.flags),
                "session_id": result.session_id if persist else None,
                "turn_id": result.turn_id,
                "chart_path": result.chart_path,
                "notices": list(result.notices),
                "peak_rss_bytes": result.telemetry.peak_rss_bytes,
                "steps": [step_json(s) for s in result.telemetry.steps],
            },
        }

    return run


def _model_runner(app: MimirApp, body) -> Callable[[Callable[[str], None]], dict]:
    messages = [ChatMessage(m.role, m.content) for m in body.messages]
    params = _params(app, body)

    def run(on_token: Callable[[str], None]) -> dict:
        with app.telemetry.step("api_completion", agent="api", model=body.model) as step:
            completion = app.runner.generate(body.model, messages, params, on_token=on_token, step=step)
        return {
            "text": completion.text,
            "finish_reason": "length" if completion.finish_reason == "length" else "stop",
            "prompt_tokens": completion.tokens_in,
            "completion_tokens": completion.tokens_out,
        }

    return run


def _completion(completion_id: str, model: str, result: dict) -> dict:
    out = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result["text"]},
                "finish_reason": result["finish_reason"],
            }
        ],
        "usage": {
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
        },
    }
    if "mimir" in result:
        out["mimir"] = result["mimir"]
    return out


def _chunk(completion_id: str, model: str, delta: dict, finish_reason: str | None = None) -> str:
    data = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(data)}\n\n"


def _sse(completion_id: str, model: str, run: Callable[[Callable[[str], None]], dict]) -> Iterator[str]:
    """Run the generation in a worker thread and stream its tokens as SSE chunks.

    A failure after the stream started is sent as an ``error`` event (the status line is
    already out), then ``[DONE]``.
    """
    events: queue.Queue = queue.Queue()
    done = object()

    def work() -> None:
        try:
            events.put(("result", run(lambda text: events.put(("token", text)))))
        except MimirError as exc:
            events.put(("error", error_body(str(exc), exc.kind)))
        except Exception as exc:  # never leave the client hanging
            events.put(("error", error_body(f"{type(exc).__name__}: {exc}", "server_error")))
        finally:
            events.put((done, None))

    threading.Thread(target=work, name="mimir-api-stream", daemon=True).start()
    yield _chunk(completion_id, model, {"role": "assistant", "content": ""})
    while True:
        kind, item = events.get()
        if kind is done:
            break
        if kind == "token" and item:
            yield _chunk(completion_id, model, {"content": item})
        elif kind == "result":
            yield _chunk(completion_id, model, {}, item["finish_reason"])
            if "mimir" in item:
                yield f"data: {json.dumps({'id': completion_id, 'object': 'mimir.turn', 'mimir': item['mimir']})}\n\n"
        elif kind == "error":
            yield f"data: {json.dumps(item)}\n\n"
    yield "data: [DONE]\n\n"


def create_api(app: MimirApp) -> FastAPI:
    """A FastAPI app with only the OpenAI-compatible routes (the web UI mounts the same)."""
    from fastapi import FastAPI

    api = FastAPI(title="Mimir OpenAI-compatible API")
    install(api, app)
    return api
