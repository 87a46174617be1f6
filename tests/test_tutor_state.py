from __future__ import annotations

import pytest

from mimir.tutor.state import THINKING_FLAGS, Flag, PromptState

ELEVEN = {
    "MATH_THINKING", "QUESTION_ANSWER_DESIGN", "REASONING_THINKING", "VAGUE_INPUT",
    "USER_UNDERSTANDING", "GENERAL_FORMATTING", "LATEX_FORMATTING", "GUIDING_TEACHING",
    "STRUCTURE_PRACTICE_QUESTIONS", "PRACTICE_QUESTION_FOLLOWUP", "TOOL_USE_ENHANCEMENT",
}


def test_exactly_the_eleven_flags():
    assert {f.value for f in Flag} == ELEVEN
    assert THINKING_FLAGS == {Flag.MATH_THINKING, Flag.QUESTION_ANSWER_DESIGN, Flag.REASONING_THINKING}


def test_set_reset_and_active_sorted():
    state = PromptState()
    assert state.active() == []
    state.set(Flag.TOOL_USE_ENHANCEMENT)
    state.set("latex_formatting")
    state.set(Flag.GENERAL_FORMATTING)
    assert state.active() == ["GENERAL_FORMATTING", "LATEX_FORMATTING", "TOOL_USE_ENHANCEMENT"]
    assert state.is_on("TOOL_USE_ENHANCEMENT") and Flag.LATEX_FORMATTING in state
    state.set(Flag.LATEX_FORMATTING, on=False)
    assert not state.is_on(Flag.LATEX_FORMATTING)
    state.reset()
    assert state.active() == [] and not any(state.as_dict().values())
    assert list(state.as_dict()) == [f.value for f in Flag]


def test_unknown_flag_is_rejected_with_valid_names():
    state = PromptState()
    with pytest.raises(ValueError, match="VAUGE_INPUT.*VAGUE_INPUT"):
        state.set("VAUGE_INPUT")
    assert "VAUGE_INPUT" not in state
