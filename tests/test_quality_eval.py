"""``mimir eval --quality`` as a user runs it: a real subprocess, the real math worker, and a
tiny subset of the shipped cases answered by the bundled model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from mimir.errors import EvalCaseError
from mimir.tutor.quality import leaked, load_quality_cases, parse_quality_case

SHIPPED = Path(str(resources.files("mimir").joinpath("data", "quality_cases.jsonl")))
HOLDOUT = Path(str(resources.files("mimir").joinpath("data", "quality_holdout.jsonl")))
HOLDOUT2 = Path(str(resources.files("mimir").joinpath("data", "quality_holdout2.jsonl")))
HOLDOUT3 = Path(str(resources.files("mimir").joinpath("data", "quality_holdout3.jsonl")))


def mimir(*args: str, config: Path | None = None, timeout: float = 900):
    cmd = [sys.executable, "-m", "mimir.cli.main"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def test_shipped_case_sets_cover_every_skill_with_enough_cases():
    tuning, holdout = load_quality_cases(SHIPPED), load_quality_cases(HOLDOUT)
    every = tuning + holdout
    verdicts = [c for c in every if c.kind == "verdict"]
    responses = [c for c in every if c.kind == "response"]
    assert len(verdicts) >= 80 and len(responses) >= 20
    assert {c.expect["verdict"] for c in verdicts} == {"correct", "incorrect", "unknown"}
    questions = " ".join(c.history[-1].content.lower() for c in verdicts if c.history)
    for word in ("solve", "system", "x^2", "derivative", "integrate", "limit", "simplify", "expand", "factor",
                 "%", "/", "average"):
        assert word in questions or word in " ".join(c.message.lower() for c in every), word
    # The held-back part alone: big enough to report, and it covers every skill too.
    held_verdicts = [c for c in holdout if c.kind == "verdict"]
    assert len(held_verdicts) >= 40 and sum(c.kind == "response" for c in holdout) >= 8
    held_questions = " ".join(c.history[-1].content.lower() for c in held_verdicts if c.history)
    for word in ("solve", "system", "x^2", "derivative", "integra", "from", "limit", "simplify", "expand", "factor",
                 "%", "/", "practice question"):
        assert word in held_questions, word


def _held_back_set(path: Path, earlier: list[Path], verdicts_min: int, responses_min: int, words: tuple[str, ...]):
    """A held-back set parses, has enough cases of each kind, covers every skill and copies no
    question or response message from the sets written before it. Returns its verdict cases."""
    held = load_quality_cases(path)
    verdicts = [c for c in held if c.kind == "verdict"]
    responses = [c for c in held if c.kind == "response"]
    assert len(verdicts) >= verdicts_min and len(responses) >= responses_min
    assert {c.expect["verdict"] for c in verdicts} == {"correct", "incorrect", "unknown"}
    questions = " ".join(c.history[-1].content.lower() for c in verdicts if c.history)
    for word in words:
        assert word in questions, word
    assert any(c.history and "practice question" in c.history[-1].content.lower() for c in responses)
    # New wording: no question or response message is copied from the earlier sets.
    before = [case for file in earlier for case in load_quality_cases(file)]
    seen = {c.history[-1].content for c in before if c.history} | {c.message for c in before if c.kind == "response"}
    assert not [c for c in held if (c.history and c.history[-1].content in seen)
                or (c.kind == "response" and c.message in seen)]
    return verdicts


def test_second_held_back_set_is_new_and_covers_every_skill():
    verdicts = _held_back_set(HOLDOUT2, [SHIPPED, HOLDOUT], 60, 12, (
        "solve", "system", "x^2", "derivative", "differentiate", "integra", "from", "\\int", "limit",
        "simplify", "expand", "factor", "%", "percent", "/", "average", "practice question"))
    assert any(len(c.history) > 1 for c in verdicts)  # a practice question after the student's request


def test_third_held_back_set_is_new_and_covers_every_skill():
    verdicts = _held_back_set(HOLDOUT3, [SHIPPED, HOLDOUT, HOLDOUT2], 100, 10, (
        "solve", "system", "simultaneously", "x^2", "derivative", "differentiate", "d/dx", "integra",
        "antiderivative", "from", "\\int", "limit", "\\lim", "simplify", "expand", "factor", "%", "percent",
        "÷", "×", "/", "mean", "practice question"))
    assert any(len(c.history) > 2 for c in verdicts)  # a retry after a hint, several turns in


def test_leaks_compare_without_whitespace_and_respect_number_ends():
    assert leaked("So $x=5$ is the answer.", ["x = 5"])
    assert leaked("X =  5.", ["x = 5"])
    assert not leaked("so x = 50 apples", ["x = 5"])
    assert not leaked("x = ?", ["x = 5"])


def test_bad_quality_cases_name_the_problem():
    with pytest.raises(EvalCaseError, match="kind"):
        parse_quality_case('{"kind": "essay", "message": "hi"}')
    with pytest.raises(EvalCaseError, match="verdict"):
        parse_quality_case('{"kind": "verdict", "message": "x = 4", "expect": {"verdict": "maybe"}}')
    with pytest.raises(EvalCaseError, match="no_leak"):
        parse_quality_case('{"kind": "response", "message": "hi", "expect": {"no_leak": "x = 5"}}')


def test_eval_quality_runs_verdicts_and_a_real_turn_on_the_bundled_model(tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text("[tutor]\nresponse_max_tokens = 48\nthinking = false\n")
    shipped = [json.loads(line) for line in SHIPPED.read_text().splitlines() if line.strip()]
    verdicts = [c for c in shipped if c["kind"] == "verdict"]
    picked = [
        next(c for c in verdicts if c["expect"]["verdict"] == "correct"),
        next(c for c in verdicts if c["expect"]["verdict"] == "incorrect"),
        next(c for c in verdicts if c["expect"]["verdict"] == "unknown"),
        {"kind": "verdict", "history": [{"role": "assistant", "content": "Solve 2x + 3 = 11."}],
         "message": "x = 4", "expect": {"verdict": "incorrect"}},  # a wrong label, to see it counted
        {"kind": "response", "history": [], "message": "What is the average of 82 and 91?", "expect": {"no_leak": []}},
    ]
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(json.dumps(c) for c in picked) + "\n")
    out = mimir("eval", "--quality", str(cases), "--json", config=config)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [c["kind"] for c in report["cases"]] == ["verdict"] * 4 + ["response"]
    assert [c["case"] for c in report["cases"]] == [0, 1, 2, 3, 4]
    assert [c["verdict"] for c in report["cases"][:4]] == ["correct", "incorrect", "unknown", "correct"]
    response = report["cases"][4]
    assert set(response) == {"case", "kind", "response", "leaked", "false_statements", "repeated_sentences"}
    assert response["response"] and response["false_statements"] == 0 and response["leaked"] is False
    metrics = report["metrics"]
    assert metrics["verdict_accuracy"] == 0.75 and metrics["confidently_wrong"] == 1
    assert metrics["leak_rate"] == 0.0 and metrics["responses_with_false_equality"] == 0
    text = mimir("eval", "--quality", str(cases), config=config)
    assert "verdict accuracy" in text.stdout and "75.0%" in text.stdout and "line 4" in text.stdout
