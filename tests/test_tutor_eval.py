from __future__ import annotations

import json
from pathlib import Path

import pytest

from mimir.errors import EvalCaseError, InvalidInputError
from mimir.tutor.evaluation import (
    EvalCase,
    bundled_cases_path,
    evaluate,
    format_report,
    load_cases,
    score,
)
from mimir.tutor.rules import decide_flags
from mimir.tutor.state import Flag, PromptState

HELDOUT = Path(__file__).parent / "data" / "heldout_cases.jsonl"
ROUTING = {
    Flag.STRUCTURE_PRACTICE_QUESTIONS, Flag.VAGUE_INPUT, Flag.USER_UNDERSTANDING,
    Flag.PRACTICE_QUESTION_FOLLOWUP, Flag.GUIDING_TEACHING, Flag.TOOL_USE_ENHANCEMENT,
}


def test_shipped_cases_are_many_and_cover_every_routing_flag():
    cases = load_cases(bundled_cases_path())
    assert len(cases) >= 70
    for flag in ROUTING | {Flag.LATEX_FORMATTING}:
        values = [c.expect[flag] for c in cases if flag in c.expect]
        assert True in values and False in values, flag
    assert sum(1 for c in cases if c.history) >= 10  # multi-turn cases
    assert len(load_cases(HELDOUT)) >= 30


@pytest.mark.parametrize("path", [bundled_cases_path(), HELDOUT], ids=["shipped", "heldout"])
def test_rules_reach_ninety_percent(path):
    report = evaluate(load_cases(path), decide_flags)
    assert report.checked > 150
    assert report.accuracy >= 0.9, format_report(report)


def test_score_counts_precision_recall_and_mismatches():
    cases = [
        EvalCase("a", (), {Flag.VAGUE_INPUT: True, Flag.TOOL_USE_ENHANCEMENT: False}, line=1),
        EvalCase("b", (), {Flag.VAGUE_INPUT: False}, line=2),
        EvalCase("c", (), {Flag.VAGUE_INPUT: True}, line=3),
    ]
    predicted = [
        {Flag.VAGUE_INPUT, Flag.TOOL_USE_ENHANCEMENT},  # right, wrong
        PromptState(["VAGUE_INPUT"]),  # wrong (false positive)
        [],  # wrong (false negative)
    ]
    report = score(cases, predicted)
    assert (report.checked, report.correct) == (4, 1)
    assert report.accuracy == pytest.approx(0.25)
    vague = next(s for s in report.per_flag if s.flag is Flag.VAGUE_INPUT)
    assert (vague.true_pos, vague.false_pos, vague.false_neg, vague.true_neg) == (1, 1, 1, 0)
    assert vague.precision == pytest.approx(0.5) and vague.recall == pytest.approx(0.5)
    tool = next(s for s in report.per_flag if s.flag is Flag.TOOL_USE_ENHANCEMENT)
    assert tool.precision == 0.0 and tool.recall is None
    assert [(m.line, m.flag, m.expected) for m in report.mismatches] == [
        (1, Flag.TOOL_USE_ENHANCEMENT, False), (2, Flag.VAGUE_INPUT, False), (3, Flag.VAGUE_INPUT, True)
    ]
    text = format_report(report)
    assert "VAGUE_INPUT" in text and "50.0%" in text and "25.0% (1/4" in text
    assert "line 2: VAGUE_INPUT expected off, got on" in text
    data = report.as_dict()
    assert data["flags"]["TOOL_USE_ENHANCEMENT"]["recall"] is None
    json.dumps(data)
    with pytest.raises(ValueError):
        score(cases, predicted[:2])


def test_load_cases_reads_history_and_skips_blank_lines(tmp_path: Path):
    path = tmp_path / "cases.jsonl"
    lines = [
        json.dumps({"message": "b", "history": [{"role": "assistant", "content": "Question 1: a or b?"}],
                    "expect": {"practice_question_followup": True}}),
        "",
        json.dumps({"message": "hi", "expect": {"VAGUE_INPUT": True}}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cases = load_cases(path)
    assert [c.line for c in cases] == [1, 3]
    assert cases[0].history[0].role == "assistant"
    assert cases[0].expect == {Flag.PRACTICE_QUESTION_FOLLOWUP: True}


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"message": "", "expect": {"VAGUE_INPUT": true}}', "non-empty string"),
        ('{"message": "x", "expect": {}}', "non-empty object"),
        ('{"message": "x", "expect": {"VAUGE_INPUT": true}}', "unknown prompt-state flag"),
        ('{"message": "x", "expect": {"VAGUE_INPUT": "yes"}}', "true or false"),
        ('{"message": "x", "history": [{"role": "bot", "content": "y"}], "expect": {"VAGUE_INPUT": true}}', "history\\[0\\]"),
        ('{"message": "x", "expected": {"VAGUE_INPUT": true}}', "unknown key 'expected'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line, problem):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"message": "ok", "expect": {"VAGUE_INPUT": False}})
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(EvalCaseError, match=problem) as info:
        load_cases(path)
    assert info.value.line == 2 and f"{path}:2:" in str(info.value)
    assert isinstance(info.value, InvalidInputError)


def test_empty_or_missing_file_is_an_error(tmp_path: Path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(EvalCaseError, match="no cases"):
        load_cases(tmp_path / "empty.jsonl")
    with pytest.raises(EvalCaseError, match="cannot read"):
        load_cases(tmp_path / "missing.jsonl")
