"""Reading math text into sympy objects, safely.

``parse_math`` accepts plain text (``2x^2 + 3x``, ``2*x**2``, ``1/2``, ``25%``, ``5!``,
``sqrt(2)``), implicit multiplication and common LaTeX (see :mod:`mimir.mathcheck.latex`).
sympy's ``parse_expr`` evaluates generated Python code, so nothing reaches it unless it
passes a whitelist first: digits, single-letter variables, known function names, operators,
parentheses and spaces. No quotes, underscores, brackets or attribute dots can get through,
so student text is always data. Anything else is :class:`MathParseError` (the verdict is then
``unknown``, never a crash). Runs inside the math worker (time and memory limits).
"""

from __future__ import annotations

import functools
import re
from tokenize import TokenError

import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    rationalize,
    standard_transformations,
)

from mimir.mathcheck.latex import latex_to_plain

#: Longest expression the parser reads (characters after LaTeX conversion).
MAX_EXPR_CHARS = 400

FUNCTIONS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "sec": sympy.sec, "csc": sympy.csc,
    "cot": sympy.cot, "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan, "sinh": sympy.sinh,
    "cosh": sympy.cosh, "tanh": sympy.tanh, "sqrt": sympy.sqrt, "exp": sympy.exp, "ln": sympy.log,
    "log": sympy.log, "abs": sympy.Abs,
}
CONSTANTS = {"pi": sympy.pi, "e": sympy.E, "oo": sympy.oo}
_NAMES = set(FUNCTIONS) | set(CONSTANTS) | {"arcsin", "arccos", "arctan"}
_ALLOWED = re.compile(r"[0-9A-Za-z+\-*/^().,! %=<>]*")
_WORD = re.compile(r"[A-Za-z]+")
_TRANSFORMS = standard_transformations + (implicit_multiplication_application, convert_xor, rationalize)
_SYMBOLS = {c: sympy.Symbol(c) for c in "abcdfghjkmnpqrstuvwxyz"}
_SYMBOLS.update({c.upper(): sympy.Symbol(c.upper()) for c in "abcdfghjkmnpqrstuvwxyz"})


class MathParseError(ValueError):
    """The text is not math this engine reads."""


def normalise(text: str) -> str:
    """LaTeX and Unicode to plain text, ``**`` to ``^``, percentages to fractions."""
    text = latex_to_plain(text)
    text = text.replace("**", "^").replace("\u00a0", " ")
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", text)
    return " ".join(text.split())


def _check_names(text: str) -> str:
    out = []
    last = 0
    for m in _WORD.finditer(text):
        word = m.group(0)
        out.append(text[last : m.start()])
        last = m.end()
        lower = word.lower()
        if lower in _NAMES:
            out.append({"arcsin": "asin", "arccos": "acos", "arctan": "atan"}.get(lower, lower))
        elif len(word) <= 3 and all(c in _SYMBOLS for c in word):
            out.append(" ".join(word) if len(word) > 1 else word)
        else:
            raise MathParseError(f"'{word[:20]}' is not math this engine reads")
    out.append(text[last:])
    return "".join(out)


def parse_math(text: str, *, evaluate: bool = True) -> sympy.Expr:
    """One expression (no ``=``). ``evaluate=False`` keeps the written form (``3(x+1)``
    stays a product). Raises :class:`MathParseError`. Results (and refusals) are cached:
    sympy expressions are immutable, and a turn reads the same text several times."""
    result = _parse_cached(text[: MAX_EXPR_CHARS * 4], evaluate)
    if isinstance(result, str):
        raise MathParseError(result)
    return result


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str, evaluate: bool) -> sympy.Expr | str:
    try:
        return _parse(text, evaluate)
    except MathParseError as exc:
        return str(exc)


def _parse(text: str, evaluate: bool) -> sympy.Expr:
    plain = normalise(text)
    if not plain:
        raise MathParseError("no expression")
    if len(plain) > MAX_EXPR_CHARS:
        raise MathParseError("the expression is too long to check")
    if not _ALLOWED.fullmatch(plain) or any(c in plain for c in "=<>,"):
        raise MathParseError("the expression has characters this engine does not read")
    if re.search(r"\.(?!\d)|(?<!\d)\.", plain):
        raise MathParseError("a stray '.'")
    plain = re.sub(r"([A-Za-z])(?=\d)", r"\1 ", _check_names(plain))  # "x2" is x*2, not a name
    plain = re.sub(r"\^\s*\^", "^", plain)
    locals_ = dict(_SYMBOLS)
    locals_.update(FUNCTIONS)
    locals_.update(CONSTANTS)
    try:
        expr = parse_expr(plain, local_dict=locals_, transformations=_TRANSFORMS, evaluate=evaluate)
    except (SyntaxError, TypeError, ValueError, AttributeError, ZeroDivisionError, TokenError) as exc:
        raise MathParseError(f"cannot read '{plain[:40]}': {type(exc).__name__}") from None
    if not isinstance(expr, sympy.Expr):
        raise MathParseError("not an expression")
    return expr


def parse_equation(text: str) -> sympy.Eq | sympy.Expr:
    """``lhs = rhs`` as ``Eq`` (not evaluated), or one expression when there is no ``=``."""
    plain = normalise(text)
    if plain.count("=") > 1:
        raise MathParseError("more than one '='")
    if "=" in plain:
        lhs, rhs = plain.split("=")
        return sympy.Eq(parse_math(lhs), parse_math(rhs), evaluate=False)
    return parse_math(plain)


def variables(expr) -> list[sympy.Symbol]:
    """Free symbols sorted by name."""
    return sorted(expr.free_symbols, key=lambda s: s.name)


def format_value(value) -> str:
    """A value as a student would write it: ``86.5``, ``1/3``, ``2*sqrt(3)``, ``x^2 + 1``."""
    value = sympy.nsimplify(value) if isinstance(value, sympy.Float) else value
    if isinstance(value, sympy.Rational) and not isinstance(value, sympy.Integer):
        q = int(value.q)
        while q % 2 == 0:
            q //= 2
        while q % 5 == 0:
            q //= 5
        if q == 1 and len(str(value.p)) < 12:
            text = f"{float(value):.10f}".rstrip("0").rstrip(".")
            return text
    text = sympy.sstr(value).replace("**", "^").replace(")*(", ")(")
    return re.sub(r"(?<![\w.])(\d+)\*(?=[a-z(])", r"\1", text)
