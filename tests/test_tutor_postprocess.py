from __future__ import annotations

from mimir.tutor.postprocess import clean_response, collapse_loops


def test_special_tokens_and_invented_turns_are_removed():
    raw = "<|im_start|>assistant\nA fraction is part of a whole.<|im_end|>\n<|im_start|>user\nthanks<|im_end|>"
    assert clean_response(raw) == "A fraction is part of a whole."
    assert clean_response("[/INST] Sure. Here it is.</s>[INST] more") == "Sure. Here it is."
    assert clean_response("Good.<|eot_id|><|start_header_id|>user") == "Good."
    assert clean_response("Keep <|reserved_7|>going.") == "Keep going."


def test_role_markers_at_line_starts():
    assert clean_response("Assistant: Start with the unit circle.") == "Start with the unit circle."
    raw = "Tutor: Try the first step.\nUser: ok what next\nAssistant: then divide"
    assert clean_response(raw) == "Try the first step."
    # a role word inside a sentence is left alone
    assert clean_response("The user: interface matters.") == "The user: interface matters."


def test_repeated_sentences_and_lines_are_dropped():
    raw = (
        "Practice every day. Practice every day. Review your notes.\n"
        "1. Read the question carefully first.\n2. Read the question carefully first.\n3. Plan your time.\n"
        "Review your notes."
    )
    assert clean_response(raw) == (
        "Practice every day. Review your notes.\n1. Read the question carefully first.\n3. Plan your time."
    )


def test_short_sentences_may_repeat():
    assert clean_response("Yes. Step 1. Yes.") == "Yes. Step 1. Yes."


def test_word_loops_collapse():
    assert collapse_loops("and then and then and then we stop".split()) == "and then we stop".split()
    looped = "the answer is the sum of the parts the answer is the sum of the parts"
    assert clean_response(looped) == "the answer is the sum of the parts"
    assert clean_response("very very good") == "very very good"  # two copies of one word stay


def test_latex_is_kept_intact():
    formula = "$$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}.$$"
    raw = f"The sum is:\n{formula}\nFor $n = 3.5$, e.g. take $\\frac{{1}}{{2}}.$ Done."
    assert clean_response(raw) == raw
    # the same formula twice is not a repeated sentence to drop
    twice = "First $$x = 1.$$ then $$x = 1.$$"
    assert clean_response(twice) == twice
    assert clean_response("Use \\frac{a.b}{c} here. Use \\frac{a.b}{c} here.") == "Use \\frac{a.b}{c} here."


def test_cut_off_sentence_trimmed_only_when_truncated():
    raw = "Add 3 to both sides. Then divide both sides by"
    assert clean_response(raw, truncated=True) == "Add 3 to both sides."
    assert clean_response(raw, truncated=False) == raw
    steps = "Steps:\n1. Add 3 to both sides.\n2. Divide by 2.\n3. Check"
    assert clean_response(steps, truncated=True) == "Steps:\n1. Add 3 to both sides.\n2. Divide by 2."
    assert clean_response("Complete sentence here.", truncated=True) == "Complete sentence here."
    math_cut = "So $x = 2.5$ works. The next value is\n$$y = 1."
    assert clean_response(math_cut, truncated=True) == "So $x = 2.5$ works."
    assert clean_response("Start. Then $$a = 1.", truncated=False) == "Start. Then $$a = 1."
    only_fragment = "The derivative of"
    assert clean_response(only_fragment, truncated=True) == "The derivative of"
    assert clean_response("Here:\n$$x^2 + 1$$", truncated=True) == "Here:\n$$x^2 + 1$$"


def test_whitespace_is_tidied():
    assert clean_response("\n\nA.   \n\n\n\nB.\n") == "A.\n\nB."


# -- near duplicates (issue 12) ---------------------------------------------------------------

from mimir.tutor.postprocess import repeated_sentences  # noqa: E402

TRIG_LOOP = (
    "The tangent of an angle is the ratio of the opposite side to the adjacent side.\n\n"
    "These functions are used to find the sine, cosine, and tangent of any angle. They are also used to find sine, "
    "cosine, and tangent of an angle. They are also used to find sine, cosine, and tangent of the sine of an angle. "
    "They are also used to find sine, cosine, and cosine of the cosine of an angle."
)


def test_near_duplicate_sentences_are_dropped_and_counted():
    assert repeated_sentences(TRIG_LOOP) >= 2
    cleaned = clean_response(TRIG_LOOP)
    assert repeated_sentences(cleaned) == 0
    assert cleaned.count("They are also used") == 0 or cleaned.count("They are also used") == 1
    assert "These functions are used to find the sine, cosine, and tangent of any angle." in cleaned


def test_different_sentences_with_shared_words_stay():
    text = ("The sine of an angle is opposite over hypotenuse. The cosine of an angle is adjacent over hypotenuse. "
            "The tangent of an angle is opposite over adjacent.")
    assert clean_response(text) == text
    assert repeated_sentences(text) == 0


def test_near_duplicate_check_handles_long_inputs():
    text = " ".join(f"Sentence {i} talks about topic {i * 7} with words w{i} and v{i * 3}." for i in range(5000))
    assert clean_response(text).count("Sentence") == 5000
