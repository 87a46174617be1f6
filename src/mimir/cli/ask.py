"""``mimir ask``: one question, answered with streamed tokens."""

from __future__ import annotations

import json
import sys

import typer

from mimir.cli.context import state
from mimir.errors import InvalidInputError
from mimir.models.base import ChatMessage, GenerationParams


def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="The question to ask the tutor."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of streaming text."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Most tokens in the answer."),
) -> None:
    """Ask one question; the answer streams to the terminal."""
    if not question.strip():
        raise InvalidInputError("the question is empty; write what you want to learn about")
    app = state(ctx).app()
    manager = app.manager
    messages = [ChatMessage("user", question.strip())]
    params = GenerationParams(max_tokens=max_tokens, temperature=app.settings.tutor.temperature)
    with manager.use_role("response") as model:
        stream = model.stream(messages, params)
        for piece in stream:
            if not as_json:
                sys.stdout.write(piece)
                sys.stdout.flush()
        completion = stream.completion
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "response": completion.text,
                    "model": completion.model_id,
                    "tokens_in": completion.tokens_in,
                    "tokens_out": completion.tokens_out,
                    "finish_reason": completion.finish_reason,
                }
            )
        )
    else:
        sys.stdout.write("\n")
