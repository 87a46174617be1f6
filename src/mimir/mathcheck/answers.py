"""Checking a student's reply against an answer key by mathematical equivalence.

``1/2``, ``0.5``, ``2/4`` and ``50%`` are the same value; ``x=2, y=-1``, ``y = -1 and x = 2``
and ``(2, -1)`` are the same solution; ``x = 2 or x = 3`` and ``3, 2`` are both roots of a
quadratic; ``2x + 2`` and ``2(x+1)`` are the same derivative. A decimal that rounds the exact
value (``0.33`` for 1/3, two or more decimals) counts as right. The verdict is ``correct``,
``incorrect`` (with the part that is wrong) or ``unknown`` when the reply holds no math this
engine reads: it never guesses.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass

import sympy

from mimir.mathcheck.latex import latex_to_plain
from mimir.mathcheck.parse import MathParseError, parse_math
from mimir.mathcheck.problems import Key

MAX_REPLY_CHARS = 2000


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "correct" | "incorrect" | "unknown"
    detail: str = ""
    #: For incorrect answers: which parts are wrong (variable names, "value", "form", "missing y").
    wrong: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        data = asdict(self)
        data["wrong"] = list(self.wrong)
        return data


_FILLER = re.compile(
    r"\b(?:(?:but\s+)?i'?m\s+not\s+(?:sure|certain)|(?:but\s+)?not\s+(?:sure|certain)|i\s+think|i\s+got|i\s+get|i\s+have|i'?d\s+say|i\s+guess|maybe|probably|so|then|therefore|thus|hence|well"
    r"|my\s+answer\s+is|my\s+answers\s+are|the\s+answer\s+is|the\s+answers\s+are|answer|it'?s|it\s+is|is\s+it|is\s+that|that'?s"
    r"|right|correct|ok|okay|hmm|um|uh|equals|is|are|was|the|result|solution|solutions|roots?|are|we\s+get|you\s+get|final"
    r"|derivative|integral|limit|value|of|simplified|factored|expanded|form|gives|becomes|please|check|yes|no)\b",
    re.I,
)
_SPLIT = re.compile(r"\s*(?:,|;|\band\b|\bor\b|&)\s*", re.I)
_ASSIGN = re.compile(r"^\s*([a-zA-Z])\s*=\s*(.+)$")
_PREFIX = re.compile(r"^\s*(?:[fgyh]'\s*(?:\(\s*[a-z]\s*\))?|dy\s*/\s*d[a-z]|d/d[a-z]\s*\([^)]*\)|[fF]\s*\(\s*[a-z]\s*\))\s*=\s*")
_TUPLE = re.compile(r"^\s*\(\s*([^(),]+)\s*,\s*([^(),]+)\s*(?:,\s*([^(),]+)\s*)?\)\s*$")
_PLUS_C = re.compile(r"\+\s*[cCkK]\s*$")


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    " seventeen eighteen nineteen twenty".split())}
_NUMBER_WORD = re.compile(r"\b(?:minus\s+|negative\s+)?(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.I)
_VAR_IS = re.compile(r"\b([a-zA-Z])\s+(?:is|equals|would\s+be|should\s+be)\s+", re.I)
_PLUS_MINUS = re.compile(r"\u00b1|\+\s*/?\s*-|\\pm\b")
_NAMED_POINT = re.compile(r"^\s*\(\s*([a-zA-Z]\s*(?:,\s*[a-zA-Z]\s*){1,2})\)\s*=\s*\(([^()]*)\)\s*\.?\s*$")
_MINUS = re.compile(r"\bminus\b|\bnegative\s+(?=[\d.(])", re.I)
#: Reasons after the answer ("x = 4 because 4*4+2 = 18"): their equations are not the answer.
_REASON = re.compile(r"\b(?:because|since|cause|cuz|as\s+(?:you\s+can\s+)?check)\b", re.I)
#: A lone letter right before a digit (``x2``, ``3x2``): x^2 or 2x? Ambiguous, so unknown.
_LETTER_DIGIT = re.compile(r"(?<![A-Za-z\\])[A-Za-z]\d")
_NONE = re.compile(r"\b(?:undefined|does\s*n[o']?t\s+exist|dne|no\s+(?:limit|solutions?|answer)|infinit[ey]|impossible)\b", re.I)


def _number_word(m: re.Match[str]) -> str:
    words = m.group(0).lower().split()
    return ("-" if len(words) > 1 else "") + _NUMBER_WORDS[words[-1]]


class AmbiguousReply(ValueError):
    """The reply can be read two ways (``x2``); the verdict is ``unknown``."""


def _items(reply: str, *, thousands: bool = False, percent: bool = False) -> list[str]:
    """The answer parts of a reply. ``thousands``: read ``1,024`` as one number (the key is
    one value); ``percent``: the key is a percentage, so ``20%`` means 20."""
    text = re.sub(r"=\s*\\?\{([^{}]*?)\\?\}", r"= \1", reply[:MAX_REPLY_CHARS])  # x = {-3, 5}: a set of roots
    text = latex_to_plain(text).replace("\n", " ")
    text = re.sub(r"\b(ln|log)\s*\|([^|]{1,200})\|", r"\1(\2)", text)  # ln|x| + C: its derivative is 1/x too
    named = _NAMED_POINT.match(text)  # (x, y) = (2, -1)
    if named:
        names, values = named.group(1).split(","), named.group(2).split(",")
        if len(names) == len(values):
            text = ", ".join(f"{n.strip()} = {v.strip()}" for n, v in zip(names, values))
    reason = _REASON.search(text)
    if reason and re.search(r"[0-9a-zA-Z]", text[: reason.start()]):
        text = text[: reason.start()]
    if _LETTER_DIGIT.search(text):
        raise AmbiguousReply("a letter right before a digit (x2: x^2 or 2x?)")
    text = text.replace("~", "=")  # x ≈ 4
    if thousands:
        text = re.sub(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,]|\.\d)", lambda m: m.group(0).replace(",", ""), text)
    if percent:
        text = re.sub(r"(\d)\s*(?:%|percent\b)", r"\1", text, flags=re.I)
    text = re.sub(r"(?<=[\w)])\s+(?=[a-zA-Z]\s*=)", ", ", text)  # x=3 y=2
    text = _PREFIX.sub("", text.strip())
    text = _VAR_IS.sub(lambda m: f"{m.group(1)} = ", text)
    text = _NUMBER_WORD.sub(_number_word, text)
    text = _MINUS.sub("-", text)
    text = _FILLER.sub(" ", text)
    text = re.sub(r"[?!]+", " ", text)
    text = re.sub(r"\.(?!\d)", " ", text)  # sentence periods, not decimal points
    text = text.replace(":", " ").strip()
    tup = _TUPLE.match(text)
    if tup:
        return ["(" + ",".join(g for g in tup.groups() if g) + ")"]
    parts = []
    for part in _SPLIT.split(text):
        part = part.strip()
        if _PLUS_MINUS.search(part):  # x = ±√2: both signs
            parts += [_PLUS_MINUS.sub("+", part, count=1), _PLUS_MINUS.sub("-", part, count=1)]
        elif part:
            parts.append(part)
    return parts


def _value(text: str, *, evaluate: bool = True, allowed: frozenset[str] | None = None):
    """``text`` parsed; with ``allowed``, a letter outside it (``4 cm``, ``2y`` for a question
    in x) makes the reply unreadable rather than wrong."""
    value = parse_math(text, evaluate=evaluate)
    if allowed is not None:
        foreign = {s.name for s in value.free_symbols} - allowed
        if foreign:
            raise AmbiguousReply(f"'{sorted(foreign)[0]}' is not a letter of the question")
    return value


def _equal(a, b, *, decimals: int = 0) -> bool | None:
    """True/False when decided, None when sympy cannot tell. Cheap tests first: exact
    numbers, then values at random points (a nonzero value decides), then cancel/simplify."""
    try:
        diff = a - b
    except (TypeError, ValueError):
        return None
    if diff == 0:
        return True
    if not diff.free_symbols:
        try:
            gap = abs(complex(sympy.N(diff, 30)))
        except (TypeError, ValueError):
            return None
        if decimals >= 2 and gap <= 0.5 * 10 ** (-decimals) + 1e-12:
            return True
        return gap < 1e-12
    rng = random.Random(7)
    symbols = sorted(diff.free_symbols, key=lambda s: s.name)
    zero = 0
    for _ in range(4):
        point = {s: sympy.Rational(rng.randint(11, 97), rng.randint(7, 23)) for s in symbols}
        try:
            val = complex(sympy.N(diff.subs(point), 20))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if abs(val) > 1e-8:
            return False
        zero += 1
    if zero < 3:
        return None
    try:
        if sympy.cancel(sympy.expand(diff)) == 0 or sympy.simplify(diff) == 0:
            return True
    except (TypeError, ValueError, NotImplementedError):
        return None
    return None


def _decimals(text: str) -> int:
    m = re.fullmatch(r"\s*-?\d*\.(\d+)\s*", text)
    return len(m.group(1)) if m else 0


def check_answer(key: Key, reply: str) -> Verdict:
    """Compare a reply with the key. Never raises for bad input."""
    try:
        if _NONE.search(reply[:MAX_REPLY_CHARS]):
            exists = bool(key.solutions) if key.kind == "solutions" else key.value not in ("oo", "-oo", "zoo", "nan")
            if exists:
                return Verdict("incorrect", "there is an answer: the reply says there is none", ("value",))
            return Verdict("unknown", "the reply says there is no finite answer")
        items = _items(reply, thousands=key.kind == "value", percent=key.form == "percent")
        if not items:
            return Verdict("unknown", "no answer found in the reply")
        if key.kind == "solutions":
            return _check_solutions(key, items)
        return _check_value(key, items)
    except MathParseError as exc:
        return Verdict("unknown", f"the reply is not math this engine reads ({exc})")
    except AmbiguousReply as exc:
        return Verdict("unknown", f"the reply can be read two ways ({exc})")
    except (TypeError, ValueError, AttributeError, NotImplementedError, RecursionError) as exc:
        return Verdict("unknown", f"could not compare ({type(exc).__name__})")


def _check_solutions(key: Key, items: list[str]) -> Verdict:
    names = key.variables
    allowed = frozenset(s.name for sol in key.solutions for v in sol.values() for s in parse_math(v).free_symbols)
    given: dict[str, list[tuple[str, object]]] = {}
    bare: list[tuple[str, object]] = []
    for item in items:
        if item.startswith("(") and "," in item:
            values = item.strip("()").split(",")
            if len(values) != len(names):
                return Verdict("unknown", "a point with a different number of coordinates")
            for name, raw in zip(names, values):
                given.setdefault(name, []).append((raw, _value(raw, allowed=allowed)))
            continue
        m = _ASSIGN.match(item)
        if m:
            name, raw = m.group(1), m.group(2)
            if name not in names:
                return Verdict("unknown", f"the reply gives '{name}', which the question does not ask for")
            given.setdefault(name, []).append((raw, _value(raw, allowed=allowed)))
        elif "=" in item:
            return Verdict("unknown", "an equation instead of a value")
        else:
            bare.append((item, _value(item, allowed=allowed)))
    if bare:
        if len(names) == 1:
            given.setdefault(names[0], []).extend(bare)
        elif len(bare) == len(names) and not given:
            for name, entry in zip(names, bare):
                given[name] = [entry]
        else:
            return Verdict("unknown", "values without saying which variable they belong to")
    if not given:
        return Verdict("unknown", "no values found")
    if len(key.solutions) == 1 or len(names) > 1:
        return _check_point(key, given)
    return _check_roots(key, given)


def _check_point(key: Key, given: dict) -> Verdict:
    solution = key.solutions[0] if key.solutions else {}
    wrong: list[str] = []
    undecided = False
    for name in key.variables:
        if name not in given:
            continue
        expected = parse_math(solution[name])
        for raw, value in given[name]:
            same = _equal(value, expected, decimals=_decimals(raw))
            if same is None:
                undecided = True
            elif not same:
                wrong.append(name)
    missing = [n for n in key.variables if n not in given]
    if wrong:
        return Verdict("incorrect", f"the value of {', '.join(sorted(set(wrong)))} is not right", tuple(sorted(set(wrong))))
    if undecided:
        return Verdict("unknown", "could not decide whether the values are equal")
    if missing:
        return Verdict("incorrect", f"the answer does not give {', '.join(missing)}", tuple(f"missing {m}" for m in missing))
    return Verdict("correct", "every value is right")


def _check_roots(key: Key, given: dict) -> Verdict:
    name = key.variables[0]
    roots = [parse_math(sol[name]) for sol in key.solutions]
    matched: set[int] = set()
    wrong: list[str] = []
    for raw, value in given.get(name, []):
        hit = None
        for i, root in enumerate(roots):
            same = _equal(value, root, decimals=_decimals(raw))
            if same is None:
                return Verdict("unknown", "could not decide whether the values are equal")
            if same:
                hit = i
                break
        if hit is None:
            wrong.append(raw.strip())
        else:
            matched.add(hit)
    if wrong:
        return Verdict("incorrect", f"{name} = {wrong[0]} is not a solution", (name,))
    if len(matched) < len(roots):
        return Verdict("incorrect", f"only {len(matched)} of the {len(roots)} solutions", ("missing solution",))
    return Verdict("correct", "all solutions found")


def _check_value(key: Key, items: list[str]) -> Verdict:
    candidates = []
    for item in items:
        m = _ASSIGN.match(item)
        raw = m.group(2) if m and m.group(1) not in (key.var or "") else item
        if "=" in raw:
            raw = raw.rsplit("=", 1)[1]
        candidates.append(raw.strip())
    if len(candidates) != 1:
        return Verdict("unknown", "more than one value in the reply")
    raw = candidates[0]
    expected = parse_math(key.value)
    allowed = frozenset({s.name for s in expected.free_symbols} | ({key.var} if key.var else set()))
    if key.form == "antiderivative":
        raw_core = _PLUS_C.sub("", raw)
        value = _value(raw_core, allowed=allowed | {"x"} if not key.var else allowed)
        x = sympy.Symbol(key.var or "x")
        same = _equal(sympy.diff(value, x), parse_math(key.integrand))
        if same is None:
            return Verdict("unknown", "could not decide whether the antiderivative is right")
        if not same:
            return Verdict("incorrect", "its derivative is not the integrand", ("value",))
        note = "" if _PLUS_C.search(raw) else " (remember + C)"
        return Verdict("correct", "a correct antiderivative" + note)
    value = _value(raw, allowed=allowed)
    same = _equal(value, expected, decimals=_decimals(raw))
    if same is None:
        return Verdict("unknown", "could not decide whether the values are equal")
    if not same:
        return Verdict("incorrect", "the value is not right", ("value",))
    form_problem = _form_problem(key, raw)
    if form_problem:
        return Verdict("incorrect", form_problem, ("form",))
    return Verdict("correct", "equal to the key")


def _form_problem(key: Key, raw: str) -> str:
    if not key.form or key.form == "simplified":
        if key.form == "simplified":
            written = _value(raw, evaluate=False)
            if sympy.count_ops(written) > sympy.count_ops(parse_math(key.value)) + 2:
                return "the value is right but not simplified yet"
        return ""
    written = _value(raw, evaluate=False)
    if key.form == "factored":
        expected = parse_math(key.value, evaluate=False)  # 3*(2x + 3) stays a product
        if expected.is_Mul or expected.is_Pow:
            if not (written.is_Mul or written.is_Pow):
                return "the value is right but it is not written as a product of factors"
    if key.form == "expanded":
        if any(isinstance(a, sympy.Pow) and a.base.is_Add for a in sympy.preorder_traversal(written)) or any(
            isinstance(a, sympy.Mul) and any(f.is_Add for f in a.args) for a in sympy.preorder_traversal(written)
        ):
            return "the value is right but it is not expanded"
    return ""
