"""The quality evaluation (``mimir eval --quality CASES.jsonl``): is the tutor's math right,
and can it tell a right answer from a wrong one?

One case per line (blank lines skipped)::

    {"kind": "verdict", "history": [{"role": "assistant", "content": "Solve 2x + 3 = 11."}],
     "message": "x = 4", "expect": {"verdict": "correct"}}
    {"kind": "response", "history": [], "message": "Can you help me solve 4x - 7 = 13?",
     "expect": {"no_leak": ["x = 5"]}}

A verdict case runs the decision and math steps only; a response case runs a full turn and
is checked for leaked answers (``no_leak``, compared without whitespace), false equalities
and repeated sentences. Metrics: verdict accuracy (``unknown`` is not right), confidently
wrong verdicts, leak rate, responses with a false equality, responses with a repeated
sentence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimir.errors import EvalCaseError
from mimir.models.base import ChatMessage
from mimir.tutor.evaluation import read_cases
from mimir.tutor.postprocess import repeated_sentences

KINDS = ("verdict", "response")
VERDICTS = ("correct", "incorrect", "unknown")


@dataclass(frozen=True)
class QualityCase:
    kind: str
    message: str
    history: tuple[ChatMessage, ...]
    expect: dict[str, Any]
    line: int = 0


@dataclass
class QualityReport:
    cases: list[dict[str, Any]]
    metrics: dict[str, Any]
    #: Cases whose result differs from ``expect``: (index, line, what).
    misses: list[tuple[int, int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "metrics": self.metrics}


def load_quality_cases(path: Path | str) -> list[QualityCase]:
    return read_cases(path, parse_quality_case)


def parse_quality_case(raw: str, path: str = "<cases>", line: int = 0) -> QualityCase:
    def bad(problem: str) -> EvalCaseError:
        return EvalCaseError(path, line, problem)

    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise bad("a case must be a JSON object")
    unknown = set(data) - {"kind", "message", "history", "expect"}
    if unknown:
        raise bad(f"unknown key '{sorted(unknown)[0]}'; valid keys: expect, history, kind, message")
    kind = data.get("kind")
    if kind not in KINDS:
        raise bad("'kind' must be \"verdict\" or \"response\"")
    message = data.get("message")
    if not isinstance(message, str) or not message.strip():
        raise bad("'message' must be a non-empty string")
    history_raw = data.get("history", [])
    if not isinstance(history_raw, list):
        raise bad("'history' must be a list of {role, content} objects")
    history: list[ChatMessage] = []
    for i, item in enumerate(history_raw):
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant") or not isinstance(item.get("content"), str):
            raise bad(f"history[{i}] must be {{\"role\": \"user\"|\"assistant\", \"content\": str}}")
        history.append(ChatMessage(item["role"], item["content"]))
    expect = data.get("expect", {})
    if not isinstance(expect, dict):
        raise bad("'expect' must be an object")
    if kind == "verdict":
        if expect.get("verdict") not in VERDICTS:
            raise bad("a verdict case needs expect.verdict: \"correct\", \"incorrect\" or \"unknown\"")
    else:
        no_leak = expect.get("no_leak", [])
        if not isinstance(no_leak, list) or not all(isinstance(s, str) and s.strip() for s in no_leak):
            raise bad("expect.no_leak must be a list of non-empty strings")
        if set(expect) - {"no_leak"}:
            raise bad("a response case knows only expect.no_leak")
    return QualityCase(kind, message, tuple(history), dict(expect), line)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def leaked(response: str, answers: Sequence[str]) -> bool:
    """Whether an answer string appears in the response, ignoring whitespace and case
    (``x = 5`` is found in ``$x=5$`` but not in ``x = 50``)."""
    text = _squash(response)
    for answer in answers:
        needle = _squash(answer)
        if needle and re.search(re.escape(needle) + r"(?![0-9]|\.[0-9])", text):
            return True
    return False


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def run_quality(
    cases: Sequence[QualityCase],
    *,
    verdict: Callable[[QualityCase], str],
    respond: Callable[[QualityCase], str],
    false_equalities: Callable[[QualityCase, str], int],
    progress: Callable[[int], None] = lambda index: None,
) -> QualityReport:
    """Run every case: ``verdict`` for verdict cases (decision + math steps), ``respond`` for
    response cases (a full turn), ``false_equalities`` to count false claims in a response."""
    results: list[dict[str, Any]] = []
    misses: list[tuple[int, int, str]] = []
    right = confidently_wrong = unknown = 0
    n_verdict = n_response = n_leaked = n_false = n_repeated = 0
    for index, case in enumerate(cases):
        if case.kind == "verdict":
            n_verdict += 1
            got = verdict(case)
            results.append({"case": index, "kind": "verdict", "verdict": got})
            want = case.expect["verdict"]
            if got == want:
                right += 1
            else:
                misses.append((index, case.line, f"verdict {got}, expected {want}: {case.message[:60]!r}"))
                if got == "unknown":
                    unknown += 1
                else:
                    confidently_wrong += 1
        else:
            n_response += 1
            response = respond(case)
            leak = leaked(response, case.expect.get("no_leak", []))
            false_count = false_equalities(case, response)
            repeats = repeated_sentences(response)
            n_leaked += leak
            n_false += false_count > 0
            n_repeated += repeats > 0
            results.append({"case": index, "kind": "response", "response": response, "leaked": leak,
                            "false_statements": false_count, "repeated_sentences": repeats})
            for bad, what in ((leak, "leaked the answer"), (false_count, f"{false_count} false equalities"),
                              (repeats, f"{repeats} repeated sentences")):
                if bad:
                    misses.append((index, case.line, f"{what}: {case.message[:60]!r}"))
        progress(index)
    metrics = {
        "verdict_cases": n_verdict,
        "verdict_accuracy": _rate(right, n_verdict),
        "confidently_wrong": confidently_wrong,
        "confidently_wrong_rate": _rate(confidently_wrong, n_verdict),
        "unknown_when_answer_known": unknown,
        "response_cases": n_response,
        "leak_rate": _rate(n_leaked, n_response),
        "responses_with_false_equality": n_false,
        "false_equality_rate": _rate(n_false, n_response),
        "responses_with_repeated_sentence": n_repeated,
        "repeated_sentence_rate": _rate(n_repeated, n_response),
    }
    return QualityReport(results, metrics, misses)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def format_quality(report: QualityReport, *, max_misses: int = 40) -> str:
    m = report.metrics
    rows = [
        ("verdict accuracy", _pct(m["verdict_accuracy"]), f"{m['verdict_cases']} verdict cases"),
        ("confidently wrong verdicts", _pct(m["confidently_wrong_rate"]), f"{m['confidently_wrong']} cases"),
        ("leak rate", _pct(m["leak_rate"]), f"{m['response_cases']} response cases"),
        ("responses with a false equality", _pct(m["false_equality_rate"]), f"{m['responses_with_false_equality']} responses"),
        ("responses with a repeated sentence", _pct(m["repeated_sentence_rate"]), f"{m['responses_with_repeated_sentence']} responses"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  {'value':>7}  count", "-" * (width + 24)]
    lines += [f"{name:<{width}}  {value:>7}  {count}" for name, value, count in rows]
    if report.misses:
        lines.append("")
        lines.append(f"misses ({len(report.misses)}):")
        for index, line, what in report.misses[:max_misses]:
            lines.append(f"  case {index} (line {line}): {what}")
        if len(report.misses) > max_misses:
            lines.append(f"  ... and {len(report.misses) - max_misses} more")
    return "\n".join(lines)
