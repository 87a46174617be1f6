"""The math step inside real turns: scripted replies (so the model's wording is fixed), real
SQLite, real telemetry and the real math worker process."""

from __future__ import annotations

from mimir.app import MimirApp
from mimir.config import settings_from_dict
from mimir.models.scripted import ScriptedModel
from mimir.tutor.mathstep import MathStep

FALSE_AVERAGE = "The sum is 82 + 91 = 173. So the average is (82+91)/2 = 82. Good luck with the test!"


def app_with(replies: list[str], **tutor) -> MimirApp:
    data = {
        "models": {"default": {"backend": "scripted", "path": "s", "options": {"replies": replies}}},
        "budget": {"memory": "1GiB"},
        "tutor": {"thinking": False, **tutor},
    }
    return MimirApp(settings_from_dict(data))


def response_prompts(app: MimirApp) -> list[str]:
    with app.manager.use("default") as model:
        assert isinstance(model, ScriptedModel)
        return ["\n".join(m.content for m in call) for call in model.calls]


def answer_for(key: dict) -> str:
    if key["kind"] == "value":
        return key["value"]
    return ", ".join(f"{v} = {sol[v]}" for sol in key["solutions"] for v in key["variables"])


def test_a_false_equality_is_corrected_in_streamed_and_stored_text():
    with app_with([FALSE_AVERAGE]) as app:
        pieces: list[str] = []
        result = app.tutor.run_turn("What is the average of 82 and 91?", on_token=pieces.append)
        streamed = "".join(pieces)
        for text in (streamed, result.response):
            assert "(82+91)/2 = 86.5." in text
            assert "= 82." not in text
            assert "Math check: I corrected (82+91)/2 is 86.5, not 82." in text
        stored = app.conversations.get_turn(result.turn_id).response
        assert stored == result.response
        steps = [s.name for s in result.telemetry.steps]
        assert "math_check" in steps and "math_claims" in steps


def test_the_gate_streams_prose_and_holds_a_claim_until_its_sentence_ends():
    with app_with(["ok"]) as app:
        step: MathStep = app.tutor.math
        out: list[str] = []
        gate = step.gate(None, out.append)
        for token in ["So ", "(82", "+91)/2 ", "= ", "82"]:
            gate.feed(token)
        assert "".join(out) == "So ("  # prose went out at once; the math waits for the sentence end
        for token in [". ", "Next ", "one"]:
            gate.feed(token)
        assert "".join(out) == "So (82+91)/2 = 86.5. Next one"
        gate.close()
        assert "".join(out).startswith("So (82+91)/2 = 86.5. Next one\n\n_Math check")


def test_verified_results_reach_the_private_notes():
    with app_with(["The average is 86.5."]) as app:
        app.tutor.run_turn("What is the average of 82 and 91?")
        prompt = response_prompts(app)[-1]
        assert "Verified by the math engine" in prompt and "86.5" in prompt


def test_guided_teaching_notes_carry_the_method_not_the_answer():
    with app_with(["Start by adding 7 to both sides, so x = 5."]) as app:
        result = app.tutor.run_turn("Can you help me solve 4x - 7 = 13 for homework?")
        prompt = response_prompts(app)[-1]
        assert "GUIDING_TEACHING" in result.flags
        assert "x = 5" not in prompt and "Verified first step" in prompt
        assert "x = 5" not in result.response and "x = ?" in result.response


def test_practice_question_is_stored_with_its_key_and_the_followup_is_checked():
    with app_with(["Here is a question for you."]) as app:
        tutor = app.tutor
        first = tutor.run_turn("Give me a practice question on linear equations")
        record = app.conversations.get_math(first.turn_id)
        assert record is not None and record["open"] and record["source"] == "practice"
        assert record["key"]["skill"] == "linear" and len(record["key"]["hints"]) >= 2
        assert record["question"] in first.response  # the question the student sees is the keyed one

        hint = tutor.run_turn("give me a hint", first.session_id)
        assert hint.response.startswith(f"**Hint 1:** {record['key']['hints'][0]}")
        hint2 = tutor.run_turn("another hint please", first.session_id)
        assert hint2.response.startswith(f"**Hint 2:** {record['key']['hints'][1]}")

        wrong = tutor.run_turn("x = 1000", first.session_id)
        assert wrong.verdict == "incorrect" and wrong.response.startswith("**Checked:** not quite")
        right = tutor.run_turn(answer_for(record["key"]), first.session_id)
        assert right.verdict == "correct" and right.response.startswith("**Checked:** your answer is correct.")
        assert app.conversations.get_math(right.turn_id)["open"] is False
        assert app.conversations.open_question(first.session_id) is None


def test_an_answer_to_the_tutors_last_question_in_history_is_checked():
    with app_with(["Well done."]) as app:
        tutor = app.tutor
        assert tutor.check_verdict("x = 4", [_assistant("Now try this: solve 2x + 3 = 11.")]) == "correct"
        assert tutor.check_verdict("x = 5", [_assistant("Now try this: solve 2x + 3 = 11.")]) == "incorrect"
        assert tutor.check_verdict("I like turtles", [_assistant("Now try this: solve 2x + 3 = 11.")]) == "unknown"


def test_an_engine_timeout_is_could_not_check_and_the_turn_goes_on():
    with app_with([FALSE_AVERAGE], math_timeout_s=0.001) as app:
        result = app.tutor.run_turn("What is the average of 82 and 91? " + "9**9**9**9 " * 3)
        assert result.response  # answered, unchecked
        assert result.verdict is None


def test_a_five_megabyte_message_is_capped_before_the_math_step():
    with app_with(["Let us look at it."]) as app:
        result = app.tutor.run_turn("Solve 2x + 3 = 11 " + "1+" * 2_500_000)
        assert result.notices and "too long" in result.notices[0]
        assert result.response


def test_math_check_can_be_switched_off():
    with app_with([FALSE_AVERAGE], math_check=False) as app:
        result = app.tutor.run_turn("What is the average of 82 and 91?")
        assert "= 82." in result.response
        assert "math_check" not in [s.name for s in result.telemetry.steps]


def _assistant(text: str):
    from mimir.models.base import ChatMessage

    return ChatMessage("assistant", text)


ECHOING = ("Checked by the math engine: the student's answer is not correct (x = 5 is not a solution). "
           "Say which part is wrong and give one hint; do not provide the full solution.\n"
           "Look again at what you get when you subtract 3 from both sides.")


def test_the_notes_instructions_the_model_copies_never_reach_the_student():
    """A small model copies its private instructions into the answer (found by the third
    held-back run); those sentences are dropped, the rest of the answer stays."""
    with app_with(["Now try this: solve 2x + 3 = 11.", ECHOING]) as app:
        first = app.tutor.run_turn("Give me an equation to solve.")
        result = app.tutor.run_turn("x = 5", first.session_id)
        assert result.verdict == "incorrect"
        stored = app.conversations.get_turn(result.turn_id).response
        for text in (result.response, stored):
            assert "Look again at what you get when you subtract 3 from both sides." in text
            assert "Say which part" not in text and "Checked by the math engine" not in text
        # The model was given those instructions: it is the reply that no longer carries them.
        assert any("Say which part is wrong" in p for p in response_prompts(app))


def test_drop_echoes_matches_opening_words_not_any_mention():
    from mimir.tutor.mathstep import ECHOES as keys
    from mimir.tutor.postprocess import drop_echoes

    reply = ("Great work. Confirm it briefly and praise the method. You checked it by the math you know.\n"
             "\n- Guide the student one step at a time; do not state it.\n- Next, try 3x = 9.")
    assert drop_echoes(reply, keys) == ("Great work. You checked it by the math you know.\n\n- Next, try 3x = 9.")
    assert drop_echoes("Nothing to drop here.", keys) == "Nothing to drop here."
