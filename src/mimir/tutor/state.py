"""Prompt state: the eleven flags that choose which prompt segments a turn uses.

Every turn starts from a reset state; the decision steps switch flags on; prompt assembly
reads them; the active flag names are stored with the turn.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Flag(str, Enum):
    """One prompt-state key. The value is the key as stored and shown (``"MATH_THINKING"``)."""

    MATH_THINKING = "MATH_THINKING"
    QUESTION_ANSWER_DESIGN = "QUESTION_ANSWER_DESIGN"
    REASONING_THINKING = "REASONING_THINKING"
    VAGUE_INPUT = "VAGUE_INPUT"
    USER_UNDERSTANDING = "USER_UNDERSTANDING"
    GENERAL_FORMATTING = "GENERAL_FORMATTING"
    LATEX_FORMATTING = "LATEX_FORMATTING"
    GUIDING_TEACHING = "GUIDING_TEACHING"
    STRUCTURE_PRACTICE_QUESTIONS = "STRUCTURE_PRACTICE_QUESTIONS"
    PRACTICE_QUESTION_FOLLOWUP = "PRACTICE_QUESTION_FOLLOWUP"
    TOOL_USE_ENHANCEMENT = "TOOL_USE_ENHANCEMENT"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, name: str | Flag) -> Flag:
        """The flag called ``name`` (case-insensitive); ``ValueError`` listing valid keys."""
        if isinstance(name, Flag):
            return name
        key = str(name).strip().upper()
        try:
            return cls(key)
        except ValueError:
            valid = ", ".join(f.value for f in cls)
            raise ValueError(f"unknown prompt-state flag '{name}'; valid flags: {valid}") from None


#: Flags whose segment is a hidden thinking step rather than part of the response's system prompt.
THINKING_FLAGS: frozenset[Flag] = frozenset(
    {Flag.MATH_THINKING, Flag.QUESTION_ANSWER_DESIGN, Flag.REASONING_THINKING}
)


class PromptState:
    """The flags of one turn. Not shared between turns: call :meth:`reset` at the start."""

    def __init__(self, active: Iterable[Flag | str] = ()):
        self._on: set[Flag] = set()
        #: The math engine's verdict on the student's answer this turn (``correct``,
        #: ``incorrect``, ``unknown``) or ``None`` when there was nothing to check.
        self.math_verdict: str | None = None
        for flag in active:
            self.set(flag)

    def reset(self) -> None:
        """Every flag back to off."""
        self._on.clear()
        self.math_verdict = None

    def set(self, flag: Flag | str, on: bool = True) -> None:
        flag = Flag.parse(flag)
        if on:
            self._on.add(flag)
        else:
            self._on.discard(flag)

    def is_on(self, flag: Flag | str) -> bool:
        return Flag.parse(flag) in self._on

    def active(self) -> list[str]:
        """Names of the flags that are on, sorted (the form stored with a turn)."""
        return sorted(f.value for f in self._on)

    def flags(self) -> frozenset[Flag]:
        return frozenset(self._on)

    def as_dict(self) -> dict[str, bool]:
        """Every flag with its value, in declaration order."""
        return {f.value: f in self._on for f in Flag}

    def __contains__(self, flag: object) -> bool:
        if not isinstance(flag, (Flag, str)):
            return False
        try:
            return self.is_on(flag)
        except ValueError:
            return False

    def __repr__(self) -> str:
        return f"PromptState({self.active()})"
