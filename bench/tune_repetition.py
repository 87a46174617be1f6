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
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    parser.add_argument("--settings", type=int, default=len(SETTINGS), help="use the first N settings")
    args = parser.parse_args()
    prompts = PROMPTS[: args.prompts]
    with MimirApp(load_settings()) as app:
        tutor = app.tutor
        system = tutor.prompts.system_prompt([Flag.GENERAL_FORMATTING, Flag.LATEX_FORMATTING])
        print(f"{'setting':<38} {'repeated sentences':>18} {'responses with one':>18} {'words/answer':>12} {'wall s':>7}",
              flush=True)
        for name, knobs in SETTINGS[: args.settings]:
            repeats = responses_with = words = 0
            started = time.perf_counter()
            for prompt in prompts:
                for seed in range(args.seeds):
                    params = GenerationParams(max_tokens=args.tokens, temperature=app.settings.tutor.temperature,
                                              seed=seed, **knobs)
                    with app.manager.use(app.manager.model_for_role("response")) as model:
                        text = model.chat([ChatMessage("system", system), ChatMessage("user", prompt)], params).text
                    n = repeated_sentences(text)
                    repeats += n
                    responses_with += n > 0
                    words += len(text.split())
            total = len(prompts) * args.seeds
            wall = time.perf_counter() - started
            print(f"{name:<38} {repeats:>18} {f'{responses_with}/{total}':>18} {words / total:>12.0f} {wall:>7.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
