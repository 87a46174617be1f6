"""Tune the response's repetition controls on the bundled model.

For each setting (repeat / presence / frequency penalty), the same tutor prompts are answered
with the tutor's system prompt and temperature, and the raw output (before postprocessing) is
scored: sentences that repeat an earlier one exactly or nearly, and responses with any.
Run: ``python bench/tune_repetition.py [--tokens 160] [--seeds 2]``; prints a table.
"""

from __future__ import annotations

import argparse
import time

from mimir.app import MimirApp
from mimir.config import load_settings
from mimir.models.base import ChatMessage, GenerationParams
from mimir.tutor.postprocess import repeated_sentences
from mimir.tutor.state import Flag

PROMPTS = [
    "What does cos, tan and sin do?",
    "What is summation?",
    "Explain what a derivative is.",
    "What is a prime number?",
    "How do fractions work?",
    "Explain the Pythagorean theorem.",
]
SETTINGS = [
    ("off", dict(repeat_penalty=1.0)),
    ("repeat 1.1", dict(repeat_penalty=1.1)),
    ("repeat 1.2", dict(repeat_penalty=1.2)),
    ("repeat 1.1 + presence/frequency 0.3", dict(repeat_penalty=1.1, presence_penalty=0.3, frequency_penalty=0.3)),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    with MimirApp(load_settings()) as app:
        tutor = app.tutor
        system = tutor.prompts.system_prompt([Flag.GENERAL_FORMATTING, Flag.LATEX_FORMATTING])
        rows = []
        for name, knobs in SETTINGS:
            repeats = responses_with = words = 0
            started = time.perf_counter()
            for prompt in PROMPTS:
                for seed in range(args.seeds):
                    params = GenerationParams(max_tokens=args.tokens, temperature=app.settings.tutor.temperature,
                                              seed=seed, **knobs)
                    with app.manager.use(app.manager.model_for_role("response")) as model:
                        text = model.chat([ChatMessage("system", system), ChatMessage("user", prompt)], params).text
                    n = repeated_sentences(text)
                    repeats += n
                    responses_with += n > 0
                    words += len(text.split())
            total = len(PROMPTS) * args.seeds
            rows.append((name, repeats, responses_with, total, words / total, time.perf_counter() - started))
        print(f"{'setting':<38} {'repeated sentences':>18} {'responses with one':>18} {'words/answer':>12} {'wall s':>7}")
        for name, repeats, with_, total, avg_words, wall in rows:
            print(f"{name:<38} {repeats:>18} {f'{with_}/{total}':>18} {avg_words:>12.0f} {wall:>7.0f}")


if __name__ == "__main__":
    main()
