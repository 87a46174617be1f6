"""What the math worker runs: one call per turn (``analyze``) and one per checked text
(``claims``). Inputs and outputs are plain JSON-able dicts, so they cross the process
boundary cheaply and an answer key can be stored with a turn as JSON.
"""

from __future__ import annotations

import re

from mimir.mathcheck.answers import check_answer
from mimir.mathcheck.claims import check_claims
from mimir.mathcheck.practice import make_practice, skill_in
from mimir.mathcheck.problems import Key, find_problem, solve

_HINT = re.compile(r"\b(?:hints?|clue|nudge|help\s+me\s+start|where\s+do\s+i\s+start|i'?m\s+stuck|next\s+step)\b", re.I)
_NEW_TASK = re.compile(
    r"\b(?:solve|find|what\s+is|what's|calculate|compute|evaluate|simplify|expand|factor|differentiate|derivative"
    r"|integrate|integral|limit|explain|how|why|practice|question|another)\b",
    re.I,
)


def _looks_like_answer(message: str) -> bool:
    words = message.split()
    return 0 < len(words) <= 30 and not _NEW_TASK.search(message)


def analyze(request: dict) -> dict:
    """The math step of one turn.

    ``request``: ``message``; ``question`` (the tutor's last message, or ``None``);
    ``pending`` (a stored practice question: ``{"question", "key", "hints_given"}``, or
    ``None``); ``wants_practice``; ``guiding``; ``seed``.
    """
    message = str(request.get("message", ""))[:8000]
    pending = request.get("pending")
    out: dict = {"verdict": None, "key": None, "practice": None, "hint": None, "skill": None, "source": None}
    key: Key | None = None
    source = None
    if pending and pending.get("key"):
        key, source = Key.from_dict(pending["key"]), "practice"
        out["hints_given"] = int(pending.get("hints_given", 0))
        out["question"] = pending.get("question", key.statement)
    elif request.get("question"):
        problem = find_problem(str(request["question"]))
        if problem is not None:
            key, source = solve(problem), "history"
            out["hints_given"] = 0
            out["question"] = key.statement if key else None
    own = find_problem(message)
    if key is not None and _HINT.search(message):
        given = int(out.get("hints_given", 0))
        hints = key.hints or ["Start from what the question gives you and write down the first step."]
        out["hint"] = hints[min(given, len(hints) - 1)]
        out["hints_given"] = given + 1
        out["verdict"] = {"verdict": "unknown", "detail": "a hint request, not an answer", "wrong": []}
    elif key is not None and (own is None or _looks_like_answer(message)) and not request.get("wants_practice"):
        out["verdict"] = check_answer(key, message).as_dict()
    if key is not None and out["verdict"] is not None:
        out["key"], out["source"] = key.as_dict(), source
    if out["verdict"] is None and own is not None:
        solved = solve(own)
        if solved is not None:
            out["key"], out["source"] = solved.as_dict(), "message"
            key = solved
    if request.get("wants_practice"):
        skill = skill_in(message) or (key.skill if key is not None else None)
        question, practice_key = make_practice(skill, request.get("seed"))
        out["practice"] = {"question": question, "key": practice_key.as_dict(), "hints_given": 0}
        out["skill"] = practice_key.skill
    elif key is not None:
        out["skill"] = key.skill
    return out


def claims(request: dict) -> dict:
    """Check the equalities of ``text``; see :func:`mimir.mathcheck.claims.check_claims`."""
    report = check_claims(str(request.get("text", "")), request.get("solutions"), request.get("hide"),
                          identity_of(request.get("key")))
    return report.as_dict()


def identity_of(key: dict | None) -> str | None:
    """For a simplify/expand/factor key: the expression every rewriting must stay equal to."""
    if key and key.get("kind") == "value" and key.get("skill") in ("simplify", "expand", "factor"):
        return str(key.get("value") or "") or None
    return None


def audit(request: dict) -> dict:
    """Count the false equalities of ``text`` (a tutor's answer), judging steps with
    variables against the solution of the problem in ``message`` (or else ``question``)."""
    problem = find_problem(str(request.get("message", ""))) or (
        find_problem(str(request["question"])) if request.get("question") else None
    )
    key = solve(problem) if problem is not None else None
    solutions = key.solutions if key is not None and key.kind == "solutions" else []
    report = check_claims(str(request.get("text", "")), solutions, identity=identity_of(key.as_dict() if key else None))
    return {"false": report.false, "checked": report.checked, "corrections": report.corrections}


def verdict(request: dict) -> dict:
    """Check ``reply`` against the problem in ``question`` (used by tests and the eval)."""
    problem = find_problem(str(request.get("question", "")))
    key = solve(problem) if problem else None
    if key is None:
        return {"verdict": "unknown", "detail": "no problem recognised in the question", "wrong": []}
    return check_answer(key, str(request.get("reply", ""))).as_dict()


WARM_UP = (
    ("Solve 3x - y = 7 and 2x + 3y = 1", "x = 2, y = -1"),
    ("Solve x^2 - 5x + 6 = 0", "x = 2 or x = 3"),
    ("Integrate 3x^2 from 0 to 2", "8"),
    ("Find the limit of (x^2-1)/(x-1) as x approaches 1", "2"),
    ("What is the derivative of x sin x?", "sin x + x cos x"),
    ("Factor x^2 + 5x + 6", "(x+2)(x+3)"),
)


def warm_up() -> None:
    """Solve and check one problem of each kind, so sympy's lazy imports and caches are
    filled before the first real request (which has a time limit)."""
    for question, reply in WARM_UP:
        verdict({"question": question, "reply": reply})
    claims({"text": "So (82+91)/2 = 82 and 3x = 7.", "solutions": [{"x": "2"}]})


def ping(request: dict) -> dict:
    return {"ok": True}


def evaluate_expression(request: dict) -> dict:
    """Parse and evaluate an expression (for tests of the limits: ``9**9**9**9``)."""
    from mimir.mathcheck.parse import format_value, parse_math

    return {"value": format_value(parse_math(str(request.get("text", ""))))}


FUNCTIONS = {
    "analyze": analyze,
    "claims": claims,
    "audit": audit,
    "verdict": verdict,
    "ping": ping,
    "evaluate": evaluate_expression,
}
