"""The context-window guard: make a chat fit a model's window, or refuse clearly.

Pure functions; the token counter is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mimir.errors import ContextOverflowError

if TYPE_CHECKING:
    from mimir.models.base import ChatMessage

TRUNCATION_NOTICE = "\n[... message truncated to fit the model's context window ...]"


@dataclass(frozen=True)
class FittedMessages:
    messages: list[ChatMessage]
    tokens: int
    dropped: int
    truncated: bool


def fit_messages(
    messages: list[ChatMessage],
    *,
    context_length: int,
    reserve_tokens: int,
    count: Callable[[ChatMessage], int],
    model_id: str,
    overflow: str = "trim",
    truncate_text: Callable[[str, int], str] | None = None,
) -> FittedMessages:
    """Return messages whose prompt plus ``reserve_tokens`` of output fits ``context_length``.

    With ``overflow="trim"``: drop the oldest messages that are neither system messages nor
    the last message; if it still does not fit, truncate the last message's text and append
    :data:`TRUNCATION_NOTICE`. With ``overflow="error"`` raise :class:`ContextOverflowError`.
    The output reserve shrinks to at most half the window so a long answer request never
    makes a short prompt fail.
    """
    reserve = min(reserve_tokens, context_length // 2)
    limit = context_length - reserve
    costs = [count(m) for m in messages]
    total = sum(costs)
    if total <= limit:
        return FittedMessages(list(messages), total, 0, False)
    if overflow == "error":
        raise ContextOverflowError(model_id, total + reserve, context_length)

    kept = list(zip(messages, costs))
    dropped = 0
    i = 0
    while total > limit and i < len(kept) - 1:
        msg, cost = kept[i]
        if msg.role == "system":
            i += 1
            continue
        del kept[i]
        total -= cost
        dropped += 1
    if total <= limit:
        return FittedMessages([m for m, _ in kept], total, dropped, False)

    # Still too long: the system prompt plus the last message alone overflow. Cut the
    # longest of them (usually the user's message) down to what remains.
    if truncate_text is None:
        raise ContextOverflowError(model_id, total + reserve, context_length)
    idx = max(range(len(kept)), key=lambda k: kept[k][1])
    msg, cost = kept[idx]
    room = limit - (total - cost) - count(replace(msg, content=TRUNCATION_NOTICE))
    if room <= 0:
        raise ContextOverflowError(model_id, total + reserve, context_length)
    new_msg = replace(msg, content=truncate_text(msg.content, room) + TRUNCATION_NOTICE)
    new_cost = count(new_msg)
    kept[idx] = (new_msg, new_cost)
    total = total - cost + new_cost
    return FittedMessages([m for m, _ in kept], total, dropped, True)
