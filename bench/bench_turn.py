"""A full tutor turn on the bundled model, broken down by step.

Run: ``.venv/bin/python bench/bench_turn.py [--runs 10] [--max-tokens 200]``

For each decider configuration (``rules``, the default; ``model``, where the bundled model
scores the decision prompts) it runs the original Mimir's benchmark prompts as single turns
(nothing stored) and prints, per step, the median wall time, then:

- decisions (tool decision + routing + rules) vs the response step: target < 1/3;
- the whole turn: target median < 6 s with a 200-token answer on 2 cores.

Thinking steps run when their flags are on, as in the default configuration.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from mimir.app import MimirApp
from mimir.config import settings_from_dict

PROMPTS = [
    "What does cos, tan and sin do?",
    "Solve 3x - y = 7 and 2x + 3y = 1",
    "What is summation?",
    "I need help understanding how to interpret the graphs in the science portion of my exam. "
    "Can you make some practice questions?",
    "Can you help me practice LSAT reading comprehension?",
    "Explain subject-verb agreement, pronouns, punctuation and tenses.",
    "Give me pre-college vocabulary words that aren't jargon.",
    "What is the rule for pronouncing acronyms?",
    "Help me review for my Civil War test.",
    "How should I study for the ACT?",
]
DECISION_STEPS = ("tool_decision", "routing", "rules")


def run(deciders: str, runs: int, max_tokens: int) -> dict:
    settings = settings_from_dict(
        {"tutor": {"response_max_tokens": max_tokens, "deciders": {"tool": deciders, "routing": deciders}}}
    )
    per_step: dict[str, list[float]] = defaultdict(list)
    turns, decisions, responses, tokens = [], [], [], []
    with MimirApp(settings) as app:
        app.tutor.run_turn("warm up: what is a noun?", persist=False, max_tokens=8)  # load once
        for i in range(runs):
            result = app.tutor.run_turn(PROMPTS[i % len(PROMPTS)], persist=False)
            steps = result.telemetry.steps
            for s in steps:
                per_step[s.name].append(s.wall_s)
            turns.append(result.telemetry.wall_s)
            decisions.append(sum(s.wall_s for s in steps if s.name in DECISION_STEPS))
            responses.append(sum(s.wall_s for s in steps if s.name == "response"))
            tokens.append(result.tokens_out)
    return {
        "per_step": {k: statistics.median(v) for k, v in per_step.items()},
        "count": {k: len(v) for k, v in per_step.items()},
        "turn": statistics.median(turns),
        "decisions": statistics.median(decisions),
        "response": statistics.median(responses),
        "tokens": statistics.median(tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=200)
    args = parser.parse_args()
    results = {name: run(name, args.runs, args.max_tokens) for name in ("rules", "model")}

    steps = list(dict.fromkeys(k for r in results.values() for k in r["per_step"]))
    print(f"median seconds per step over {args.runs} turns ({args.max_tokens}-token answers)")
    print(f"{'step':<26}" + "".join(f"{name + ' deciders':>18}" for name in results))
    for step in steps:
        cells = []
        for r in results.values():
            value = r["per_step"].get(step)
            cells.append(f"{value:>12.3f} (n={r['count'][step]:>2})" if value is not None else f"{'-':>18}")
        print(f"{step:<26}" + "".join(cells))
    print("-" * (26 + 18 * len(results)))
    for label, key in (("decisions (sum)", "decisions"), ("response", "response"), ("whole turn", "turn"),
                       ("answer tokens", "tokens")):
        print(f"{label:<26}" + "".join(f"{r[key]:>18.3f}" for r in results.values()))
    print(f"{'decisions / response':<26}" + "".join(
        f"{r['decisions'] / r['response']:>18.3f}" for r in results.values()) + "   (target < 0.333)")
    print(f"{'turn median < 6 s':<26}" + "".join(
        f"{'yes' if r['turn'] < 6 else 'NO':>18}" for r in results.values()))


if __name__ == "__main__":
    main()
