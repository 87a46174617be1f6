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

Who is calling comes from the guard in front of the app (:mod:`mimir.auth.web`): with
``[server] auth = "password"`` the user of the ``Authorization: Bearer`` key. Sessions
started through the API (``"session_id": "new"``) belong to that user; a ``session_id``
of another user's session gets the same 404 as an unknown one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from fastapi import Request
from pydantic import BaseModel, Field

from mimir.api.limits import BodyLimit, check_chat_request, error_body
from mimir.api.turns import run_admitted, sse_stream, user_key
from mimir.auth.roles import Principal, require
from mimir.auth.web import principal_of
from mimir.errors import InvalidInputError, MimirError, UnknownModelError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.runtime.admission import TurnControl
from mimir.tutor.text import clean_text, clean_user_text

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mimir.app import MimirApp

TUTOR_MODEL = "mimir-tutor"
#: Response header: the request's place in line when it was admitted (0: it runs at once).
QUEUE_HEADER = "X-Mimir-Queue-Position"
log = logging.getLogger(__name__)


def _error_response(exc: MimirError):
    """The OpenAI error body and status for ``exc``; ``Retry-After`` when it says when to retry."""
    from fastapi.responses import JSONResponse

    headers = {}
    if getattr(exc, "retry_after_s", None) is not None:  # busy server, throttled sign-in
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    body = error_body(str(exc), exc.kind, getattr(exc, "param", None))
    body["error"]["code"] = getattr(exc, "code", None)
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


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
    #: OpenAI's end-user id: turns are queued fairly and limited per user (docs/limits.md).
    user: str | None = Field(default=None, max_length=256)
    #: Mimir extension: join a stored tutor session ("new" starts one).
    session_id: str | None = None


def install(api: FastAPI, app: MimirApp) -> None:
    """Add the ``/v1`` routes and OpenAI-style error handling to a FastAPI app, behind the
    access guard (:func:`mimir.auth.web.install_guard`)."""
    from fastapi.concurrency import run_in_threadpool

    from mimir.auth.web import install_guard

    install_guard(api, app)
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    from starlette.exceptions import HTTPException

    api.add_middleware(BodyLimit, max_bytes=app.settings.limits.max_body_bytes)

    @api.exception_handler(MimirError)
    async def _mimir_error(request: Request, exc: MimirError):
        return _error_response(exc)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("request failed: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(error_body(f"internal error ({type(exc).__name__})", "server_error"), status_code=500)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(
            error_body(f"{param or 'request'}: {first.get('msg', 'invalid request')}", "invalid_request_error", param),
            status_code=400,
        )

    @api.get("/v1/models")
    async def list_models(request: Request) -> dict:  # async: never waits for a pool thread
        require(principal_of(request), "chat")
        now = int(time.time())
        ids = [TUTOR_MODEL, *app.settings.models]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": "mimir"} for i in ids]}

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        who = require(principal_of(request), "chat")
        if body.model != TUTOR_MODEL and body.model not in app.settings.models:
            raise UnknownModelError(body.model, [TUTOR_MODEL, *app.settings.models])
        model_id = app.settings.model_for_role("response") if body.model == TUTOR_MODEL else body.model
        check_chat_request(body, app.settings, app.settings.models[model_id].context_length)
        # Every input error is raised here, before a stream could answer 200.
        if body.model == TUTOR_MODEL:
            messages = _tutor_messages(body)  # a bad request creates no session
            clean_user_text(messages[-1].content)  # nor does an empty message
            session = await run_in_threadpool(_session_for, app, body.session_id, who)
            run = _tutor_runner(app, body, session)
        else:
            run = _model_runner(app, body)
        # A busy user (429) or a full queue (503) is refused here, before any 200.
        ticket = app.queue.enter(user_key(who, body, request.client.host if request.client else None))
        headers = {QUEUE_HEADER: str(ticket.position())}
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if not body.stream:
            result = await run_admitted(ticket, run, request.receive)
            return JSONResponse(_completion(completion_id, body.model, result), headers=headers)
        return StreamingResponse(sse_stream(completion_id, body.model, run, ticket), media_type="text/event-stream",
                                 headers=headers)


def _params(app: MimirApp, body) -> GenerationParams:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationParams(
        max_tokens=body.max_tokens or app.settings.tutor.response_max_tokens,
        temperature=app.settings.tutor.temperature if body.temperature is None else body.temperature,
        top_p=0.95 if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
    )


def _session_for(app: MimirApp, session_id: str | None, who: Principal) -> str | None:
    """The stored session a tutor request joins: none, a new one owned by the caller, or
    the caller's own existing one (another user's is NotFoundError, as if it did not exist)."""
    if session_id is None:
        return None
    if session_id == "new":
        return app.conversations.create_session(owner_id=who.user_id)
    return app.conversations.get_session(session_id, owner=who.user_id).id


def _tutor_messages(body) -> list:
    messages = [m for m in body.messages if m.role != "system"]
    if not messages or messages[-1].role != "user":
        raise InvalidInputError("the last message must be the student's (role 'user')")
    return messages


def _tutor_runner(app: MimirApp, body, session: str | None) -> Callable[[Callable[[str], None]], dict]:
    messages = _tutor_messages(body)
    history = [ChatMessage(m.role, m.content) for m in messages[:-1]]
    persist = session is not None

    def run(on_token: Callable[[str], None], control: TurnControl | None = None) -> dict:
        result = app.tutor.run_turn(
            messages[-1].content,
            session,
            on_token=on_token,
            history=None if persist else history,
            persist=persist,
            max_tokens=body.max_tokens,
            control=control,
        )
        from mimir.core.records import step_json

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
    # Cleaned like the tutor's input: a message cannot open a new turn with template tokens.
    messages = [ChatMessage(m.role, clean_text(m.content)) for m in body.messages]
    params = _params(app, body)

    def run(on_token: Callable[[str], None], control: TurnControl | None = None) -> dict:
        # Through the runner like every generation: lease, OOM policy, accounting; the
        # control (a client that left, a deadline) is checked at every token.
        with app.telemetry.step("api_completion", agent="api", model=body.model) as step:
            completion = app.runner.generate(body.model, messages, params, on_token=on_token, step=step,
                                             cancel=None if control is None else control.check)
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


def create_api(app: MimirApp) -> FastAPI:
    """A FastAPI app with only the OpenAI-compatible routes (the web UI mounts the same)."""
    from fastapi import FastAPI

    api = FastAPI(title="Mimir OpenAI-compatible API")
    install(api, app)
    return api
