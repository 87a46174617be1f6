"""``mimir ask``: one question, answered with streamed tokens."""

from __future__ import annotations

import json
import sys
import uuid

import typer

from mimir.cli.context import state
from mimir.errors import InvalidInputError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.telemetry.records import turn_json


def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="The question to ask the tutor."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of streaming text."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Most tokens in the answer."),
) -> None:
    """Ask one question; the answer streams to the terminal.

    Every step is measured (time, tokens, RSS before/after/peak, GPU memory, model loads) and
    stored under MIMIR_HOME; ``--json`` prints the turn with its steps; ``-v`` logs a line per step.
    """
    if not question.strip():
        raise InvalidInputError("the question is empty; write what you want to learn about")
    app = state(ctx).app()
    manager = app.manager
    telemetry = app.telemetry  # opens the database now: a bad MIMIR_HOME fails before any load
    messages = [ChatMessage("user", question.strip())]
    params = GenerationParams(max_tokens=max_tokens, temperature=app.settings.tutor.temperature)
    model_id = manager.model_for_role("response")
    with telemetry.turn(session_id=f"cli-{uuid.uuid4().hex[:12]}") as turn:
        with telemetry.step("response", agent="response", model=model_id) as step:
            with manager.use(model_id) as model:
                stream = model.stream(messages, params)
                for piece in stream:
                    if not as_json:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                completion = stream.completion
            step.add_tokens(tokens_in=completion.tokens_in, tokens_out=completion.tokens_out)
    telemetry.flush()
    if as_json:
        payload = turn_json(
            turn.record,
            completion.text,
            model=completion.model_id,
            finish_reason=completion.finish_reason,
        )
        typer.echo(json.dumps(payload))
    else:
        sys.stdout.write("\n")
