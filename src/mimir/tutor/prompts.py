"""The prompt library: every prompt segment is a data file shipped in ``mimir/prompts/``.

A user can point ``[tutor] prompts_dir`` at a folder of their own; a file there with the same
name as a shipped one (``core_identity.md``, ``decision_tool.md``...) replaces it. See
``docs/prompts.md`` for the list and the decision-file format.

Decision prompts (``decision_*.md``) carry TOML front matter between ``+++`` lines naming the
allowed answers (``choices``), the flags each answer sets (``outcomes``) and an optional
log-probability ``bias`` per answer. The pipeline scores the choices with
:meth:`~mimir.models.base.LoadedModel.score_choices` and never parses free text.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mimir.errors import PromptFormatError, UnknownPromptError
from mimir.models.base import ChatMessage
from mimir.tutor.state import Flag, THINKING_FLAGS

#: Segments of the response's system prompt, in assembly order (core identity first).
SYSTEM_SEGMENTS: tuple[str, ...] = (
    "core_identity",
    "general_formatting",
    "latex_formatting",
    "vague_input",
    "user_understanding",
    "guiding_teaching",
    "structure_practice_questions",
    "practice_question_followup",
    "tool_use_enhancement",
)
#: Instructions for the hidden thinking steps.
THINKING_SEGMENTS: tuple[str, ...] = (
    "thinking_math",
    "thinking_question_answer_design",
    "thinking_reasoning",
)
#: Shared text of every decision prompt: the system message and the conversation block.
DECISION_SUPPORT: tuple[str, ...] = ("decision_system", "decision_context")
#: Instructions for the graph tool when the model must supply the chart data as JSON.
TOOL_SEGMENTS: tuple[str, ...] = ("chart_data",)
SEGMENTS: tuple[str, ...] = SYSTEM_SEGMENTS + THINKING_SEGMENTS + DECISION_SUPPORT + TOOL_SEGMENTS
#: Decision prompts, by name (file ``decision_<name>.md``).
TOOL_DECISION = "tool"
ROUTING_DECISIONS: tuple[str, ...] = (
    "practice_questions",
    "understanding",
    "practice_followup",
    "guiding_teaching",
)
DECISIONS: tuple[str, ...] = (TOOL_DECISION,) + ROUTING_DECISIONS

_FLAG_SEGMENT: dict[Flag, str] = {
    Flag.MATH_THINKING: "thinking_math",
    Flag.QUESTION_ANSWER_DESIGN: "thinking_question_answer_design",
    Flag.REASONING_THINKING: "thinking_reasoning",
    Flag.VAGUE_INPUT: "vague_input",
    Flag.USER_UNDERSTANDING: "user_understanding",
    Flag.GENERAL_FORMATTING: "general_formatting",
    Flag.LATEX_FORMATTING: "latex_formatting",
    Flag.GUIDING_TEACHING: "guiding_teaching",
    Flag.STRUCTURE_PRACTICE_QUESTIONS: "structure_practice_questions",
    Flag.PRACTICE_QUESTION_FOLLOWUP: "practice_question_followup",
    Flag.TOOL_USE_ENHANCEMENT: "tool_use_enhancement",
}
_SUFFIX = ".md"
_FENCE = "+++"


def estimate_tokens(text: str) -> int:
    """Rough token count (words * 1.3), good enough for prompt-size budgets."""
    return math.ceil(len(text.split()) * 1.3)


def render_history(
    history: Iterable[ChatMessage | Mapping[str, str]],
    *,
    max_messages: int = 4,
    max_chars: int = 400,
) -> str:
    """The last ``max_messages`` messages as ``Student:``/``Tutor:`` lines, each cut to
    ``max_chars`` characters (the end of a long tutor message is where its question is, so
    long messages keep their head and tail)."""
    lines: list[str] = []
    items = list(history)[-max_messages:] if max_messages > 0 else []
    for item in items:
        role, content = _role_content(item)
        who = "Tutor" if role == "assistant" else "Student"
        text = " ".join(content.split())
        if len(text) > max_chars:
            half = max(1, max_chars // 2 - 2)
            text = f"{text[:half]} ... {text[-half:]}"
        lines.append(f"{who}: {text}")
    return "\n".join(lines) if lines else "(no earlier messages)"


def _role_content(item: ChatMessage | Mapping[str, str]) -> tuple[str, str]:
    if isinstance(item, Mapping):
        return str(item.get("role", "user")), str(item.get("content", ""))
    return str(item.role), str(item.content)


@dataclass(frozen=True)
class DecisionPrompt:
    """A constrained-choice question for a model decider."""

    name: str
    question: str
    choices: tuple[str, ...]
    #: Choice -> the flag values that answer sets.
    outcomes: Mapping[str, Mapping[Flag, bool]]
    #: Added to a choice's log-probability before comparing (calibration without code).
    bias: Mapping[str, float] = field(default_factory=dict)
    system: str = ""
    context_template: str = "{history}\n\n{message}"
    source: str = ""

    @property
    def flags(self) -> frozenset[Flag]:
        """The flags this decision decides."""
        return frozenset(next(iter(self.outcomes.values())).keys())

    def messages(
        self,
        message: str,
        history: Sequence[ChatMessage | Mapping[str, str]] = (),
        *,
        max_history_messages: int = 4,
        max_history_chars: int = 400,
    ) -> list[ChatMessage]:
        """Chat messages to score. Every decision shares the system message and the
        conversation block and differs only in the question at the very end, so a backend
        that keeps its KV cache evaluates the shared prefix once per turn."""
        context = (
            self.context_template.replace(
                "{history}",
                render_history(history, max_messages=max_history_messages, max_chars=max_history_chars),
            )
            # A student cannot close the quoted block and write their own question.
            .replace("{message}", message.replace('"""', '" " "').strip())
        )
        return [
            ChatMessage("system", self.system),
            ChatMessage("user", f"{context.rstrip()}\n\n{self.question}"),
        ]

    def pick(self, scores: Mapping[str, float]) -> str:
        """The winning choice: highest score plus bias; ties go to the earlier choice."""
        best: str | None = None
        best_score = -math.inf
        for choice in self.choices:
            value = float(scores.get(choice, -math.inf)) + float(self.bias.get(choice, 0.0))
            if best is None or value > best_score:
                best, best_score = choice, value
        assert best is not None
        return best

    def outcome(self, scores: Mapping[str, float]) -> dict[Flag, bool]:
        """Flag values set by the winning choice."""
        return dict(self.outcomes[self.pick(scores)])


class PromptLibrary:
    """Loads prompt files, shipped ones first replaced by same-named files in ``override_dir``."""

    def __init__(self, override_dir: Path | str | None = None):
        self.override_dir = Path(override_dir).expanduser() if override_dir else None
        if self.override_dir is not None and not self.override_dir.is_dir():
            raise PromptFormatError(str(self.override_dir), "prompt folder does not exist")
        self._texts: dict[str, str] = {}
        self._decisions: dict[str, DecisionPrompt] = {}

    # -- loading ---------------------------------------------------------------------------
    def _read(self, stem: str) -> tuple[str, str]:
        filename = stem + _SUFFIX
        if self.override_dir is not None:
            candidate = self.override_dir / filename
            if candidate.is_file():
                return _read_text(candidate, str(candidate)), str(candidate)
        shipped = resources.files("mimir").joinpath("prompts", filename)
        if not shipped.is_file():
            raise PromptFormatError(f"mimir/prompts/{filename}", "missing from the installed package")
        return _read_text(shipped, f"mimir/prompts/{filename}"), f"mimir/prompts/{filename}"

    def source(self, name: str) -> str:
        """Where segment or decision ``name`` is read from (override file or shipped file)."""
        if name in SEGMENTS:
            return self._read(name)[1]
        if name in DECISIONS:
            return self._read("decision_" + name)[1]
        raise UnknownPromptError(name, SEGMENTS + DECISIONS, what="prompt")

    def segment(self, name: str) -> str:
        if name not in SEGMENTS:
            raise UnknownPromptError(name, SEGMENTS)
        if name not in self._texts:
            text, src = self._read(name)
            text = text.strip()
            if not text:
                raise PromptFormatError(src, "is empty")
            self._texts[name] = text
        return self._texts[name]

    def for_flag(self, flag: Flag | str) -> str:
        try:
            parsed = Flag.parse(flag)
        except ValueError:
            raise UnknownPromptError(str(flag), (f.value for f in Flag), what="prompt-state flag") from None
        return self.segment(_FLAG_SEGMENT[parsed])

    def decision(self, name: str) -> DecisionPrompt:
        if name not in DECISIONS:
            raise UnknownPromptError(name, DECISIONS, what="decision prompt")
        if name not in self._decisions:
            text, src = self._read("decision_" + name)
            self._decisions[name] = parse_decision(
                name,
                text,
                source=src,
                system=self.segment("decision_system"),
                context_template=self.segment("decision_context"),
            )
        return self._decisions[name]

    def system_prompt(self, flags: Iterable[Flag | str]) -> str:
        """Core identity, then the segment of every active non-thinking flag, in
        :data:`SYSTEM_SEGMENTS` order."""
        active = {Flag.parse(f) for f in flags} - THINKING_FLAGS
        wanted = {_FLAG_SEGMENT[f] for f in active}
        parts = [self.segment(name) for name in SYSTEM_SEGMENTS if name == "core_identity" or name in wanted]
        return "\n\n".join(parts)

    def unknown_overrides(self) -> list[str]:
        """Files in the override folder that replace nothing (probably misspelt)."""
        if self.override_dir is None:
            return []
        known = {n + _SUFFIX for n in SEGMENTS} | {f"decision_{n}{_SUFFIX}" for n in DECISIONS}
        return sorted(p.name for p in self.override_dir.iterdir() if p.is_file() and p.name not in known)


def _read_text(resource: Any, label: str) -> str:
    try:
        return resource.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFormatError(label, f"cannot be read: {exc}") from None


def parse_decision(
    name: str,
    text: str,
    *,
    source: str = "",
    system: str = "",
    context_template: str = "{history}\n\n{message}",
) -> DecisionPrompt:
    """Parse a decision file: TOML front matter between ``+++`` lines, then the question."""
    src = source or f"decision_{name}{_SUFFIX}"
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != _FENCE:
        raise PromptFormatError(src, "must start with a '+++' line opening its TOML front matter")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == _FENCE)
    except StopIteration:
        raise PromptFormatError(src, "front matter is not closed by a '+++' line") from None
    try:
        meta = tomllib.loads("\n".join(lines[1:end]))
    except tomllib.TOMLDecodeError as exc:
        raise PromptFormatError(src, f"front matter is not valid TOML: {exc}") from None
    question = "\n".join(lines[end + 1 :]).strip()
    if not question:
        raise PromptFormatError(src, "has no question after the front matter")

    choices = meta.get("choices")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c for c in choices)
        or len(set(choices)) != len(choices)
    ):
        raise PromptFormatError(src, "'choices' must list at least two different non-empty strings")
    raw_outcomes = meta.get("outcomes")
    if not isinstance(raw_outcomes, dict) or set(raw_outcomes) != set(choices):
        raise PromptFormatError(src, "'outcomes' must have exactly one entry per choice")
    outcomes: dict[str, dict[Flag, bool]] = {}
    for choice in choices:
        table = raw_outcomes[choice]
        if not isinstance(table, dict) or not table:
            raise PromptFormatError(src, f"outcome for '{choice}' must be a table of FLAG = true/false")
        values: dict[Flag, bool] = {}
        for key, value in table.items():
            try:
                flag = Flag.parse(key)
            except ValueError as exc:
                raise PromptFormatError(src, str(exc)) from None
            if not isinstance(value, bool):
                raise PromptFormatError(src, f"outcome '{choice}': {key} must be true or false")
            values[flag] = value
        outcomes[choice] = values
    flag_sets = {frozenset(v) for v in outcomes.values()}
    if len(flag_sets) != 1:
        raise PromptFormatError(src, "every outcome must set the same flags")
    raw_bias = meta.get("bias", {})
    if not isinstance(raw_bias, dict) or not set(raw_bias) <= set(choices):
        raise PromptFormatError(src, "'bias' must be a table of choice = number, for listed choices only")
    bias: dict[str, float] = {}
    for choice, value in raw_bias.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PromptFormatError(src, f"bias for '{choice}' must be a finite number")
        bias[choice] = float(value)
    unknown = set(meta) - {"choices", "outcomes", "bias"}
    if unknown:
        raise PromptFormatError(src, f"unknown front-matter key '{sorted(unknown)[0]}'; valid: bias, choices, outcomes")
    return DecisionPrompt(
        name=name,
        question=question,
        choices=tuple(choices),
        outcomes=outcomes,
        bias=bias,
        system=system,
        context_template=context_template,
        source=src,
    )
