"""Fuzzing every function that runs patterns on student, history or model text (hypothesis).

Inputs are built from the pieces the patterns react to (``adversarial_text.ATOMS``), long runs
of them, and arbitrary text, up to the caps (8,000 characters for a message). Every function
must return normally with sane output. Speed is checked by ``bench/bench_text.py``, not here.
"""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from adversarial_text import ATOMS, FILLERS, TEXT_FUNCTIONS  # noqa: E402
from mimir.models.base import ChatMessage  # noqa: E402
from mimir.tutor import graph, postprocess, rules, text  # noqa: E402

CAP = text.DEFAULT_MAX_CHARS

pieces = st.one_of(st.sampled_from(ATOMS), st.text(max_size=12))
runs = st.builds(
    lambda atom, filler, count: atom + filler * count,
    st.sampled_from(ATOMS), st.sampled_from(FILLERS), st.integers(0, CAP),
)
repeats = st.builds(lambda unit, count: (unit * count)[: CAP + 100], st.lists(pieces, min_size=1, max_size=4).map("".join),
                    st.integers(1, CAP))
adversarial = st.one_of(st.lists(st.one_of(pieces, runs), max_size=8).map("".join), repeats)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", sorted(TEXT_FUNCTIONS))
@FUZZ
@given(s=adversarial)
def test_every_text_function_handles_adversarial_input(name, s):
    TEXT_FUNCTIONS[name](s)  # returns normally: no exception, no error for any input


@FUZZ
@given(s=adversarial)
def test_cleaned_text_is_capped_encodable_and_free_of_controls(s):
    try:
        clean = text.clean_user_text(s)
    except Exception as exc:  # only the empty message is refused
        assert type(exc).__name__ == "InvalidInputError"
        return
    assert len(clean.text) <= CAP + len(" [...]")
    clean.text.encode("utf-8")  # no lone surrogate survives
    assert "\x00" not in clean.text and "<|im_start|>" not in clean.text
    for message in text.clean_history([ChatMessage("assistant", s)] * 3, max_messages=2):
        assert len(message.content) <= CAP + len(" [...]")
        message.content.encode("utf-8")


@FUZZ
@given(s=adversarial)
def test_cleaned_reply_keeps_no_hole_markers(s):
    out = postprocess.clean_response(s, truncated=True)
    assert "\x00" not in out
    assert len(out) <= len(s.replace("\r\n", "\n")) + 1


@FUZZ
@given(s=adversarial)
def test_chart_data_found_is_valid(s):
    data = graph.find_chart_data(s)
    if data is not None:
        assert 2 <= data.size <= graph.MAX_POINTS
        assert len(data.labels) == len(data.values)


def test_the_twenty_kilobyte_newline_history_is_read_in_bounded_pieces():
    """The request that froze the server: an assistant message of 20,000 newlines."""
    history = [ChatMessage("user", "hi"), ChatMessage("assistant", "\n" * 20000 + "1. What is 2+2?\n2. And 3+3?")]
    cleaned = text.clean_history(history)
    assert cleaned[-1].content == "1. What is 2+2?\n2. And 3+3?"
    assert rules.asked_practice_question("\n" * 20000 + "1. What is 2+2?\n2. And 3+3?")
    assert rules.bounded("a" * 10000) == "a" * 1000 + "\n" + "a" * 1000
