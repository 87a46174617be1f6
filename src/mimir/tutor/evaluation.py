"""Labelled evaluation of the flag decisions: load cases, score predictions, print a table.

A cases file is JSON Lines, one case per line::

    {"message": "...", "history": [{"role": "user"|"assistant", "content": "..."}],
     "expect": {"VAGUE_INPUT": true, "LATEX_FORMATTING": false}}

Only the flags listed in ``expect`` are checked. Blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from mimir.errors import EvalCaseError
from mimir.models.base import ChatMessage
from mimir.tutor.state import Flag, PromptState

T = TypeVar("T")

Predicted = Collection[Flag | str] | PromptState


@dataclass(frozen=True)
class EvalCase:
    message: str
    history: tuple[ChatMessage, ...]
    expect: Mapping[Flag, bool]
    #: Line number in the cases file (1-based), for reports.
    line: int = 0


@dataclass(frozen=True)
class FlagScore:
    flag: Flag
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int

    @property
    def support(self) -> int:
        """Cases that check this flag."""
        return self.true_pos + self.false_pos + self.false_neg + self.true_neg

    @property
    def positives(self) -> int:
        """Checked cases that expect the flag on."""
        return self.true_pos + self.false_neg

    @property
    def precision(self) -> float | None:
        predicted = self.true_pos + self.false_pos
        return self.true_pos / predicted if predicted else None

    @property
    def recall(self) -> float | None:
        return self.true_pos / self.positives if self.positives else None

    @property
    def accuracy(self) -> float | None:
        return (self.true_pos + self.true_neg) / self.support if self.support else None


@dataclass(frozen=True)
class Mismatch:
    case_index: int
    line: int
    message: str
    flag: Flag
    expected: bool
    predicted: bool


@dataclass(frozen=True)
class EvalReport:
    cases: int
    checked: int
    correct: int
    per_flag: tuple[FlagScore, ...]
    mismatches: tuple[Mismatch, ...]

    @property
    def accuracy(self) -> float:
        """Share of checked flag decisions that were right (1.0 when nothing was checked)."""
        return self.correct / self.checked if self.checked else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "checked": self.checked,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "flags": {
                s.flag.value: {
                    "precision": s.precision,
                    "recall": s.recall,
                    "support": s.support,
                    "positives": s.positives,
                    "true_pos": s.true_pos,
                    "false_pos": s.false_pos,
                    "false_neg": s.false_neg,
                    "true_neg": s.true_neg,
                }
                for s in self.per_flag
            },
            "mismatches": [
                {
                    "case": m.case_index,
                    "line": m.line,
                    "message": m.message,
                    "flag": m.flag.value,
                    "expected": m.expected,
                    "predicted": m.predicted,
                }
                for m in self.mismatches
            ],
        }


def bundled_cases_path() -> Path:
    """The labelled cases shipped with the package (``mimir/data/eval_cases.jsonl``)."""
    return Path(str(resources.files("mimir").joinpath("data", "eval_cases.jsonl")))


def read_cases(path: Path | str, parse: Callable[[str, str, int], T]) -> list[T]:
    """Every non-blank line of a JSONL case file through ``parse(raw, path, line_number)``;
    an unreadable or empty file is an :class:`EvalCaseError`. Shared by both case formats."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalCaseError(str(path), 0, f"cannot read: {exc}") from None
    cases = [parse(raw, str(path), number) for number, raw in enumerate(lines, start=1) if raw.strip()]
    if not cases:
        raise EvalCaseError(str(path), 0, "holds no cases")
    return cases


def load_cases(path: Path | str) -> list[EvalCase]:
    return read_cases(path, parse_case)


def parse_case(raw: str, path: str = "<cases>", line: int = 0) -> EvalCase:
    def bad(problem: str) -> EvalCaseError:
        return EvalCaseError(path, line, problem)

    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise bad("a case must be a JSON object")
    unknown = set(data) - {"message", "history", "expect"}
    if unknown:
        raise bad(f"unknown key '{sorted(unknown)[0]}'; valid keys: expect, history, message")
    message = data.get("message")
    if not isinstance(message, str) or not message.strip():
        raise bad("'message' must be a non-empty string")
    history_raw = data.get("history", [])
    if not isinstance(history_raw, list):
        raise bad("'history' must be a list of {role, content} objects")
    history: list[ChatMessage] = []
    for i, item in enumerate(history_raw):
        if (
            not isinstance(item, dict)
            or item.get("role") not in ("user", "assistant")
            or not isinstance(item.get("content"), str)
        ):
            raise bad(f"history[{i}] must be {{\"role\": \"user\"|\"assistant\", \"content\": str}}")
        history.append(ChatMessage(item["role"], item["content"]))
    expect_raw = data.get("expect")
    if not isinstance(expect_raw, dict) or not expect_raw:
        raise bad("'expect' must be a non-empty object of FLAG: true/false")
    expect: dict[Flag, bool] = {}
    for key, value in expect_raw.items():
        try:
            flag = Flag.parse(key)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if not isinstance(value, bool):
            raise bad(f"expect.{key} must be true or false")
        expect[flag] = value
    return EvalCase(message=message, history=tuple(history), expect=expect, line=line)


def _as_flags(predicted: Predicted) -> frozenset[Flag]:
    if isinstance(predicted, PromptState):
        return predicted.flags()
    return frozenset(Flag.parse(f) for f in predicted)


def score(cases: Sequence[EvalCase], predicted_flags_list: Sequence[Predicted]) -> EvalReport:
    """Compare each case's expected flags with the flags predicted for it (the active ones)."""
    if len(cases) != len(predicted_flags_list):
        raise ValueError(f"{len(cases)} cases but {len(predicted_flags_list)} predictions")
    counts = {flag: [0, 0, 0, 0] for flag in Flag}  # tp, fp, fn, tn
    mismatches: list[Mismatch] = []
    checked = correct = 0
    for index, (case, predicted) in enumerate(zip(cases, predicted_flags_list)):
        active = _as_flags(predicted)
        for flag, expected in case.expect.items():
            got = flag in active
            checked += 1
            slot = (0 if got else 2) if expected else (1 if got else 3)
            counts[flag][slot] += 1
            if got == expected:
                correct += 1
            else:
                mismatches.append(Mismatch(index, case.line, case.message, flag, expected, got))
    per_flag = tuple(FlagScore(flag, *counts[flag]) for flag in Flag if sum(counts[flag]))
    return EvalReport(
        cases=len(cases), checked=checked, correct=correct, per_flag=per_flag, mismatches=tuple(mismatches)
    )


def evaluate(cases: Sequence[EvalCase], predict: Callable[[str, Sequence[ChatMessage]], Predicted]) -> EvalReport:
    """Run ``predict(message, history)`` on every case and score it."""
    return score(cases, [predict(case.message, case.history) for case in cases])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def format_report(report: EvalReport, *, max_mismatches: int = 50) -> str:
    """A plain-text table: per-flag precision/recall, overall accuracy, then the mismatches."""
    width = max((len(s.flag.value) for s in report.per_flag), default=4)
    header = f"{'flag':<{width}}  {'precision':>9}  {'recall':>7}  {'accuracy':>8}  {'positives':>9}  {'checked':>7}"
    lines = [header, "-" * len(header)]
    for s in report.per_flag:
        lines.append(
            f"{s.flag.value:<{width}}  {_pct(s.precision):>9}  {_pct(s.recall):>7}  {_pct(s.accuracy):>8}"
            f"  {s.positives:>9}  {s.support:>7}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"overall accuracy: {_pct(report.accuracy)} ({report.correct}/{report.checked} flag decisions"
        f" over {report.cases} cases)"
    )
    if report.mismatches:
        lines.append("")
        lines.append(f"mismatches ({len(report.mismatches)}):")
        for m in report.mismatches[:max_mismatches]:
            msg = " ".join(m.message.split())
            if len(msg) > 70:
                msg = msg[:67] + "..."
            want = "on" if m.expected else "off"
            got = "on" if m.predicted else "off"
            lines.append(f"  line {m.line}: {m.flag.value} expected {want}, got {got}: {msg!r}")
        if len(report.mismatches) > max_mismatches:
            lines.append(f"  ... and {len(report.mismatches) - max_mismatches} more")
    return "\n".join(lines)


def active_names(flags: Iterable[Flag]) -> list[str]:
    return sorted(Flag.parse(f).value for f in flags)
