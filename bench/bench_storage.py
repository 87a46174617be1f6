"""Storage benchmark: the same stores on SQLite and on PostgreSQL, side by side in one run.

Run: ``.venv/bin/python bench/bench_storage.py`` (``--quick`` for a short run;
``--url postgresql://...`` to measure an existing server instead of a throwaway one).

Without ``--url`` the script starts a throwaway PostgreSQL server (tests/pg_server.py: initdb
in a temporary folder as a non-root user, 127.0.0.1, a free port) with PostgreSQL's default
durability (fsync on every commit), and removes it afterwards. SQLite runs as Mimir runs it:
WAL, ``synchronous=NORMAL``. Both are on this machine's disk, so the PostgreSQL numbers include
a local TCP round trip per statement but no network.

Rows, for each engine:

1. **telemetry write throughput** (step records per second): ``--turns`` turns of 5 steps
   (each with one model event) put on the batching writer (``SqliteSink``, the one the app
   uses) at once, timed until ``flush()`` returns.
2. **turn-storage latency** (ms, median and p95): ``ConversationStore.add_turn`` one after
   another, each its own transaction, as a tutor turn stores itself.
3. **/metrics scrape** (ms, median of 40) with 10,000 stored turns (``--stored``), and on an
   empty database for the ratio, the two apps scraped alternately: ``GET /metrics`` through
   the real FastAPI route. The scrape
   reads counters in memory, never the database, so it should not grow with stored turns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mimir.runtime.manager import ModelEvent  # noqa: E402
from mimir.storage.conversations import ConversationStore  # noqa: E402
from mimir.storage.db import Database  # noqa: E402
from mimir.storage.telemetry_store import TelemetryStore  # noqa: E402
from mimir.storage.url import StorageTarget  # noqa: E402
from mimir.core.records import StepRecord, TurnRecord  # noqa: E402
from mimir.telemetry.sinks import SqliteSink  # noqa: E402

STEPS_PER_TURN = 5
_BLANK = {f: None for f in StepRecord.__dataclass_fields__}


def turn_record(i: int, session_id: str | None = None) -> TurnRecord:
    turn_id = f"bench-{i}-{time.monotonic_ns()}"
    steps = tuple(
        StepRecord(**{**_BLANK, "step_id": f"{turn_id}-{k}", "session_id": session_id, "turn_id": turn_id, "seq": k,
                      "name": "response", "agent": "agent_5", "model": "default", "started_at": time.time(),
                      "wall_s": 0.01, "tokens_in": 100, "tokens_out": 20, "rss_before_bytes": 400 << 20,
                      "rss_after_bytes": 410 << 20, "rss_peak_bytes": 420 << 20, "gpu_devices": (),
                      "events": (ModelEvent("load", "default", "first use", 100 << 20, 98 << 20, 0.2, "ram"),)})
        for k in range(STEPS_PER_TURN)
    )
    return TurnRecord(session_id, turn_id, time.time(), 0.05, steps, 420 << 20)


def telemetry_throughput(target: StorageTarget, turns: int) -> float:
    """Step records per second through the batching writer."""
    with Database.open(target) as db:
        records = [turn_record(i) for i in range(turns)]
        sink = SqliteSink(TelemetryStore(db))
        t0 = time.perf_counter()
        for r in records:
            sink.on_turn(r)
        sink.flush()
        elapsed = time.perf_counter() - t0
        sink.close()
        assert TelemetryStore(db).count_steps() == turns * STEPS_PER_TURN, "a record was lost"
    return turns * STEPS_PER_TURN / elapsed


def turn_latency_ms(target: StorageTarget, turns: int) -> tuple[float, float]:
    with Database.open(target) as db:
        store = ConversationStore(db)
        sid = store.create_session("bench")
        times = []
        for i in range(turns):
            t0 = time.perf_counter()
            store.add_turn(turn_id=f"lat-{i}", session_id=sid, user_message="What is 2 + 2?", response="4",
                           status="ok", flags=("math",), tokens_in=50, tokens_out=5, wall_s=0.5)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def fill(target: StorageTarget, stored: int) -> None:
    """``stored`` conversation turns, each with its telemetry turn (5 steps), in big transactions."""
    with Database.open(target) as db:
        conv, tel = ConversationStore(db), TelemetryStore(db)
        sid = conv.create_session("filled")
        done = 0
        while done < stored:
            chunk = min(1000, stored - done)
            with db.write() as conn:
                for i in range(done, done + chunk):
                    conn.execute(
                        "INSERT INTO turns (id, session_id, seq, created_at, user_message, response, status,"
                        " flags_json, notices_json) VALUES (?, ?, ?, ?, 'q', 'a', 'ok', '[]', '[]')",
                        (f"fill-{i}", sid, i + 1, time.time()),
                    )
                    tel._insert_turn(conn, turn_record(i, sid))
            done += chunk


def scrape_ms(targets: list[StorageTarget], homes: list[Path], scrapes: int = 40) -> list[float]:
    """Median ms of ``GET /metrics`` on one app per target, the apps scraped alternately
    (so machine noise hits them alike)."""
    import os
    from contextlib import ExitStack

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mimir.api.ops import install_ops
    from mimir.app import MimirApp
    from mimir.config import settings_from_dict

    data = {"models": {"m": {"backend": "scripted", "path": "scripted"}}}
    with ExitStack() as stack:
        clients = []
        for target, home in zip(targets, homes):
            # SQLite: the app's database is home/mimir.db, so home is the target's folder.
            env = dict(os.environ, MIMIR_HOME=str(target.path.parent if target.engine == "sqlite" else home))
            env.pop("MIMIR_DATABASE_URL", None)
            if target.engine == "postgresql":
                env["MIMIR_DATABASE_URL"] = target.url
                if target.password:
                    env["MIMIR_DATABASE_PASSWORD"] = target.password
            app = stack.enter_context(MimirApp(settings_from_dict(data, env=env)))
            if target.engine == "sqlite":
                assert app.settings.db_path == target.path
            api = FastAPI()
            install_ops(api, app)
            client = TestClient(api)
            app.db  # opened (and migrated) before timing
            for _ in range(3):  # warm up
                assert client.get("/metrics").status_code == 200
            clients.append(client)
        times: list[list[float]] = [[] for _ in clients]
        for _ in range(scrapes):
            for client, out in zip(clients, times):
                t0 = time.perf_counter()
                response = client.get("/metrics")
                out.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer records (a short run)")
    parser.add_argument("--url", help="measure this PostgreSQL database (it must be empty) instead of a throwaway server")
    parser.add_argument("--turns", type=int, default=None, help="turns for the throughput and latency rows")
    parser.add_argument("--stored", type=int, default=None, help="stored turns for the /metrics row (default 10,000)")
    args = parser.parse_args()
    turns = args.turns or (200 if args.quick else 2000)
    stored = args.stored or (1000 if args.quick else 10_000)

    server = None
    work = Path(tempfile.mkdtemp(prefix="mimir-bench-storage-"))
    try:
        if args.url:
            pg_url = args.url
        else:
            from pg_server import PostgresServer, missing_reason

            reason = missing_reason()
            if reason:
                sys.exit(f"cannot start PostgreSQL: {reason}")
            server = PostgresServer(durable=True).start()
            pg_url = None

        def target(engine: str, name: str) -> StorageTarget:
            if engine == "sqlite":
                return StorageTarget.sqlite(work / name / "mimir.db")
            if server is None:
                return StorageTarget.parse(pg_url)  # --url: one database for every row, so rows are cumulative
            return StorageTarget.parse(server.url(server.new_database()))

        results: dict[str, dict[str, object]] = {}
        for engine in ("sqlite", "postgresql"):
            r: dict[str, object] = {}
            r["throughput"] = telemetry_throughput(target(engine, "throughput"), turns)
            r["latency"] = turn_latency_ms(target(engine, "latency"), min(turns, 1000))
            empty, filled = target(engine, "empty"), target(engine, "filled")
            fill(filled, stored)
            r["scrape_empty"], r["scrape_filled"] = scrape_ms(
                [empty, filled], [work / f"{engine}-home-empty", work / f"{engine}-home-filled"]
            )
            results[engine] = r
            print(f"  {engine}: done", file=sys.stderr, flush=True)

        s, p = results["sqlite"], results["postgresql"]
        rows = [
            ("telemetry write throughput (step records/s)", f"{s['throughput']:,.0f}", f"{p['throughput']:,.0f}",
             f"{p['throughput'] / s['throughput']:.2f}"),
            ("turn storage latency, median (ms)", f"{s['latency'][0]:.2f}", f"{p['latency'][0]:.2f}",
             f"{p['latency'][0] / s['latency'][0]:.2f}"),
            ("turn storage latency, p95 (ms)", f"{s['latency'][1]:.2f}", f"{p['latency'][1]:.2f}",
             f"{p['latency'][1] / s['latency'][1]:.2f}"),
            ("/metrics scrape, empty database (ms)", f"{s['scrape_empty']:.2f}", f"{p['scrape_empty']:.2f}",
             f"{p['scrape_empty'] / s['scrape_empty']:.2f}"),
            (f"/metrics scrape, {stored:,} stored turns (ms)", f"{s['scrape_filled']:.2f}", f"{p['scrape_filled']:.2f}",
             f"{p['scrape_filled'] / s['scrape_filled']:.2f}"),
            ("scrape: filled / empty", f"{s['scrape_filled'] / s['scrape_empty']:.2f}",
             f"{p['scrape_filled'] / p['scrape_empty']:.2f}", ""),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"\nStorage: {turns} turns x {STEPS_PER_TURN} steps (throughput), {min(turns, 1000)} turns (latency)")
        print(f"{'':{width}}  {'SQLite':>10}  {'PostgreSQL':>10}  {'PG/SQLite':>9}")
        for name, a, b, ratio in rows:
            print(f"{name:{width}}  {a:>10}  {b:>10}  {ratio:>9}")
        print("SQLite: WAL, synchronous=NORMAL. PostgreSQL: " + (
            "the server at --url." if server is None else "a local server with default durability (fsync per commit)."))
    finally:
        if server is not None:
            server.remove()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
