"""What the math engine adds to a turn (target: < 50 ms median).

Two measurements side by side in one run:

1. Whole turns on the scripted backend (replies fixed, so only the pipeline differs), with
   ``[tutor] math_check`` on and off, over the same messages: median turn time, and the
   median of ``math_check`` + ``math_claims`` step times from the turn's own telemetry.
2. The worker calls alone (``analyze`` and ``claims``) per kind of message.

Run: ``python bench/bench_math.py [--rounds 5]``. Prints tables.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from mimir.app import MimirApp
from mimir.config import settings_from_dict
from mimir.models.base import ChatMessage

REPLY = "First add 7 to both sides: 4x = 20. The sum is 82 + 91 = 173, so the average is 86.5. Good luck!"
#: {r} is the round number: every round asks a different problem, so no cache answers it.
MESSAGES = [
    ("linear equation", "", "Can you help me solve 4x - {r} = 13?"),
    ("system", "", "Solve 3x - y = {r} and 2x + 3y = 1"),
    ("derivative", "", "What is the derivative of x^{r} + 2x?"),
    ("definite integral", "", "Integrate 3x^2 from 0 to {r}"),
    ("answer check", "Solve x^2 - {r}x + 6 = 0.", "x = 2 or x = {r}"),
    ("practice request", "", "Give me a practice question on quadratics"),
    ("no math", "", "Who wrote Hamlet? ({r})"),
]


def _app(math_check: bool, home: str) -> MimirApp:
    import os

    os.environ["MIMIR_HOME"] = home
    data = {
        "models": {"default": {"backend": "scripted", "path": "s", "options": {"replies": [REPLY]}}},
        "budget": {"memory": "1GiB"},
        "tutor": {"thinking": False, "math_check": math_check},
    }
    return MimirApp(settings_from_dict(data))


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, _app(True, home) as on, _app(False, home) as off:
        on.tutor.run_turn("warm up: solve 2x = 4", persist=False, history=[])  # start the worker
        off.tutor.run_turn("warm up", persist=False, history=[])
        rows = []
        for name, question, template in MESSAGES:
            t_on, t_off, t_steps = [], [], []
            for r in range(3, 3 + args.rounds):
                message = template.format(r=r)
                history = [ChatMessage("assistant", question.format(r=r))] if question else []
                for app, sink in ((on, t_on), (off, t_off)):  # interleaved: same machine state
                    started = time.perf_counter()
                    result = app.tutor.run_turn(message, history=history, persist=False)
                    sink.append(time.perf_counter() - started)
                    if app is on:
                        t_steps.append(sum(s.wall_s for s in result.telemetry.steps
                                           if s.name in ("math_check", "math_claims")))
            rows.append((name, t_on, t_off, t_steps))
        print("Whole turns, scripted model, math_check on vs off (median of", args.rounds, "rounds)")
        print(f"{'message':<18} {'turn on ms':>10} {'turn off ms':>11} {'added ms':>9} {'math steps ms':>14} {'ratio':>6}")
        all_steps = []
        for name, t_on, t_off, t_steps in rows:
            added = statistics.median(t_on) - statistics.median(t_off)
            all_steps += t_steps
            print(f"{name:<18} {_ms(t_on):>10} {_ms(t_off):>11} {added * 1000:9.1f} {_ms(t_steps):>14}"
                  f" {statistics.median(t_on) / statistics.median(t_off):6.2f}")
        print(f"{'all':<18} {'':>10} {'':>11} {'':>9} {_ms(all_steps):>14}   (target < 50 ms)")

        worker = on.tutor.math.worker
        print("\nWorker calls alone (median ms)")
        print(f"{'message':<18} {'analyze':>8} {'claims':>8}")
        for name, question_t, template in MESSAGES:
            a, c = [], []
            for r in range(30, 30 + args.rounds):
                message, question = template.format(r=r), question_t.format(r=r) or None
                started = time.perf_counter()
                worker.call("analyze", {"message": message, "question": question, "wants_practice": "practice" in message})
                a.append(time.perf_counter() - started)
                started = time.perf_counter()
                worker.call("claims", {"text": REPLY.replace("82", str(50 + r))})
                c.append(time.perf_counter() - started)
            print(f"{name:<18} {_ms(a)} {_ms(c)}")


if __name__ == "__main__":
    main()
