"""Finding math inside prose, without sympy: the stretch of text left and right of an ``=``.

A math span is a run of numbers, operators, parentheses, single-letter variables, known
function names and LaTeX commands; any other word, a comma, a colon or sentence punctuation
ends it. One regex token pass per call (linear in the text, no nested quantifiers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FUNCTION_NAMES = frozenset(
    "sin cos tan sec csc cot asin acos atan arcsin arccos arctan sinh cosh tanh sqrt exp ln log abs pi oo"
    .split()
)
_TOKEN = re.compile(
    r"(?P<num>\d+(?:\.\d+)?)|(?P<cmd>\\[A-Za-z]+|\\[,;!: ])|(?P<word>[A-Za-z]+)"
    r"|(?P<op>[+\-*/^()\u2212\u00d7\u00f7\u00b7\u22c5{}\u221a\u03c0\u00b2\u00b3%!_|])|(?P<space>[ \t]+)|(?P<other>.)",
    re.S,
)
#: Words that never begin or continue a math span even though they are single letters.
_ARTICLES = frozenset({"a", "A", "I"})


@dataclass(frozen=True)
class Claim:
    """``left = right`` as written, with where the two sides sit in the text."""

    left: str
    right: str
    left_start: int
    right_start: int
    right_end: int


def _is_math(kind: str, text: str) -> bool:
    if kind in ("num", "op", "space"):
        return True
    if kind == "cmd":
        return True
    if kind == "word":
        return text.lower() in FUNCTION_NAMES or (len(text) == 1 and text not in _ARTICLES)
    return False


def _runs(text: str) -> list[tuple[int, int]]:
    """Maximal runs of math tokens as (start, end), spaces trimmed. A lone ``a``/``A``/``I``
    is math only next to a number, an operator or an ``=`` (``2a + b``), not as a word."""
    tokens = [(m.lastgroup or "other", m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    solid = [i for i, t in enumerate(tokens) if t[0] != "space"]
    position = {i: n for n, i in enumerate(solid)}

    def neighbour_is_math(i: int) -> bool:
        n = position[i]
        for j in (n - 1, n + 1):
            if 0 <= j < len(solid):
                kind, word = tokens[solid[j]][0], tokens[solid[j]][1]
                if kind in ("num", "op") or (kind == "other" and word == "="):
                    return True
        return False

    runs: list[tuple[int, int]] = []
    start = None
    end = 0
    for i, (kind, word, s0, e0) in enumerate(tokens):
        math = _is_math(kind, word) or (kind == "word" and word in _ARTICLES and neighbour_is_math(i))
        if math:
            if start is None:
                if kind == "space":
                    continue
                start = s0
            if kind != "space":
                end = e0
        else:
            if start is not None:
                runs.append((start, end))
            start = None
    if start is not None:
        runs.append((start, end))
    return runs


def _meaningful(span: str) -> bool:
    core = span.strip(" +-*/^")
    return bool(core) and any(c.isdigit() or c.isalpha() for c in core)


def equalities(text: str, *, max_chars: int = 20_000) -> list[Claim]:
    """Every ``left = right`` in ``text`` whose two sides are math spans. ``a = b = c``
    gives two claims. ``==``, ``<=``, ``>=``, ``!=`` are not equalities."""
    text = text[:max_chars]
    claims: list[Claim] = []
    positions = [m.start() for m in re.finditer(r"(?<![=<>!])=(?!=)", text)]
    for index, pos in enumerate(positions):
        left_from = positions[index - 1] + 1 if index else max(0, text.rfind("\n", 0, pos) + 1)
        right_to = positions[index + 1] if index + 1 < len(positions) else len(text)
        newline = text.find("\n", pos)
        if 0 <= newline < right_to:
            right_to = newline
        before = text[left_from:pos]
        after = text[pos + 1 : right_to]
        # The "=" stays in view so a lone "a" next to it reads as a variable.
        left_runs = [r for r in _runs(before + "=") if r[1] >= len(before.rstrip()) and r[1] <= len(before)]
        right_runs = [(a - 1, b - 1) for a, b in _runs("=" + after)]
        right_runs = [r for r in right_runs if r[0] <= len(after) - len(after.lstrip())]
        if not left_runs or not right_runs:
            continue
        ls, le = left_runs[-1]
        rs, re_ = right_runs[0]
        left = before[ls:le]
        right = after[rs:re_]
        if _meaningful(left) and _meaningful(right):
            claims.append(Claim(left, right, left_from + ls, pos + 1 + rs, pos + 1 + re_))
    return claims


def leading_math(text: str) -> str:
    """The math span at the start of ``text`` (after spaces), or ``""``."""
    runs = _runs(text)
    if runs and not text[: runs[0][0]].strip():
        return text[runs[0][0] : runs[0][1]]
    return ""


def math_runs(text: str) -> list[str]:
    """Every math span in ``text`` that holds a digit or a variable."""
    return [text[s:e] for s, e in _runs(text) if _meaningful(text[s:e])]
