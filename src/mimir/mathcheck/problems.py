"""Recognising a math problem in text, solving it with sympy, and the hint ladder.

Skills: arithmetic (with fractions, percentages and averages), linear and quadratic
equations, systems of linear equations, simplification, expansion, factoring, derivatives,
integrals (indefinite and definite) and limits. :func:`find_problem` reads a problem from a
student's message or a tutor's question; :func:`solve` returns its answer key (JSON-able, so
it can be stored with a turn) with the solution steps as a hint ladder. Runs inside the math
worker.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import sympy

from mimir.mathcheck.latex import latex_to_plain
from mimir.mathcheck.parse import MathParseError, format_value, parse_equation, parse_math, variables
from mimir.mathcheck.spans import equalities, leading_math

SKILLS: tuple[str, ...] = (
    "arithmetic", "fractions", "percentages", "linear", "quadratic", "system", "simplify",
    "expand", "factor", "derivative", "integral", "limit",
)
MAX_TEXT_CHARS = 4000
_X = sympy.Symbol("x")


@dataclass(frozen=True)
class Problem:
    """A recognised problem. ``exprs`` are plain-text expressions or equations."""

    skill: str
    exprs: tuple[str, ...]
    var: str | None = None
    lower: str | None = None
    upper: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Key:
    """An answer key: what a right answer is, and how the solution goes (the hints)."""

    skill: str
    statement: str
    #: ``"solutions"`` (values of variables) or ``"value"`` (one expression).
    kind: str
    #: For ``solutions``: the variables and every solution as {var: value text}.
    variables: list[str] = field(default_factory=list)
    solutions: list[dict[str, str]] = field(default_factory=list)
    #: For ``value``: the value as text.
    value: str = ""
    #: Extra condition on the form: ``factored``, ``expanded``, ``simplified`` or ``antiderivative``.
    form: str = ""
    #: For an antiderivative: the integrand and its variable.
    integrand: str = ""
    var: str = ""
    hints: list[str] = field(default_factory=list)

    @property
    def answer_text(self) -> str:
        if self.kind == "value":
            return self.value + (" + C" if self.form == "antiderivative" else "")
        if not self.solutions:
            return "no solution"
        parts = []
        for sol in self.solutions:
            parts.append(", ".join(f"{v} = {sol[v]}" for v in self.variables if v in sol))
        return " or ".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Key:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# -- recognising ------------------------------------------------------------------------------

_END = r"(?=\s*(?:\?|[.;,!](?:\s|$)|$|\bwith respect to\b|\bw\.?r\.?t\b|\bfor\s+[a-z]\b|\bfrom\b|\bas\b|\bif\b|\bwhen\b|\bwhere\b|\bplease\b|\bcompletely\b|\bfully\b|\band\s+(?:explain|show|tell)\b|\bdx\b|\bd[a-z]\b))"
_DERIV = re.compile(
    r"\b(?:derivative|differentiate|d\s*/\s*d(?P<v0>[a-z]))\b\s*(?:with respect to (?P<v1>[a-z])\s*)?(?:of\s+)?"
    r"(?:(?:f|g|y|h)\s*(?:\(\s*[a-z]\s*\))?\s*=\s*)?(?P<expr>.+?)" + _END + r"(?:\s*(?:with respect to|wrt)\s+(?P<v2>[a-z]))?",
    re.I,
)
_DERIV_DEF = re.compile(
    r"\b(?:f|g|y)\s*(?:\(\s*(?P<v>[a-z])\s*\))?\s*=\s*(?P<expr>[^,;?\n]+?)\s*[,;.]?\s*(?:then\s+|now\s+)?"
    r"(?:find|what is|what's|compute|calculate|work out|give)\s+(?:the\s+)?(?:f'|g'|y'|dy/dx|derivative)",
    re.I,
)
# The question first, the function after it: "Find f'(x) if f(x) = ...", "What is dy/dx when y = ...".
_DERIV_ASK = re.compile(
    r"\b(?:find|what is|what's|compute|calculate|work out|give)\s+(?:the\s+)?(?:f'|g'|h'|y'|dy/dx)(?:\s*\(\s*[a-z]\s*\))?"
    r"\s*,?\s*(?:if|when|where|given(?:\s+that)?|for)\s+(?:f|g|h|y)\s*(?:\(\s*(?P<v>[a-z])\s*\))?\s*=\s*(?P<expr>.+?)" + _END,
    re.I,
)
_INTEGRAL = re.compile(
    r"\b(?:integrate|integral(?:\s+of)?|antiderivative(?:\s+of)?)\s+(?P<expr>.+?)" + _END
    + r"(?:\s*d(?P<v>[a-z])\b)?(?:\s*(?:,\s*)?from\s+(?P<a>[-+]?[\w.()/^*]+)\s+to\s+(?P<b>[-+]?[\w.()/^*]+?))?(?=\s*(?:[?,;!]|\.(?:\s|$)|$|\s))",
    re.I,
)
_LIMIT = re.compile(
    r"\blim(?:it)?\b\s*(?:of\s+)?(?P<expr>.+?)\s+as\s+(?P<v>[a-z])\s*(?:->|approaches|goes\s+to|tends\s+to|to)\s*"
    r"(?P<p>[-+]?(?:\d+(?:\.\d+)?|oo|infinity|pi))",
    re.I,
)
_TRANSFORM = re.compile(r"\b(?P<verb>simplify|expand|factori[sz]e|factor)\b\s*(?::\s*)?(?P<expr>.+?)" + _END, re.I)
_PERCENT = re.compile(r"(?P<p>\d+(?:\.\d+)?)\s*(?:%|percent)\s*of\s+(?P<n>\d+(?:\.\d+)?)", re.I)
#: "What percentage of 50 is 10?", "10 is what percent of 50?", "Express 10 as a percentage of 50".
_PERCENT_OF = re.compile(
    r"\bwhat\s+(?:percent(?:age)?|%)\s+of\s+(?P<n>\d+(?:\.\d+)?)\s+is\s+(?P<a>\d+(?:\.\d+)?)"
    r"|(?P<a2>\d+(?:\.\d+)?)\s+is\s+what\s+(?:percent(?:age)?|%)\s+of\s+(?P<n2>\d+(?:\.\d+)?)"
    r"|\bexpress\s+(?P<a3>\d+(?:\.\d+)?)\s+as\s+a\s+percent(?:age)?\s+of\s+(?P<n3>\d+(?:\.\d+)?)",
    re.I,
)
#: "Write 0.45 as a percentage", "Convert 3/4 to a percent": a number as a percentage.
_TO_PERCENT = re.compile(
    r"\b(?:write|express|convert|change|turn|give)\s+(?P<n>\d+(?:\.\d+)?(?:\s*/\s*\d+)?)\s+(?:as|to|into)\s+(?:a\s+)?percent(?:age)?\b",
    re.I,
)
#: "A jacket costs $80 and its price goes up by 25%", "a $40 shirt is 25% off": the new amount.
_PERCENT_CHANGE = re.compile(
    r"\$?(?P<n>\d+(?:\.\d+)?)\b[^.?!%]{0,80}?(?:"
    r"\b(?P<up>increases?|increased|goes\s+up|went\s+up|rises|rose|is\s+raised|raised)\s+by\s+(?P<p>\d+(?:\.\d+)?)\s*(?:%|percent)"
    r"|\b(?:decreases?|decreased|goes\s+down|went\s+down|falls|fell|is\s+reduced|reduced|discounted)\s+by\s+(?P<p2>\d+(?:\.\d+)?)\s*(?:%|percent)"
    r"|(?P<p3>\d+(?:\.\d+)?)\s*(?:%|percent)\s+(?:off|discount)\b)",
    re.I,
)
#: "What is 1/3 of 27?": a fraction of a quantity.
_FRACTION_OF = re.compile(r"(?<![\d.])(?P<f>\d+\s*/\s*\d+)\s+of\s+(?P<n>\d+(?:\.\d+)?)(?![\d.]*\s*[a-z(])", re.I)
_AVERAGE = re.compile(
    r"\b(?:average|mean)\s+of\s+(?:the\s+numbers\s+)?(?P<nums>[-\d.]+(?:\s*(?:,|and|,\s*and)\s*[-\d.]+)+)", re.I
)
_ARITH = re.compile(
    r"\b(?:what\s+is|what's|whats|calculate|compute|evaluate|work\s+out|find)\s+(?:the\s+value\s+of\s+)?(?P<expr>.+?)" + _END,
    re.I,
)
_SOLVE_FOR = re.compile(r"\bsolve\b.*?\bfor\s+(?P<v>[a-z])\b", re.I)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[?!])\s+|(?<=\.)\s+(?=[A-Z])|\n+", text)
    return [p.strip() for p in parts if p.strip()]


def find_problem(text: str) -> Problem | None:
    """The problem a text asks, or ``None``. For a tutor's message, the last sentence that
    holds a problem wins (that is where the question is)."""
    text = latex_to_plain(text[:MAX_TEXT_CHARS])
    sentences = _sentences(text)
    for sentence in reversed(sentences):
        problem = _problem_in(sentence)
        if problem is not None:
            return problem
    return _problem_in(" ".join(sentences)) if len(sentences) > 1 else None


def _ok(expr: str) -> bool:
    try:
        parse_math(expr)
    except MathParseError:
        return False
    return True


def _problem_in(text: str) -> Problem | None:
    m = _DERIV_DEF.search(text)
    if m and _ok(m.group("expr")):
        return Problem("derivative", (m.group("expr").strip(),), var=m.group("v"))
    m = _DERIV_ASK.search(text)
    if m and _ok(m.group("expr")):
        return Problem("derivative", (m.group("expr").strip(),), var=m.group("v"))
    m = _DERIV.search(text)
    if m and _ok(m.group("expr")):
        return Problem("derivative", (m.group("expr").strip(),), var=m.group("v0") or m.group("v1") or m.group("v2"))
    m = _INTEGRAL.search(text)
    if m and _ok(m.group("expr")):
        lower, upper = m.group("a"), m.group("b")
        if lower is not None and not (_ok(lower) and _ok(upper)):
            lower = upper = None
        return Problem("integral", (m.group("expr").strip(),), var=m.group("v"), lower=lower, upper=upper)
    m = _LIMIT.search(text)
    if m and _ok(m.group("expr")):
        point = m.group("p").lower().replace("infinity", "oo")
        return Problem("limit", (m.group("expr").strip(),), var=m.group("v"), upper=point)
    m = _TRANSFORM.search(text)
    if m and _ok(m.group("expr")):
        verb = m.group("verb").lower()
        skill = "factor" if verb.startswith("factor") else verb
        return Problem(skill, (m.group("expr").strip(),))
    equations = _equations(text)
    if equations:
        return equations
    m = _PERCENT_OF.search(text)
    if m:
        part = m.group("a") or m.group("a2") or m.group("a3")
        whole = m.group("n") or m.group("n2") or m.group("n3")
        if float(whole) != 0:
            return Problem("percentages", (f"{part}/{whole}*100",), var="percent")
    m = _PERCENT_CHANGE.search(text)
    if m:
        sign, rate = ("+", m.group("p")) if m.group("up") else ("-", m.group("p2") or m.group("p3"))
        return Problem("percentages", (f"{m.group('n')}*(1 {sign} {rate}/100)",), var="percent_change")
    m = _TO_PERCENT.search(text)
    if m:
        return Problem("percentages", (f"({m.group('n').replace(' ', '')})*100",), var="to_percent")
    m = _FRACTION_OF.search(text)
    if m:
        return Problem("fractions", (f"({m.group('f')})*{m.group('n')}",), var="fraction_of")
    m = _PERCENT.search(text)
    if m:
        return Problem("percentages", (f"{m.group('p')}/100*{m.group('n')}",))
    m = _AVERAGE.search(text)
    if m:
        nums = _NUMBER.findall(m.group("nums"))
        return Problem("arithmetic", (f"({' + '.join(nums)})/{len(nums)}",), var="average")
    m = _ARITH.search(text)
    if m and _ok(m.group("expr")) and _is_arith(m.group("expr")):
        expr = m.group("expr").strip()
        return Problem("fractions" if "/" in expr else "arithmetic", (expr,))
    stripped = text.strip().rstrip("?=. ")
    if _is_arith(stripped) and _ok(stripped) and re.search(r"\d\s*[-+*/^x\u00d7\u00f7]\s*\(?\d", stripped):
        return Problem("fractions" if "/" in stripped else "arithmetic", (stripped,))
    return None


def _is_arith(expr: str) -> bool:
    try:
        parsed = parse_math(expr)
    except MathParseError:
        return False
    return not parsed.free_symbols and bool(re.search(r"\d", expr))


def _equations(text: str) -> Problem | None:
    eqs: list[str] = []
    seen_vars: set[str] = set()
    for claim in equalities(text):
        source = f"{claim.left} = {claim.right}"
        if re.match(r"\s*[fgh]\s*\(", claim.left):
            continue
        try:
            eq = parse_equation(source)
        except MathParseError:
            continue
        if not isinstance(eq, sympy.Eq) or not eq.free_symbols:
            continue
        eqs.append(source)
        seen_vars.update(s.name for s in eq.free_symbols)
    if not eqs:
        return None
    m = _SOLVE_FOR.search(text)
    wanted = m.group("v") if m else None
    if len(eqs) == 1:
        eq = parse_equation(eqs[0])
        names = [v.name for v in variables(eq)]
        if wanted is None and len(names) != 1:
            return None
        var = wanted or names[0]
        poly = sympy.Poly(eq.lhs - eq.rhs, sympy.Symbol(var)) if _is_poly(eq, var) else None
        degree = poly.degree() if poly is not None else 0
        if degree == 1:
            return Problem("linear", (eqs[0],), var=var)
        if degree == 2:
            return Problem("quadratic", (eqs[0],), var=var)
        return None
    if len(eqs) == len(seen_vars) and len(eqs) <= 3:
        return Problem("system", tuple(eqs))
    return None


def _is_poly(eq, var: str) -> bool:
    try:
        return (eq.lhs - eq.rhs).is_polynomial(sympy.Symbol(var))
    except (TypeError, ValueError):
        return False


# -- solving -----------------------------------------------------------------------------------


def solve(problem: Problem) -> Key | None:
    """The answer key of ``problem``, or ``None`` when sympy finds no closed answer."""
    handler = _SOLVERS.get(problem.skill)
    return handler(problem) if handler else None


def _var(problem: Problem, expr) -> sympy.Symbol:
    if problem.var and len(problem.var) == 1:
        return sympy.Symbol(problem.var)
    names = variables(expr)
    return names[0] if len(names) == 1 else _X


def _solve_equations(problem: Problem) -> Key | None:
    eqs = [parse_equation(e) for e in problem.exprs]
    syms = sorted({s for e in eqs for s in e.free_symbols}, key=lambda s: s.name)
    if problem.skill != "system" and problem.var:
        syms = [sympy.Symbol(problem.var)]
    found = _fast_solve(problem.skill, eqs, syms)
    solutions = [{s.name: format_value(sol[s]) for s in syms if s in sol} for sol in found]
    if any(len(sol) != len(syms) for sol in solutions):
        return None
    statement = " and ".join(problem.exprs)
    key = Key(problem.skill, f"Solve {statement}", "solutions", [s.name for s in syms], solutions)
    key.hints = _equation_hints(problem, eqs, syms, found)
    return key


def _fast_solve(skill: str, eqs, syms) -> list[dict]:
    """linsolve for linear equations and roots for quadratics (much faster than solve)."""
    exprs = [sympy.expand(e.lhs - e.rhs) for e in eqs]
    if skill in ("linear", "system"):
        found = sympy.linsolve(exprs, syms)
        if isinstance(found, sympy.FiniteSet) and len(found) == 1:
            point = next(iter(found))
            if not any(v.free_symbols for v in point):
                return [dict(zip(syms, point))]
        return []
    roots = sympy.roots(sympy.Poly(exprs[0], syms[0]))
    if sum(roots.values()) == 2:
        return [{syms[0]: r} for r in sorted(roots, key=sympy.default_sort_key)]
    return [{syms[0]: r} for r in sympy.solve(exprs[0], syms[0])]


def _equation_hints(problem: Problem, eqs, syms, found) -> list[str]:
    if problem.skill == "linear":
        x = syms[0]
        expr = sympy.expand(eqs[0].lhs - eqs[0].rhs)
        a = expr.coeff(x, 1)
        c = -(expr - a * x)
        return [
            f"Collect the {x}-terms on one side and the plain numbers on the other side.",
            f"You should reach {format_value(a * x)} = {format_value(sympy.simplify(c))}.",
            f"Now divide both sides by {format_value(a)}." if a != 1 else f"That already gives {x}: check it in the original equation.",
        ]
    if problem.skill == "quadratic":
        x = syms[0]
        expr = sympy.expand(eqs[0].lhs - eqs[0].rhs)
        a, b, c = (expr.coeff(x, k) for k in (2, 1, 0))
        hints = [f"Move everything to one side so that it reads {format_value(expr)} = 0."]
        factored = sympy.factor(expr)
        if factored.is_Mul or factored.is_Pow:
            hints.append(
                f"Look for two numbers that multiply to {format_value(c / a)} and add up to {format_value(b / a)}; "
                "they let you write it as a product of two brackets."
            )
            hints.append("A product is zero when one of its factors is zero: set each bracket equal to 0.")
        else:
            disc = b * b - 4 * a * c
            hints.append(f"Use the quadratic formula with a = {format_value(a)}, b = {format_value(b)}, c = {format_value(c)}.")
            hints.append(f"The discriminant b^2 - 4ac is {format_value(disc)}.")
        return hints
    first, second = syms[0], syms[-1]
    hints = [
        f"Eliminate one variable: scale the equations so that the {second}-terms cancel when you add or subtract them.",
    ]
    e1, e2 = (sympy.expand(e.lhs - e.rhs) for e in eqs[:2])
    b1, b2 = e1.coeff(second, 1), e2.coeff(second, 1)
    if len(eqs) == 2 and b1 != 0 and b2 != 0:
        reduced = sympy.expand(b2 * e1 - b1 * e2)  # the second variable cancels
        a = reduced.coeff(first, 1)
        c = -(reduced - a * first)
        if a != 0 and not c.free_symbols:
            if a < 0:
                a, c = -a, -c
            hints.append(f"Without {second} you get one equation in {first}: {format_value(a * first)} = {format_value(c)}.")
    hints.append(f"When you know {first}, put it into {problem.exprs[0]} to find {second}.")
    return hints


def _value_key(problem: Problem, statement: str, value, hints: list[str], **extra) -> Key:
    return Key(problem.skill, statement, "value", value=format_value(value), hints=hints, **extra)


def _solve_arith(problem: Problem) -> Key | None:
    expr = parse_math(problem.exprs[0])
    if expr.free_symbols:
        return None
    value = sympy.nsimplify(sympy.simplify(expr))
    if problem.var == "percent":
        part, whole = problem.exprs[0].removesuffix("*100").split("/")
        return _value_key(problem, f"What percentage of {whole} is {part}?", value,
                          [f"Write {part} as a fraction of {whole}: {part}/{whole}.", "Multiply that fraction by 100 to get a percentage."],
                          form="percent")
    if problem.var == "percent_change":
        n, change = problem.exprs[0].split("*(1 ")
        sign, rate = change[0], change[2:].removesuffix("/100)")
        word = "up" if sign == "+" else "down"
        return _value_key(problem, f"What is {n} after going {word} by {rate}%?", value,
                          [f"Find {rate}% of {n}: {rate}/100 times {n}.",
                           f"{'Add that to' if sign == '+' else 'Take that away from'} {n}."])
    if problem.var == "to_percent":
        number = problem.exprs[0][1:].removesuffix(")*100")
        return _value_key(problem, f"Write {number} as a percentage.", value,
                          [f"A percentage is a number of hundredths: multiply {number} by 100.", "Write % after the result."],
                          form="percent")
    if problem.var == "fraction_of":
        frac, n = problem.exprs[0][1:].split(")*")
        return _value_key(problem, f"What is {frac} of {n}?", value,
                          [f"'{frac} of {n}' means {frac} times {n}.", f"Divide {n} by the denominator, then multiply by the numerator."])
    if problem.skill == "percentages":
        p, n = problem.exprs[0].split("/100*")
        return _value_key(problem, f"What is {p}% of {n}?", value,
                          [f"{p}% means {p}/100.", f"Multiply {n} by {p}/100.", f"{n} / 100 = {format_value(sympy.Rational(n) / 100)}; multiply that by {p}."])
    if problem.var == "average":
        total = parse_math(problem.exprs[0].split(")/")[0] + ")")
        count = problem.exprs[0].rsplit("/", 1)[1]
        return _value_key(problem, f"What is the average of {problem.exprs[0].split(')/')[0][1:]}?", value,
                          [f"Add the numbers: the sum is {format_value(total)}.", f"Divide the sum by how many numbers there are ({count})."])
    hints = ["Work out brackets first, then powers, then multiplication and division, then addition and subtraction."]
    dens = [int(r.q) for r in expr.atoms(sympy.Rational) if not isinstance(r, sympy.Integer)]
    if dens:
        lcm = sympy.ilcm(*dens) if len(dens) > 1 else dens[0]
        hints = [f"Write every fraction with the common denominator {lcm}.", "Then add or subtract the numerators and keep the denominator.", "Simplify the result if you can."]
    return _value_key(problem, f"What is {problem.exprs[0]}?", value, hints)


def _solve_transform(problem: Problem) -> Key | None:
    expr = parse_math(problem.exprs[0])
    skill = problem.skill
    if skill == "factor":
        value = sympy.factor(expr)
        hints = ["Look for a factor common to every term first.",
                 "For a quadratic x^2 + bx + c, find two numbers that multiply to c and add up to b.",
                 "Check by multiplying your brackets back out."]
        form = "factored"
    elif skill == "expand":
        value = sympy.expand(expr)
        hints = ["Multiply every term of the first bracket by every term of the second.",
                 "Then collect like terms (the same power of the variable).",
                 "Check by putting a number in for the variable in both forms."]
        form = "expanded"
    else:
        # cancel() settles rational expressions in milliseconds; simplify() only for the rest.
        value = sympy.cancel(expr) if _is_rational(expr) else sympy.simplify(expr)
        hints = ["Factor the numerator and the denominator where you can.",
                 "Cancel factors that appear in both.",
                 "Collect like terms in what is left."]
        form = "simplified"
    return _value_key(problem, f"{skill.capitalize()} {problem.exprs[0]}", value, hints, form=form)


def _is_rational(expr) -> bool:
    num, den = sympy.fraction(sympy.together(expr))
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    return bool(symbols) and num.is_polynomial(*symbols) and den.is_polynomial(*symbols)


def _solve_derivative(problem: Problem) -> Key | None:
    expr = parse_math(problem.exprs[0])
    x = _var(problem, expr)
    value = sympy.diff(expr, x)
    terms = sympy.Add.make_args(sympy.expand(expr)) if expr.is_polynomial(x) else (expr,)
    hints = ["Differentiate term by term." if len(terms) > 1 else "Find which rule fits the whole expression."]
    if expr.is_polynomial(x):
        hints.append(f"Power rule: the derivative of {x}^n is n*{x}^(n-1); a constant's derivative is 0.")
    elif any(isinstance(a, sympy.Mul) for a in [expr]) and len([f for f in sympy.Mul.make_args(expr) if f.has(x)]) > 1:
        hints.append("It is a product: (uv)' = u'v + uv'.")
    else:
        hints.append("Use the chain rule: derivative of the outside times derivative of the inside.")
    first = terms[0]
    hints.append(f"The derivative of {format_value(first)} is {format_value(sympy.diff(first, x))}.")
    return _value_key(problem, f"Find the derivative of {problem.exprs[0]} with respect to {x}", value, hints, var=x.name)


def _solve_integral(problem: Problem) -> Key | None:
    expr = parse_math(problem.exprs[0])
    x = _var(problem, expr)
    anti = sympy.integrate(expr, x)
    if anti.has(sympy.Integral):
        return None
    terms = sympy.Add.make_args(sympy.expand(expr))
    hints = ["Integrate term by term: the integral of x^n is x^(n+1)/(n+1)."]
    hints.append(f"An antiderivative of {format_value(terms[0])} is {format_value(sympy.integrate(terms[0], x))}.")
    if problem.lower is not None and problem.upper is not None:
        a, b = parse_math(problem.lower), parse_math(problem.upper)
        value = sympy.simplify(anti.subs(x, b) - anti.subs(x, a))
        hints.append(f"Then evaluate F({problem.upper}) - F({problem.lower}), where F is the antiderivative.")
        return _value_key(problem, f"Integrate {problem.exprs[0]} from {problem.lower} to {problem.upper}", value, hints, var=x.name)
    hints.append("Remember the constant of integration, + C.")
    return _value_key(problem, f"Integrate {problem.exprs[0]} d{x}", anti, hints, form="antiderivative",
                      integrand=format_value(expr), var=x.name)


def _solve_limit(problem: Problem) -> Key | None:
    expr = parse_math(problem.exprs[0])
    x = _var(problem, expr)
    point = parse_math(problem.upper or "0")
    value = sympy.limit(expr, x, point)
    if value.has(sympy.Limit) or value is sympy.nan:
        return None
    hints = [f"Try putting {x} = {problem.upper} straight into the expression."]
    num, den = sympy.fraction(sympy.together(expr))
    if den.has(x) and num.subs(x, point) == 0 and den.subs(x, point) == 0:
        hints.append("That gives 0/0: factor the top and the bottom and cancel the common factor.")
        hints.append(f"After cancelling, the expression is {format_value(sympy.cancel(expr))}; now substitute.")
    else:
        hints.append("If that gives a number, that number is the limit.")
    return _value_key(problem, f"Find the limit of {problem.exprs[0]} as {x} -> {problem.upper}", value, hints, var=x.name)


_SOLVERS = {
    "arithmetic": _solve_arith,
    "fractions": _solve_arith,
    "percentages": _solve_arith,
    "linear": _solve_equations,
    "quadratic": _solve_equations,
    "system": _solve_equations,
    "simplify": _solve_transform,
    "expand": _solve_transform,
    "factor": _solve_transform,
    "derivative": _solve_derivative,
    "integral": _solve_integral,
    "limit": _solve_limit,
}


def first_math(text: str) -> str:
    """The math span that starts ``text`` (used to read short answers)."""
    return leading_math(text)
