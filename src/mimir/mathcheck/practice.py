"""Practice questions from templates, with random coefficients chosen so the answers are clean.

Each template picks the answer first (small integers, simple fractions) and builds the
question around it, then :func:`mimir.mathcheck.problems.solve` makes the answer key and the
hint ladder from the question itself, so the key is sympy's, never the template's guess.
"""

from __future__ import annotations

import random
import re

from mimir.mathcheck.problems import SKILLS, Key, Problem, solve

_SKILL_WORDS = [
    ("system", r"\bsystems?\b|\bsimultaneous\b|\btwo\s+equations\b"),
    ("quadratic", r"\bquadratics?\b|\bsecond[- ]degree\b|\bx\^2\b|\broots?\b"),
    ("derivative", r"\bderivatives?\b|\bdifferentiat\w*|\bcalculus\b"),
    ("integral", r"\bintegra\w*|\bantiderivatives?\b"),
    ("limit", r"\blimits?\b"),
    ("factor", r"\bfactor\w*"),
    ("expand", r"\bexpand\w*|\bexpansion\b|\bbrackets\b"),
    ("simplify", r"\bsimplif\w*"),
    ("percentages", r"\bpercent\w*|%"),
    ("fractions", r"\bfractions?\b|\bdenominators?\b"),
    ("linear", r"\blinear\b|\bequations?\b|\balgebra\b|\bsolve\b"),
    ("arithmetic", r"\barithmetic\b|\baddition\b|\bsubtraction\b|\bmultiplication\b|\bdivision\b|\btimes\s+tables?\b"),
]


def skill_in(text: str) -> str | None:
    """The math skill a request names ("practice questions on quadratics" -> ``quadratic``)."""
    for skill, pattern in _SKILL_WORDS:
        if re.search(pattern, text, re.I):
            return skill
    return None


def _nz(rng: random.Random, lo: int, hi: int) -> int:
    while True:
        n = rng.randint(lo, hi)
        if n != 0:
            return n


def _signed(n: int, var: str = "") -> str:
    size = "" if var and abs(n) == 1 else str(abs(n))
    return f"+ {size}{var}" if n >= 0 else f"- {size}{var}"


def _coef(n: int, var: str) -> str:
    return var if n == 1 else f"-{var}" if n == -1 else f"{n}{var}"


def _template(skill: str, rng: random.Random) -> tuple[str, Problem]:
    if skill == "linear":
        x, a = rng.randint(-9, 12), rng.randint(2, 9)
        b = _nz(rng, -15, 15)
        eq = f"{a}x {_signed(b)} = {a * x + b}"
        return f"Solve {eq} for x.", Problem("linear", (eq,), var="x")
    if skill == "quadratic":
        r1, r2 = rng.sample([n for n in range(-7, 8) if n != 0], 2)
        b, c = -(r1 + r2), r1 * r2
        eq = f"x^2 {_signed(b, 'x')} {_signed(c)} = 0".replace("+ 0x ", "")
        return f"Solve {eq}. Give both solutions.", Problem("quadratic", (eq,), var="x")
    if skill == "system":
        x, y = rng.randint(-6, 6), rng.randint(-6, 6)
        a1, b1, a2, b2 = _nz(rng, -5, 5), _nz(rng, -5, 5), _nz(rng, -5, 5), _nz(rng, -5, 5)
        while a1 * b2 - a2 * b1 == 0:
            a2 = _nz(rng, -5, 5)
        e1 = f"{_coef(a1, 'x')} {_signed(b1, 'y')} = {a1 * x + b1 * y}".replace(" 1y", " y")
        e2 = f"{_coef(a2, 'x')} {_signed(b2, 'y')} = {a2 * x + b2 * y}".replace(" 1y", " y")
        return f"Solve the system {e1} and {e2}.", Problem("system", (e1, e2))
    if skill == "derivative":
        a, n, b, c = rng.randint(2, 6), rng.randint(2, 4), _nz(rng, -7, 7), rng.randint(1, 9)
        expr = f"{a}x^{n} {_signed(b, 'x')} {_signed(c)}"
        return f"Find the derivative of {expr}.", Problem("derivative", (expr,), var="x")
    if skill == "integral":
        a, b = rng.randint(1, 4) * 3, rng.randint(1, 5) * 2
        expr = f"{a}x^2 + {b}x"
        if rng.random() < 0.5:
            upper = rng.randint(1, 3)
            return (f"Evaluate the integral of {expr} from 0 to {upper}.",
                    Problem("integral", (expr,), var="x", lower="0", upper=str(upper)))
        return f"Find the integral of {expr} dx.", Problem("integral", (expr,), var="x")
    if skill == "limit":
        a = _nz(rng, -6, 6)
        expr = f"(x^2 - {a * a})/(x {_signed(-a)})"
        return f"Find the limit of {expr} as x approaches {a}.", Problem("limit", (expr,), var="x", upper=str(a))
    if skill == "factor":
        r1, r2 = rng.sample([n for n in range(-7, 8) if n != 0], 2)
        expr = f"x^2 {_signed(-(r1 + r2), 'x')} {_signed(r1 * r2)}".replace("+ 0x ", "")
        return f"Factor {expr}.", Problem("factor", (expr,))
    if skill == "expand":
        p, q = _nz(rng, -6, 6), _nz(rng, -6, 6)
        expr = f"(x {_signed(p)})(x {_signed(q)})"
        return f"Expand {expr}.", Problem("expand", (expr,))
    if skill == "simplify":
        a, b = _nz(rng, -6, 6), _nz(rng, -6, 6)
        while a == b:
            b = _nz(rng, -6, 6)
        expr = f"(x^2 {_signed(a + b, 'x')} {_signed(a * b)})/(x {_signed(a)})".replace("+ 0x ", "")
        return f"Simplify {expr}.", Problem("simplify", (expr,))
    if skill == "percentages":
        p, n = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 75]), rng.randint(2, 20) * 20
        return f"What is {p}% of {n}?", Problem("percentages", (f"{p}/100*{n}",))
    if skill == "fractions":
        d1, d2 = rng.choice([(2, 3), (3, 4), (2, 5), (4, 6), (3, 5), (6, 8)])
        n1, n2 = rng.randint(1, d1 - 1), rng.randint(1, d2 - 1)
        op = rng.choice(["+", "-"])
        expr = f"{n1}/{d1} {op} {n2}/{d2}"
        return f"What is {expr}? Give your answer as a fraction.", Problem("fractions", (expr,))
    a, b, c = rng.randint(12, 99), rng.randint(2, 12), rng.randint(2, 30)
    expr = f"{a} + {b} * {c}"
    return f"What is {expr}?", Problem("arithmetic", (expr,))


def make_practice(skill: str | None, seed: int | None = None) -> tuple[str, Key]:
    """A practice question for ``skill`` (default ``linear``) and its answer key with hints."""
    rng = random.Random(seed)
    skill = skill if skill in SKILLS else "linear"
    for _ in range(5):
        question, problem = _template(skill, rng)
        key = solve(problem)
        if key is not None:
            key.statement = question
            return question, key
    raise RuntimeError(f"no practice question could be made for '{skill}'")
