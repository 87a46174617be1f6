"""Common LaTeX and Unicode math to plain text that the parser reads (no sympy here).

``\\frac{1}{2}`` -> ``((1)/(2))``, ``\\sqrt{x}`` -> ``sqrt(x)``, ``x^{2}`` -> ``x^(2)``,
``\\cdot``/``\\times`` -> ``*``, ``\\int_0^1 f\\,dx`` -> ``integral of f dx from 0 to 1``,
``\\lim_{x \\to 0} f`` -> ``limit of f as x -> 0``, ``\\frac{d}{dx}`` -> ``derivative of``.
Every other command is left as it is, so the parser rejects it: LaTeX a student writes is
text to read, never something to run. One pass over the input, with a brace matcher; the
input is capped before it gets here.
"""

from __future__ import annotations

import re

#: A written fraction next to a division sign is one number: "5/6 ÷ 1/3" is (5/6)/(1/3).
_SIMPLE_FRACTION = re.compile(r"(?<![\w.)/^])(\d+(?:\.\d+)?\s*/\s*\d+(?:\.\d+)?)(?![\w.(/^])")

_SIMPLE = {
    "cdot": "*", "times": "*", "div": "/", "pi": "pi", "infty": "oo", "ln": "ln", "log": "log",
    "sin": "sin", "cos": "cos", "tan": "tan", "sec": "sec", "csc": "csc", "cot": "cot", "exp": "exp",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "left": "", "right": "", ",": " ", ";": " ", "!": "", ":": " ", "quad": " ", "qquad": " ", " ": " ",
    "le": "<=", "leq": "<=", "ge": ">=", "geq": ">=", "to": "->", "rightarrow": "->", "approx": "~",
    "displaystyle": "", "mathrm": "", "text": "", "operatorname": "", "dx": " dx",
}
_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u22c5": "*", "\u00b7": "*", "\u00f7": "/",
    "\u00b2": "^2", "\u00b3": "^3", "\u03c0": "pi", "\u221e": "oo", "\u2192": "->", "\u2264": "<=",
    "\u2265": ">=", "\u2260": "!=", "\u2248": "~", "\u2044": "/", "\u00bd": "(1/2)", "\u00bc": "(1/4)",
    "\u00be": "(3/4)", "\u221a": " sqrt ",
}
_FRACS = {"frac", "dfrac", "tfrac", "cfrac"}


def _group(text: str, i: int) -> tuple[str, int]:
    """The argument starting at ``i`` (a ``{...}`` group or one character) and the index after it."""
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return "", i
    if text[i] != "{":
        if text[i] == "\\":
            j = i + 1
            while j < n and text[j].isalpha():
                j += 1
            return text[i:j], j
        return text[i], i + 1
    depth = 0
    for j in range(i, n):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    return text[i + 1 :], n


def _script(text: str, i: int) -> tuple[str | None, str | None, int]:
    """Optional ``_{low}`` and ``^{high}`` (either order) after a command."""
    low = high = None
    for _ in range(2):
        j = i
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] in "_^":
            arg, i = _group(text, j + 1)
            if text[j] == "_":
                low = arg
            else:
                high = arg
    return low, high, i


def latex_to_plain(text: str) -> str:
    """Plain math text from LaTeX and Unicode math; unknown commands are kept (and rejected
    later by the parser)."""
    if "\u00f7" in text or "\\div" in text:
        text = _SIMPLE_FRACTION.sub(r"(\1)", text)
    for sym, plain in _UNICODE.items():
        if sym in text:
            text = text.replace(sym, plain)
    if "\\" not in text and "$" not in text and "{" not in text:
        return text
    return _convert(text.replace("$", " ").replace("\\(", " ").replace("\\)", " ")
                    .replace("\\[", " ").replace("\\]", " "))


def _convert(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "^" and i + 1 < n and text[i + 1] == "{":
            arg, i = _group(text, i + 1)
            out.append("^(" + _convert(arg) + ")")
            continue
        if ch in "{}":
            out.append("(" if ch == "{" else ")")
            i += 1
            continue
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n and text[j].isalpha():
            j += 1
        if j == i + 1 and j < n:  # \, \; \! \:
            j += 1
        name = text[i + 1 : j]
        if name in _FRACS:
            num, k = _group(text, j)
            den, k = _group(text, k)
            if num.strip() == "d" and den.strip().startswith("d") and len(den.strip()) == 2:
                out.append(f" derivative with respect to {den.strip()[1]} of ")
            else:
                out.append(f"(({_convert(num)})/({_convert(den)}))")
            i = k
        elif name == "sqrt":
            k = j
            root = None
            if k < n and text[k] == "[":
                end = text.find("]", k)
                if end > 0:
                    root, k = text[k + 1 : end], end + 1
            arg, k = _group(text, k)
            out.append(f"sqrt({_convert(arg)})" if root is None else f"(({_convert(arg)})^(1/({_convert(root)})))")
            i = k
        elif name == "int":
            low, high, k = _script(text, j)
            out.append(" integral of ")
            rest = _convert(text[k:]).rstrip()
            end = rest.rstrip("?.!")
            if low is not None and high is not None:
                end = f"{end} from {_convert(low)} to {_convert(high)}"
            out.append(end + rest[len(rest.rstrip("?.!")):])
            break
        elif name == "lim":
            low, _, k = _script(text, j)
            rest = _convert(text[k:]).rstrip()
            end = rest.rstrip("?.!")
            point = _convert(low or "").replace("->", " -> ")
            out.append(f" limit of {end} as {point} {rest[len(end):]}")
            break
        elif name in ("mathrm", "text", "operatorname", "mathbf", "mathit"):
            arg, i = _group(text, j)
            out.append(" " + arg + " ")
        elif name in _SIMPLE:
            out.append(" " + _SIMPLE[name] + " " if name not in ("left", "right") else "")
            i = j
        else:
            out.append(text[i:j])  # unknown command: kept, so the parser refuses it
            i = j
    return "".join(out)
