"""Checking the equalities a reply states, and correcting the false ones in the text.

Two kinds of claims are checked:

- **arithmetic**: both sides without variables (``82 + 91 = 173``, ``(82+91)/2 = 82``,
  ``\\frac{3}{4} = 0.75``), and the prose forms "the average of 82 and 91 is 82", "15% of 80
  is 12", "7 times 8 is 54". A false one gets the right value in place of the wrong one;
  a decimal that rounds the exact value (``1/3 = 0.33``) is true.
- **steps of a solved problem**: with the turn's verified solution (``x = 2, y = -1``), an
  equation in those variables must hold at a solution (``3x = 7`` does not: it is struck
  through). Without a solution, equations with variables are not judged (they may be the
  question itself).

With ``hide`` (guided teaching), a claim that states the final answer (``x = 5``) becomes
``x = ?`` so the student still has something to find.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy

from mimir.mathcheck.parse import MathParseError, format_value, parse_math
from mimir.mathcheck.spans import equalities

MAX_CLAIM_TEXT_CHARS = 20_000
_STRUCK = re.compile(r"~~[^~\n]{0,400}~~")
_NUM = r"-?\d+(?:\.\d+)?"
#: A prose claim's value must be a whole number, not the start of an expression ("is 82 + 91 = ...").
_END_VALUE = r"(?!\d|\.\d|\s*[-+*/^=(\u00d7\u00f7]|\s+(?:x|times|multiplied\s+by)\s+\(?\d)"
#: "30 x 120": a spaced x between two numbers is a times sign when x is not the problem's unknown.
_SPACED_TIMES = re.compile(r"(?<=[\d)])\s+x\s+(?=\(?\d)")
_PROSE = [
    (re.compile(r"\b(?:the\s+)?(?:average|mean)\s+of\s+(?P<nums>" + _NUM + r"(?:\s*(?:,\s*and|,|and)\s*" + _NUM + r")+)\s+(?:is|equals|=|would\s+be)\s+(?P<rhs>" + _NUM + r")" + _END_VALUE, re.I), "average"),
    (re.compile(r"\b(?:the\s+)?sum\s+of\s+(?P<nums>" + _NUM + r"(?:\s*(?:,\s*and|,|and)\s*" + _NUM + r")+)\s+(?:is|equals|=)\s+(?P<rhs>" + _NUM + r")" + _END_VALUE, re.I), "sum"),
    (re.compile(r"(?P<a>" + _NUM + r")\s*(?:%|percent)\s+of\s+(?P<b>" + _NUM + r")\s+(?:is|equals|=)\s+(?P<rhs>" + _NUM + r")" + _END_VALUE, re.I), "percent"),
    (re.compile(r"(?P<a>" + _NUM + r")\s+(?P<op>plus|minus|times|multiplied\s+by|divided\s+by)\s+(?P<b>" + _NUM + r")\s+(?:is|equals|=|makes)\s+(?P<rhs>" + _NUM + r")" + _END_VALUE, re.I), "words"),
]
_DENIED = re.compile(r"[\s*_]*(?:is\s+not|isn'?t|is\s+wrong|is\s+false|does\s*n[o']?t\s+(?:hold|work))\b", re.I)
_OPS = {"plus": "+", "minus": "-", "times": "*", "multiplied by": "*", "divided by": "/"}


@dataclass
class ClaimReport:
    text: str
    checked: int = 0
    false: int = 0
    corrections: list[str] = field(default_factory=list)
    hidden: int = 0

    def as_dict(self) -> dict:
        return {"text": self.text, "checked": self.checked, "false": self.false,
                "corrections": self.corrections, "hidden": self.hidden}


def _balanced(span: str) -> str:
    span = span.strip()
    while span.count("(") > span.count(")") and span.startswith("("):
        span = span[1:].strip()
    while span.count(")") > span.count("(") and span.endswith(")"):
        span = span[:-1].strip()
    return span.strip(" ")


def _decimals(text: str) -> int:
    m = re.fullmatch(r"\s*-?\d*\.(\d+)\s*", text)
    return len(m.group(1)) if m else 0


def _numbers_equal(left, right, right_text: str) -> bool:
    gap = abs(complex(sympy.N(left - right, 30)))
    places = _decimals(right_text)
    if places >= 1 and gap <= 0.5 * 10 ** (-places) + 1e-12:
        return True
    return gap < 1e-12


def _mask_struck(text: str) -> str:
    return _STRUCK.sub(lambda m: " " * len(m.group(0)), text)


def check_claims(text: str, solutions: list[dict[str, str]] | None = None, hide: list[dict[str, str]] | None = None,
                 identity: str | None = None) -> ClaimReport:
    """Check and correct the equalities in ``text``. ``solutions``: the turn's verified
    solutions (variables -> values); ``hide``: final answers to mask; ``identity``: the
    expression of a simplify/expand/factor problem, so ``x^2 + 7x + 12 = (x + 4)(x + 9)``
    (one side equal to it, the other not) is a false step."""
    text = text[:MAX_CLAIM_TEXT_CHARS]
    report = ClaimReport(text)
    edits: list[tuple[int, int, str]] = []
    sols = [{sympy.Symbol(k): parse_math(v) for k, v in sol.items()} for sol in (solutions or [])]
    hidden = [{k: parse_math(v) for k, v in sol.items()} for sol in (hide or [])]
    ident = parse_math(identity) if identity else None
    x_is_unknown = any("x" in sol for sol in (solutions or [])) or (ident is not None and sympy.Symbol("x") in ident.free_symbols)
    masked = _mask_struck(text)
    for claim in equalities(masked):
        if _DENIED.match(masked, claim.right_end):
            continue  # "x = 2 is not a solution" says the equality is false: that is true
        left, right = _balanced(claim.left), _balanced(claim.right)
        try:
            if not x_is_unknown:
                left_read, right_read = _SPACED_TIMES.sub(" * ", left), _SPACED_TIMES.sub(" * ", right)
            else:
                left_read, right_read = left, right
            lv, rv = parse_math(left_read), parse_math(right_read)
        except MathParseError:
            continue
        except (TypeError, ValueError, RecursionError, OverflowError):
            continue
        if not lv.free_symbols and not rv.free_symbols:
            report.checked += 1
            try:
                same = _numbers_equal(lv, rv, right)
            except (TypeError, ValueError):
                continue
            if not same:
                report.false += 1
                good = format_value(sympy.nsimplify(lv))
                start = claim.right_start + claim.right.find(right)
                edits.append((start, start + len(right), good))
                report.corrections.append(f"{left} is {good}, not {right}")
            continue
        symbols = lv.free_symbols | rv.free_symbols
        if hidden and len(symbols) == 1 and lv.is_Symbol and not rv.free_symbols:
            name = lv.name
            if any(name in h and _is_zero(h[name] - rv) for h in hidden):
                start = claim.right_start + claim.right.find(right)
                edits.append((start, start + len(right), "?"))
                report.hidden += 1
                continue
        if sols and symbols <= set().union(*(set(s) for s in sols)):
            report.checked += 1
            holds = False
            for sol in sols:
                try:
                    if _is_zero((lv - rv).subs(sol)):
                        holds = True
                        break
                except (TypeError, ValueError):
                    holds = True
            if not holds:
                report.false += 1
                start = claim.left_start + claim.left.find(left)
                end = claim.right_start + claim.right.find(right) + len(right)
                edits.append((start, end, f"~~{text[start:end]}~~"))
                report.corrections.append(f"step: {left} = {right}")
            continue
        # Both sides in the variable: "x^2 + 7x + 12 = 0" is an equation to solve, not a rewriting.
        if ident is not None and lv.free_symbols and rv.free_symbols and symbols <= ident.free_symbols \
                and not _same_function(lv, rv):
            if _same_function(lv, ident) or _same_function(rv, ident):
                report.checked += 1
                report.false += 1
                start = claim.left_start + claim.left.find(left)
                end = claim.right_start + claim.right.find(right) + len(right)
                edits.append((start, end, f"~~{text[start:end]}~~"))
                report.corrections.append(f"step: {left} = {right}")
    for rx, kind in _PROSE:
        for m in rx.finditer(masked):
            rhs = m.group("rhs")
            if kind in ("average", "sum"):
                nums = [sympy.Rational(n) for n in re.findall(_NUM, m.group("nums"))]
                value = sum(nums) / (len(nums) if kind == "average" else 1)
                what = f"the {kind} of {', '.join(format_value(n) for n in nums)}"
            elif kind == "percent":
                value = sympy.Rational(m.group("a")) / 100 * sympy.Rational(m.group("b"))
                what = f"{m.group('a')}% of {m.group('b')}"
            else:
                op = _OPS[" ".join(m.group("op").lower().split())]
                a, b = sympy.Rational(m.group("a")), sympy.Rational(m.group("b"))
                if op == "/" and b == 0:
                    continue
                value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0}[op]
                what = f"{m.group('a')} {m.group('op')} {m.group('b')}"
            report.checked += 1
            if not _numbers_equal(value, sympy.Rational(rhs), rhs):
                report.false += 1
                good = format_value(value)
                edits.append((m.start("rhs"), m.end("rhs"), good))
                report.corrections.append(f"{what} is {good}, not {rhs}")
    report.text = _apply(text, edits)
    return report


def _same_function(a, b) -> bool:
    """Whether two expressions agree at a few rational points (a wrong identity differs at
    almost every point; agreeing at all of them is taken as equal)."""
    symbols = sorted((a - b).free_symbols, key=lambda s: s.name)
    for i, point in enumerate(((sympy.Rational(37, 11), sympy.Rational(-53, 7), sympy.Rational(71, 13)))):
        values = {s: point + j for j, s in enumerate(symbols)}
        try:
            gap = complex(sympy.N((a - b).subs(values), 20))
        except (TypeError, ValueError, ZeroDivisionError):
            return True  # cannot tell: never call it false
        if abs(gap) > 1e-9:
            return False
        if not symbols and i == 0:
            return True
    return True


def _is_zero(value) -> bool:
    """Exact zero for numbers (no simplify on the hot path); simplify only for leftovers."""
    if value == 0:
        return True
    if value.is_number:
        return abs(complex(sympy.N(value, 30))) < 1e-12
    return sympy.simplify(value) == 0


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    out = []
    last = 0
    for start, end, new in sorted(set(edits)):
        if start < last:
            continue
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)


def count_false(text: str) -> int:
    """How many arithmetic equalities in ``text`` are false (what the quality eval counts)."""
    return check_claims(text).false
