"""Cleaning a student's message before anything else sees it.

Unicode is normalised (NFC), lone surrogates become U+FFFD, control and bidi-override
characters go (newline and tab stay), chat-template control strings are defused so a message
cannot open a new "system" turn, and very long input is cut with a visible notice. An empty
message is an :class:`~mimir.errors.InvalidInputError` before any model is called.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from mimir.errors import InvalidInputError
from mimir.models.base import ChatMessage

#: About 2,000 tokens of English: more than the bundled model's whole window.
DEFAULT_MAX_CHARS = 8000
#: Earlier messages kept for a turn (the tutor reads the last few; the context guard the rest).
DEFAULT_MAX_HISTORY_MESSAGES = 20

_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK_LINES = re.compile(r"\n{3,}")
#: Category Cc (C0, DEL, C1) minus tab and newline; carriage returns are turned into newlines first.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Invisible characters that reorder or hide text, plus BOM and non-characters.
_INVISIBLE = re.compile("[\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufffe\uffff]")
#: Strings chat templates treat as control tokens (ChatML, Llama 2/3, Gemma, Phi, Mistral).
_TEMPLATE_TOKEN = re.compile(
    r"<\|[A-Za-z0-9_ ]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>",
)


#: Spaces before a line break; the lookbehind starts a match only where a run of spaces starts.
#: It follows the first space, so every match starts with one and the engine skips to them in C.
TRAILING_SPACE = re.compile(r"[ \t](?<![ \t][ \t])[ \t]*\n")


@dataclass(frozen=True)
class CleanText:
    text: str
    truncated: bool = False
    #: Shown to the student when something visible happened (truncation).
    notice: str | None = None
    original_chars: int = 0
    #: What cleaning changed, for logs: "control characters removed", ...
    changes: tuple[str, ...] = ()


def _join_surrogate_pairs(text: str) -> str:
    """Surrogate pairs that arrived as two code points (from JSON escapes) become one character;
    lone surrogates stay (one round trip through UTF-16, in C)."""
    if not _SURROGATE_PAIR.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _strip_controls(text: str) -> str:
    """Control characters (Unicode category Cc) go, except newline and tab."""
    return _CONTROL.sub("", text)


def defuse_template_tokens(text: str) -> str:
    """Break chat-template control strings (``<|im_start|>``, ``[INST]``...) with spaces, so
    the tokenizer reads them as plain text and the student stays inside their own turn."""
    return _TEMPLATE_TOKEN.sub(lambda m: f"{m.group(0)[0]} {m.group(0)[1:-1]} {m.group(0)[-1]}", text)


def _clean(text: str) -> tuple[str, list[str]]:
    """The cleaning every piece of text gets, and what it changed (no cap, no empty check)."""
    changes: list[str] = []
    fixed = _join_surrogate_pairs(text)
    if _LONE_SURROGATE.search(fixed):
        fixed = _LONE_SURROGATE.sub("\ufffd", fixed)
        changes.append("invalid unicode replaced")
    fixed = fixed.replace("\r\n", "\n").replace("\r", "\n")
    no_ctrl = _INVISIBLE.sub("", _strip_controls(fixed))
    if no_ctrl != fixed:
        changes.append("control characters removed")
    normalised = unicodedata.normalize("NFC", no_ctrl)
    defused = defuse_template_tokens(normalised)
    if defused != normalised:
        changes.append("chat-template tokens defused")
    cleaned = TRAILING_SPACE.sub("\n", defused)
    return _BLANK_LINES.sub("\n\n", cleaned).strip(), changes


def clean_text(text: str) -> str:
    """The cleaning every message gets, without a cap or the empty-message check (for plain
    completions through the API, whose content the caller owns)."""
    return _clean(text)[0]


def _cut(text: str, max_chars: int) -> str:
    """The first ``max_chars`` characters, ending at a space when one is near the end."""
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > max_chars * 0.8:
        cut = cut[:space]
    return cut.rstrip()


def clean_user_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> CleanText:
    if not isinstance(text, str):
        raise InvalidInputError(f"the message must be text, not {type(text).__name__}")
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    cleaned, changes = _clean(text)
    if not cleaned:
        raise InvalidInputError("the message is empty: write a question or a topic")

    truncated = False
    notice = None
    if len(cleaned) > max_chars:
        cut = _cut(cleaned, max_chars)
        truncated = True
        notice = (
            f"Your message was too long, so only its first {len(cut):,} of {len(cleaned):,} "
            "characters were used."
        )
        cleaned = cut + " [...]"
        changes.append("truncated")
    return CleanText(
        text=cleaned,
        truncated=truncated,
        notice=notice,
        original_chars=len(text),
        changes=tuple(changes),
    )


def clean_history(
    history: Sequence[ChatMessage],
    *,
    max_messages: int = DEFAULT_MAX_HISTORY_MESSAGES,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> list[ChatMessage]:
    """Earlier messages cleaned the way the student's message is, each cut to ``max_chars``
    (marked ``[...]``), only the last ``max_messages`` kept, empty ones dropped.

    History comes from storage or from an API client, and rules and prompts read it: it gets
    the same cleaning and cap as the message itself, so no pattern ever sees more.
    """
    out: list[ChatMessage] = []
    for message in list(history)[-max_messages:] if max_messages > 0 else []:
        content = message.content if isinstance(message.content, str) else str(message.content)
        cleaned, _ = _clean(content[: max_chars * 4])  # cleaning never grows text much
        if len(cleaned) > max_chars:
            cleaned = _cut(cleaned, max_chars) + " [...]"
        if cleaned:
            out.append(ChatMessage(message.role, cleaned))
    return out


def unpaired_surrogate(text: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in ``text`` (one that no pair explains), or ``None``."""
    for m in _LONE_SURROGATE.finditer(text):
        ch, i = m.group(0), m.start()
        if "\ud800" <= ch <= "\udbff" and i + 1 < len(text) and "\udc00" <= text[i + 1] <= "\udfff":
            continue
        if "\udc00" <= ch <= "\udfff" and i > 0 and "\ud800" <= text[i - 1] <= "\udbff":
            continue
        return i
    return None
