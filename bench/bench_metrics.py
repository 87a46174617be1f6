"""/metrics benchmark: what a Prometheus scrape costs as stored turns grow.

Run: ``.venv/bin/python bench/bench_metrics.py`` (``--quick`` for 0 / 100 / 1,000 turns).

A server app (scripted model, real SQLite store under a temporary MIMIR_HOME, the real
telemetry recorder with its probes and sinks, the real /metrics route) answers a few real
tutor turns; their step shapes (step, agent, model) are then replayed through the same
recorder until the database holds 1,000 and 10,000 turns. At each point the table shows the
rows stored, the series and bytes of the exposition, and the median time of a scrape, both
rendering the registry and as a full HTTP GET through the ASGI app (FastAPI's test client),
with the ratio to the scrape at the first point, all measured in this run.

A scrape reads in-memory counters and snapshots, never the database, so the ratio should stay
near 1 however many turns are stored.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def timings_ms(fn, n: int) -> tuple[float, float]:
    """(median, best) of ``n`` calls, in milliseconds. The best is the one least disturbed by
    whatever else the machine runs; the median is what a scraper typically waits."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0 / 100 / 1,000 turns instead of 0 / 1,000 / 10,000")
    parser.add_argument("--scrapes", type=int, default=30, help="scrapes per point (median)")
    args = parser.parse_args()
    points = (0, 100, 1000) if args.quick else (0, 1000, 10000)
    os.environ["MIMIR_HOME"] = tempfile.mkdtemp(prefix="mimir-bench-metrics-")

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mimir.api.ops import install_ops
    from mimir.app import MimirApp
    from mimir.config import settings_from_dict

    settings = settings_from_dict({
        "models": {
            "small": {"backend": "scripted", "path": "s", "options": {"replies": ["Try the first step."]}},
            "big": {"backend": "scripted", "path": "b", "options": {"replies": ["Let us work through it."]}},
        },
        "roles": {"tool_decision": "small", "routing": "small", "thinking": "big", "response": "big"},
        "tutor": {"deciders": {"tool": "model", "routing": "model"}},
        "telemetry": {"log": False},
    })
    app = MimirApp(settings)
    api = FastAPI()
    install_ops(api, app)
    client = TestClient(api)
    metrics = app.server_metrics
    tel = app.telemetry

    questions = ["What is a fraction?", "Solve 3x - y = 7", "Give me practice questions on verbs", "Why is the sky blue?"]
    shapes = []
    for i in range(8):  # real turns: their step shapes are what gets replayed
        app.tutor.run_turn(questions[i % len(questions)], persist=False)
    tel.flush()
    for row in app.db.read("SELECT turn_id, name, agent, model, tokens_in, tokens_out FROM telemetry_steps "
                           "ORDER BY turn_id, seq"):
        shapes.append((row["turn_id"], row["name"], row["agent"], row["model"], row["tokens_in"], row["tokens_out"]))
    turns: dict[str, list] = {}
    for turn_id, *step in shapes:
        turns.setdefault(turn_id, []).append(step)
    turn_shapes = list(turns.values())

    def stored() -> tuple[int, int]:
        tel.flush()
        t = app.db.read("SELECT COUNT(*) AS n FROM telemetry_turns")[0]["n"]
        s = app.db.read("SELECT COUNT(*) AS n FROM telemetry_steps")[0]["n"]
        return t, s

    def replay(n: int) -> None:
        for i in range(n):
            with tel.turn(session_id=f"bench-{i % 50}"):
                for name, agent, model, tin, tout in turn_shapes[i % len(turn_shapes)]:
                    with tel.step(name, agent=agent, model=model) as step:
                        if tin is not None or tout is not None:
                            step.add_tokens(tin or 0, tout or 0)

    rows = []
    have, _ = stored()
    for target in points:
        if target > have:
            t0 = time.perf_counter()
            replay(target - have)
            fill_s = time.perf_counter() - t0
        else:
            fill_s = 0.0
        have, steps = stored()
        text = client.get("/metrics").text
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        render = timings_ms(metrics.render, args.scrapes)
        http = timings_ms(lambda: client.get("/metrics"), args.scrapes)
        rows.append((target, have, steps, series, len(text), render, http, fill_s))

    base_render, base_http = rows[0][5][1], rows[0][6][1]
    print(f"# /metrics scrape cost vs stored turns ({args.scrapes} scrapes per point: median / best, ms)")
    print("| turns (target) | turns stored | steps stored | series | exposition bytes | render ms | "
          "HTTP GET ms | best render ratio | best HTTP ratio | fill s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for target, t, s, series, size, r_ms, h_ms, fill_s in rows:
        print(f"| {target:,} | {t:,} | {s:,} | {series} | {size:,} | {r_ms[0]:.2f} / {r_ms[1]:.2f} | "
              f"{h_ms[0]:.2f} / {h_ms[1]:.2f} | {r_ms[1] / base_render:.2f} | {h_ms[1] / base_http:.2f} | {fill_s:.1f} |")
    app.close()


if __name__ == "__main__":
    main()
