"""The math engine's pure functions (sympy in this process): parsing, problems, answer
checking by equivalence, practice keys, hint ladders, claim checking."""

from __future__ import annotations

import pytest

from mimir.mathcheck.answers import check_answer
from mimir.mathcheck.claims import check_claims
from mimir.mathcheck.engine import analyze
from mimir.mathcheck.parse import MathParseError, parse_math
from mimir.mathcheck.practice import make_practice, skill_in
from mimir.mathcheck.problems import SKILLS, find_problem, solve
from mimir.mathcheck.spans import equalities


def key_for(question: str):
    problem = find_problem(question)
    assert problem is not None, question
    key = solve(problem)
    assert key is not None, question
    return key


def verdict(question: str, reply: str) -> str:
    return check_answer(key_for(question), reply).verdict


@pytest.mark.parametrize("text,value", [
    ("2x^2 + 3x", "2*x**2 + 3*x"), ("2*x**2+3*x", "2*x**2 + 3*x"), ("3(x+1)", "3*x + 3"),
    ("1/2", "1/2"), ("0.5", "1/2"), ("25%", "1/4"), ("\\frac{3}{4}", "3/4"), ("\\sqrt{16}", "4"),
    ("x \\cdot y", "x*y"), ("5!", "120"), ("2^{10}", "1024"), ("\u221a(9) \u00d7 2", "6"),
])
def test_parse_reads_plain_text_powers_implicit_products_and_latex(text, value):
    assert str(parse_math(text)) == value


@pytest.mark.parametrize("text", [
    "__import__('os')", "x.__class__", "[x]", "lambda: 1", "\\input{/etc/passwd}",
    "\\immediate\\write18{rm -rf /}", "open", "x" * 500, "",
])
def test_parse_refuses_code_commands_and_oversized_input(text):
    with pytest.raises(MathParseError):
        parse_math(text)


@pytest.mark.parametrize("question,skill,answer", [
    ("Solve 2x + 3 = 11.", "linear", "x = 4"),
    ("Solve 3x - y = 7 and 2x + 3y = 1", "system", "x = 2, y = -1"),
    ("Solve x^2 - 5x + 6 = 0", "quadratic", "x = 2 or x = 3"),
    ("What is the derivative of x^3 + 2x?", "derivative", "3x^2 + 2"),
    ("Integrate 3x^2 from 0 to 2", "integral", "8"),
    ("integrate 2x dx", "integral", "x^2 + C"),
    ("Find the limit of (x^2-1)/(x-1) as x approaches 1", "limit", "2"),
    ("Factor x^2 + 5x + 6", "factor", "(x + 2)(x + 3)"),
    ("Expand (x+2)(x+3)", "expand", "x^2 + 5x + 6"),
    ("Simplify (x^2-1)/(x-1)", "simplify", "x + 1"),
    ("What is 15% of 80?", "percentages", "12"),
    ("What is the average of 82 and 91?", "arithmetic", "86.5"),
    ("What is 3/4 + 1/2?", "fractions", "1.25"),
    ("$\\int_0^1 x^2 \\, dx$", "integral", "1/3"),
    ("Find $\\frac{d}{dx} x^3$", "derivative", "3x^2"),
    ("What is $\\lim_{x \\to 0} \\frac{\\sin x}{x}$?", "limit", "1"),
])
def test_problems_are_recognised_and_solved_in_every_skill(question, skill, answer):
    key = key_for(question)
    assert key.skill == skill
    assert key.answer_text == answer
    assert len(key.hints) >= 2


def test_text_without_a_problem_gives_none():
    for text in ("What does cos, tan and sin do?", "What is summation?", "Tell me about the French revolution."):
        assert find_problem(text) is None


@pytest.mark.parametrize("question,reply,expected", [
    ("What is 1/4 + 1/4?", "1/2", "correct"),
    ("What is 1/4 + 1/4?", "0.5", "correct"),
    ("What is 1/4 + 1/4?", "2/4", "correct"),
    ("What is 1/4 + 1/4?", "50%", "correct"),
    ("What is 1/4 + 1/4?", "$\\frac{1}{2}$", "correct"),
    ("What is 1/4 + 1/4?", "0.25", "incorrect"),
    ("What is 1/3 + 1/3?", "0.67", "correct"),
    ("What is 1/3 + 1/3?", "0.6", "incorrect"),
    ("Solve 2x + 3 = 11.", "I think it's x = 4", "correct"),
    ("Solve 2x + 3 = 11.", "x=4.0", "correct"),
    ("Solve 2x + 3 = 11.", "x = 7", "incorrect"),
    ("Solve 3x - y = 7 and 2x + 3y = 1", "x=2, y=-1", "correct"),
    ("Solve 3x - y = 7 and 2x + 3y = 1", "y = -1 and x = 2", "correct"),
    ("Solve 3x - y = 7 and 2x + 3y = 1", "(2, -1)", "correct"),
    ("Solve 3x - y = 7 and 2x + 3y = 1", "x = 2, y = 1", "incorrect"),
    ("Solve x^2 - 5x + 6 = 0", "x = 3 or x = 2", "correct"),
    ("Solve x^2 - 5x + 6 = 0", "2 and 3", "correct"),
    ("Solve x^2 - 5x + 6 = 0", "x = 2", "incorrect"),
    ("What is the derivative of x^2 + 2x?", "2(x + 1)", "correct"),
    ("What is the derivative of x^2 + 2x?", "f'(x) = 2x + 2", "correct"),
    ("What is the derivative of x^2 + 2x?", "2x", "incorrect"),
    ("Integrate 2x dx", "x^2 + C", "correct"),
    ("Integrate 2x dx", "2x^2 + C", "incorrect"),
    ("Factor x^2 + 5x + 6", "(x+3)(x+2)", "correct"),
    ("Factor x^2 + 5x + 6", "x^2 + 5x + 6", "incorrect"),
    ("Expand (x+2)(x+3)", "(x+2)(x+3)", "incorrect"),
    ("Find the limit of (x^2-1)/(x-1) as x approaches 1", "2", "correct"),
    ("Solve 2x + 3 = 11.", "no idea", "unknown"),
    ("Solve 2x + 3 = 11.", "\\input{/etc/passwd}", "unknown"),
    ("Solve 2x + 3 = 11.", "z = 4", "unknown"),
])
def test_answers_are_checked_by_equivalence_in_every_format(question, reply, expected):
    assert verdict(question, reply) == expected


def test_an_incorrect_verdict_names_the_wrong_part_without_the_solution():
    result = check_answer(key_for("Solve 3x - y = 7 and 2x + 3y = 1"), "x = 2, y = 3")
    assert result.verdict == "incorrect" and result.wrong == ("y",)
    assert "-1" not in result.detail
    missing = check_answer(key_for("Solve 3x - y = 7 and 2x + 3y = 1"), "x = 2")
    assert missing.verdict == "incorrect" and missing.wrong == ("missing y",)


def test_hint_ladder_steps_through_the_solution_without_the_final_answer():
    key = key_for("Solve 4x - 7 = 13")
    assert key.hints[1] == "You should reach 4x = 20."
    assert all("x = 5" not in hint for hint in key.hints)
    out = {"hints_given": 0}
    for expected in key.hints[:2]:
        pending = {"question": key.statement, "key": key.as_dict(), "hints_given": out["hints_given"]}
        out = analyze({"message": "give me a hint", "pending": pending})
        assert out["hint"] == expected
    assert out["hints_given"] == 2


@pytest.mark.parametrize("skill", SKILLS)
def test_practice_questions_have_clean_keys_that_check_their_own_answer(skill):
    for seed in range(3):
        question, key = make_practice(skill, seed)
        assert find_problem(question) is not None, question
        assert key.skill == skill and key.hints
        answer = key.value if key.kind == "value" else ", ".join(
            f"{v} = {sol[v]}" for sol in key.solutions for v in key.variables
        )
        assert check_answer(key, answer).verdict == "correct", (question, answer)
        assert "." not in answer or key.kind == "value"  # integer roots and points


def test_practice_skill_comes_from_the_request():
    assert skill_in("give me practice questions on quadratic equations") == "quadratic"
    assert skill_in("quiz me on derivatives") == "derivative"
    assert skill_in("some percentage problems please") == "percentages"


def test_equalities_are_found_inside_prose():
    found = [(c.left, c.right) for c in equalities("So 82 + 91 = 173, and (82+91)/2 = 82. Then x = 2, y = -1.")]
    assert found == [("82 + 91", "173"), ("(82+91)/2", "82"), ("x", "2"), ("y", "-1")]


def test_false_arithmetic_is_corrected_in_the_text():
    report = check_claims("The sum is 82 + 91 = 173, so the average is (82+91)/2 = 82.")
    assert report.text == "The sum is 82 + 91 = 173, so the average is (82+91)/2 = 86.5."
    assert report.false == 1 and report.checked == 2
    prose = check_claims("The average of 82 and 91 is 82. Also 7 times 8 is 54, and 15% of 80 is 12.")
    assert prose.text == "The average of 82 and 91 is 86.5. Also 7 times 8 is 56, and 15% of 80 is 12."
    assert prose.false == 2


def test_rounded_decimals_and_latex_claims():
    assert check_claims("1/3 = 0.33 and $\\frac{3}{4} = 0.75$").false == 0
    assert check_claims("$\\frac{3}{4} = 0.9$").false == 1


def test_steps_are_judged_against_the_verified_solution():
    text = "Subtract 3x from both sides: 3x = 7. Then y = 3x - 7, so the final answer is 2x = 7."
    report = check_claims(text, [{"x": "2", "y": "-1"}])
    assert report.false == 2
    assert "~~3x = 7~~" in report.text and "~~2x = 7~~" in report.text
    assert "y = 3x - 7" in report.text and "~~y" not in report.text
    assert check_claims(report.text, [{"x": "2", "y": "-1"}]).false == 0  # struck steps are not re-counted


def test_guided_teaching_hides_the_final_answer():
    report = check_claims("Divide by 4, so x = 5.", [{"x": "5"}], hide=[{"x": "5"}])
    assert report.text == "Divide by 4, so x = ?."


def test_variables_named_a_and_rational_simplification():
    # Found by the held-back quality set: a lone "a" is a variable next to "=" or a number,
    # and simplifying a rational expression must not wait for sympy.simplify.
    assert verdict("Solve 2a + b = 7 and a - b = 2", "a = 3, b = 1") == "correct"
    assert verdict("Solve 2a + b = 7 and a - b = 2", "a=1, b=3") == "incorrect"
    assert verdict("Simplify (2x^2 + 4x)/(2x)", "x + 2") == "correct"
    assert verdict("Simplify (2x^2 + 4x)/(2x)", "x + 4") == "incorrect"
    assert [(c.left, c.right) for c in equalities("I think a = 3, but this is a test = fun.")] == [("a", "3")]


# Found while widening the tuning set with formats students write (quality_cases.jsonl).

def test_minus_words_sets_of_roots_and_named_points():
    assert verdict("What is -8 + 3?", "minus 5") == "correct"
    assert verdict("Solve 3x - y = 7 and 2x + 3y = 1", "x = 2 and y = minus 1") == "correct"
    assert verdict("Solve 3x - y = 7 and 2x + 3y = 1", "x=2 and y=-1") == "correct"
    assert verdict("Solve 3x - y = 7 and 2x + 3y = 1", "(x, y) = (2, -1)") == "correct"
    assert verdict("Solve 3x - y = 7 and 2x + 3y = 1", "(x,y) = (-1,2)") == "incorrect"
    assert verdict("Solve x + y = 5 and x - y = 1", "x=3 y=2") == "correct"
    assert verdict("Solve x^2 - 2x - 15 = 0", "x = {-3, 5}") == "correct"
    assert verdict("Solve x^2 - 2x - 15 = 0", "x = \\{-3, 5\\}") == "correct"
    assert verdict("Solve x^2 - 2x - 15 = 0", "x = {3, 5}") == "incorrect"


def test_hedges_and_reasons_around_the_answer():
    question = "Solve 4x + 2 = 2x + 10."
    assert verdict(question, "I got 4 but I'm not sure") == "correct"
    assert verdict(question, "x = 4 because 4*4+2 = 18 and 2*4+10 = 18") == "correct"
    assert verdict(question, "x = 5 because I subtracted") == "incorrect"
    assert verdict(question, "x ≈ 4") == "correct"


def test_ambiguous_or_foreign_letters_are_unknown_not_judged():
    # x2 could be x^2 or 2x; "4 cm" and "2y" bring letters the question does not have.
    assert verdict("Find the derivative of x^2.", "x2") == "unknown"
    assert verdict("Find the derivative of x^2.", "2y") == "unknown"
    assert verdict("Solve 2x + 3 = 11.", "x = 4 cm") == "unknown"
    assert verdict("Solve x^2 - 5x + 6 = 0", "x = 2, x = 3y") == "unknown"
    assert verdict("Integrate 3x^2 dx", "x^3 + C") == "correct"


def test_factored_form_with_a_number_factor_and_thousands_separators():
    # sympy turns 3*(2x + 3) into 6x + 9 when it evaluates, so the form test reads the key unevaluated.
    assert verdict("Factor 6x + 9.", "6x+9") == "incorrect"
    assert verdict("Factor 6x + 9.", "3(2x + 3)") == "correct"
    assert verdict("Compute 2^10.", "1,024") == "correct"
    assert verdict("Compute 2^10.", "1,000") == "incorrect"


@pytest.mark.parametrize("question,reply,expected", [
    ("What percentage of 50 is 10?", "20%", "correct"),
    ("What percentage of 50 is 10?", "20", "correct"),
    ("What percentage of 50 is 10?", "5%", "incorrect"),
    ("12 is what percent of 48?", "25 percent", "correct"),
    ("Express 3 as a percentage of 12.", "25%", "correct"),
    ("What is 1/3 of 27?", "9", "correct"),
    ("What is 1/3 of 27?", "3", "incorrect"),
    ("What is 3/4 of 20?", "15", "correct"),
])
def test_percent_of_a_whole_and_fraction_of_a_quantity(question, reply, expected):
    assert verdict(question, reply) == expected


def test_rewritings_of_a_factor_problem_are_judged_and_spaced_x_is_times():
    # Found in the tuning set's responses: "x^2 + 7x + 12 = (x + 4)(x + 9)" was not judged,
    # and "25% of 120 equals 0.25 x 120 = 30" had 0.25 "corrected" to 30 (x read as the end of
    # the value), which made a false "30 x 120 = 30".
    text = "So x^2 + 7x + 12 = (x + 4)(x + 9), or (x + 3)(x + 4) = x^2 + 7x + 12, and x^2 + 7x + 12 = 0."
    report = check_claims(text, identity="(x + 3)*(x + 4)")
    assert report.false == 1 and "~~x^2 + 7x + 12 = (x + 4)(x + 9)~~" in report.text
    assert check_claims(text).false == 0  # without a factor problem, equations are not judged
    report = check_claims("25% of 120 equals 0.25 x 120 = 30.")
    assert report.false == 0 and report.text == "25% of 120 equals 0.25 x 120 = 30."
    report = check_claims("So 3 x 4 = 13.")
    assert report.false == 1 and report.text == "So 3 x 4 = 12."
    assert check_claims("Then 2 x = 8.", [{"x": "4"}]).false == 0  # x is the unknown here


def test_found_by_the_blind_held_back_run():
    # Reported as found: the held-back figure stays the blind one (docs/math.md).
    # "5/6 ÷ 1/3" was read as ((5/6)/1)/3, so 5/18 was called correct and 2.5 wrong.
    assert verdict("What is 5/6 ÷ 1/3?", "2.5") == "correct"
    assert verdict("What is 5/6 ÷ 1/3?", "5/18") == "incorrect"
    assert verdict("What is 12 ÷ 4?", "3") == "correct"
    assert verdict("What is \\frac{1}{2} \\div 1/4?", "2") == "correct"
    # ln|x| + C is an antiderivative of 1/x.
    assert verdict("Find the integral of 1/x dx.", "ln|x| + C") == "correct"
    assert verdict("Find the integral of 1/x dx.", "ln|2x| + C") == "correct"
    # "x = 2 is not a solution" (the engine's own verdict line) is a true sentence, not a false step.
    report = check_claims("**Checked:** not quite: x = 2 is not a solution.", [{"x": "5"}, {"x": "-2"}])
    assert report.false == 0 and "~~" not in report.text
    assert check_claims("So x = 2 is the answer.", [{"x": "5"}, {"x": "-2"}]).false == 1


def test_found_by_the_second_blind_held_back_run():
    # Reported as found: the second held-back figure stays the blind one (docs/math.md).
    # "1 1/6" was read as 1 * 1/6, so a right mixed number was called incorrect.
    assert verdict("What is 1/2 + 2/3?", "1 1/6") == "correct"
    assert verdict("What is 1/2 + 2/3?", "x = 1 1/6") == "correct"
    assert verdict("What is 1/2 + 2/3?", "1 1/2") == "incorrect"
    assert verdict("What is 1/2 - 5/3?", "-1 1/6") == "correct"
    assert verdict("Simplify 2 * 3x.", "6x") == "correct"  # a product of a number and a term is not mixed
    # "Write 0.45 as a percentage" was not recognised as a problem.
    assert verdict("Write 0.45 as a percentage.", "45%") == "correct"
    assert verdict("Write 0.45 as a percentage.", "4.5%") == "incorrect"
    assert verdict("Convert 3/4 to a percent.", "75%") == "correct"
    # "Factorise 6x^2 + 9x completely": the word "completely" was read as part of the expression.
    assert verdict("Factorise 6x^2 + 9x completely.", "3x(2x + 3)") == "correct"
    assert verdict("Factorise 6x^2 + 9x completely.", "3x(2x + 9)") == "incorrect"
    assert verdict("Factor x^2 - 5x + 6 fully.", "(x - 2)(x - 3)") == "correct"
    # A price that goes up or down by a percentage was not read (a word problem).
    jacket = "A jacket costs $80 and its price goes up by 25%. What is the new price?"
    assert verdict(jacket, "$100") == "correct" and verdict(jacket, "100") == "correct"
    assert verdict(jacket, "$105") == "incorrect" and verdict(jacket, "$20") == "incorrect"
    shirt = "If a shirt costs $40 and is 25% off, what is the sale price?"
    assert verdict(shirt, "$30") == "correct" and verdict(shirt, "$10") == "incorrect"
    assert verdict("The population of 2000 decreased by 10 percent. What is it now?", "1800") == "correct"
    assert find_problem("What is 25% of 80?").var is None  # still a plain percentage of a number


def test_found_by_the_third_blind_held_back_run():
    # Reported as found: the third held-back figure stays the blind one (docs/math.md).
    # "Find f'(x) if f(x) = ..." (the question first, the function after it) was not recognised.
    question = "Find f'(x) if f(x) = (2x + 1)^4."
    assert verdict(question, "8(2x + 1)^3") == "correct"
    assert verdict(question, "f'(x) = 64x^3 + 96x^2 + 48x + 8") == "correct"
    assert verdict(question, "4(2x + 1)^3") == "incorrect"
    assert verdict("What is dy/dx when y = x^3 - 5x?", "3x^2 - 5") == "correct"
    assert verdict("What is dy/dx when y = x^3 - 5x?", "3x^2") == "incorrect"
    assert verdict("Find g'(t) given that g(t) = t^2 sin(t).", "2t sin(t) + t^2 cos(t)") == "correct"
    assert find_problem("Find f'(x) if f(x) = (2x + 1)^4.").skill == "derivative"
    assert find_problem("Find x if 2x + 1 = 7.").skill != "derivative"  # not a derivative question
