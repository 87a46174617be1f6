"""Inputs that stress every text pattern, and every function that runs patterns on student,
history or model text. Shared by the fuzz test (``test_text_fuzz.py``) and the benchmark
(``bench/bench_text.py``), so both look at the same functions.

The atoms are pieces the patterns react to: runs of them make a backtracking pattern rescan
the same run from every position (what made a 20 KB history message freeze the server).
"""

from __future__ import annotations

from collections.abc import Callable

from mimir.errors import InvalidInputError
from mimir.models.base import ChatMessage
from mimir.tutor import graph, postprocess, rules, text
from mimir.tutor.mathstep import ECHOES

ATOMS: tuple[str, ...] = (
    "\n", " ", "\t", "a", "A", "1", "1.", "1,", "1,000", ".", "-", "a-", "a'", "a.", "a 1 ", "a: 1, ",
    "$", "$$", "$a", "{", "}", '{"a":', "[1,", "(", "(1,", "\\", "\\[", "\\(", "\\begin{a}", "\\frac{",
    "<|", "<|im_start|>", "[INST]", "</s>", "1. a?\n", "(a) ", "user: ", "assistant: ", "# ", "?", "!",
    "x^", "3x", "= ", "%", "1 %", "cm ", "Jan ", "2019 ", "\u2013", "and ", "of ", "give me ", "short ",
    "chart of ", "make a bar chart of ", "\u00e9", "e\u0301", "\x00", "\u202e", "\ud800", "\ud83d\ude00",
)
#: Long runs are made of these, after an atom or between copies of one.
FILLERS: tuple[str, ...] = ("", " ", "\n", "a", "1")


def adversarial_inputs(size: int) -> dict[str, str]:
    """Named strings of about ``size`` characters: each atom repeated, each atom followed by
    a run of a filler, and each atom alternating with a filler."""
    out: dict[str, str] = {}
    for atom in ATOMS:
        for filler in FILLERS:
            unit = atom + filler
            out[f"({unit!r})*"] = (unit * (size // len(unit) + 1))[:size]
            if filler:
                out[f"{atom!r}+{filler!r}*"] = atom + filler * (size - len(atom))
    return out


def _history(content: str) -> list[ChatMessage]:
    return [ChatMessage("user", "help"), ChatMessage("assistant", content)]


def _clean_user(s: str):
    try:
        return text.clean_user_text(s)
    except InvalidInputError:
        return None  # an empty message is refused before any pattern runs


#: name -> function of one string; every rule, graph, postprocess and cleaning function.
TEXT_FUNCTIONS: dict[str, Callable[[str], object]] = {
    "rules.detect_math": rules.detect_math,
    "rules.tool_rules": rules.tool_rules,
    "rules.routing_rules(message)": rules.routing_rules,
    "rules.routing_rules(history)": lambda s: rules.routing_rules("I think it is 4", _history(s)),
    "rules.decide_flags": lambda s: rules.decide_flags(s, _history(s)),
    "rules.asked_practice_question": rules.asked_practice_question,
    "rules.turn_has_math": lambda s: rules.turn_has_math("ok", _history(s)),
    "graph.find_chart_data": graph.find_chart_data,
    "graph.parse_chart_json": graph.parse_chart_json,
    "postprocess.clean_response": postprocess.clean_response,
    "postprocess.clean_response(truncated)": lambda s: postprocess.clean_response(s, truncated=True),
    "postprocess.strip_special_tokens": postprocess.strip_special_tokens,
    "postprocess.strip_role_markers": postprocess.strip_role_markers,
    "postprocess.remove_repetition": postprocess.remove_repetition,
    "postprocess.trim_cut_off": postprocess.trim_cut_off,
    "postprocess.collapse_loops": lambda s: postprocess.collapse_loops(s.split()),
    "postprocess.drop_echoes": lambda s: postprocess.drop_echoes(s, ECHOES),
    "text.clean_user_text": _clean_user,
    "text.clean_history": lambda s: text.clean_history(_history(s)),
}
