"""What each part of a multi-instance deployment costs in memory (docs/deployment.md).

Run: ``.venv/bin/python bench/deployment_memory.py`` (``--no-bundled`` skips the instance that
loads the bundled model, which takes a minute on a busy machine).

Starts a throwaway PostgreSQL server (tests/pg_server.py, default settings) and real
``mimir serve`` processes on it, sends each one tutor turn over HTTP, and prints PSS
(proportional set size: shared pages counted once) per part:

- PostgreSQL idle, and with four Mimir databases (pools) connected, per instance;
- a ``mimir serve`` instance with no model in-process (the scripted backend stands in for a
  remote model server), on SQLite and on PostgreSQL, idle and after one turn;
- a ``mimir serve`` instance with the bundled SmolLM2-135M in-process, idle and after one turn.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MiB = 1024 * 1024


def pss_tree(pid: int) -> int:
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def postgres_pss(server) -> int:
    """PSS of the server's processes (the postmaster and its children)."""
    with open(server.data / "postmaster.pid") as fh:
        return pss_tree(int(fh.readline()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_once(work: Path, env_extra: dict[str, str], config: str | None) -> tuple[int, int]:
    """PSS of a ``mimir serve`` idle (ready) and after one tutor turn."""
    port = free_port()
    env = {**os.environ, "MIMIR_HOME": str(work / f"home-{port}"), **env_extra}
    env.pop("MIMIR_CONFIG", None)
    if config is not None:
        path = work / f"mimir-{port}.toml"
        path.write_text(config)
        env["MIMIR_CONFIG"] = str(path)
    proc = subprocess.Popen([sys.executable, "-m", "mimir.cli.main", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        idle = pss_tree(proc.pid)
        out = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=1200, json={
            "model": "mimir-tutor", "messages": [{"role": "user", "content": "What is 2 + 2?"}],
            "session_id": "new", "max_tokens": 16})
        assert out.status_code == 200, out.text
        return idle, pss_tree(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-bundled", action="store_true", help="skip the instance with the bundled model")
    args = parser.parse_args()
    from pg_server import PostgresServer

    from mimir.storage.conversations import ConversationStore
    from mimir.storage.db import Database

    work = Path(tempfile.mkdtemp(prefix="mimir-bench-mem-"))
    server = PostgresServer(durable=True).start()
    rows = []
    try:
        url = server.url(server.new_database())
        idle = postgres_pss(server)
        rows.append(("PostgreSQL, default settings, idle", f"{idle / MiB:.1f}"))
        dbs = [Database.open(url) for _ in range(4)]
        for i, db in enumerate(dbs):
            store = ConversationStore(db)
            sid = store.create_session()
            for k in range(20):
                store.add_turn(turn_id=f"m{i}-{k}", session_id=sid, user_message="q", response="a", status="ok")
        connected = postgres_pss(server)
        for db in dbs:
            db.close()
        rows.append(("PostgreSQL, 4 instances connected", f"{connected / MiB:.1f}"))
        rows.append(("  per connected instance", f"{(connected - idle) / 4 / MiB:.1f}"))
        scripted = '[models.m]\nbackend = "scripted"\npath = "scripted"\n[tutor]\nthinking = false\n'
        for label, extra in (("SQLite", {}), ("PostgreSQL", {"MIMIR_DATABASE_URL": url})):
            a, b = serve_once(work, extra, scripted)
            rows.append((f"mimir serve, no in-process model, {label}: idle", f"{a / MiB:.1f}"))
            rows.append((f"mimir serve, no in-process model, {label}: after a turn", f"{b / MiB:.1f}"))
        if not args.no_bundled:
            a, b = serve_once(work, {"MIMIR_DATABASE_URL": url}, None)
            rows.append(("mimir serve, bundled SmolLM2-135M in-process: idle", f"{a / MiB:.1f}"))
            rows.append(("mimir serve, bundled SmolLM2-135M in-process: after a turn", f"{b / MiB:.1f}"))
    finally:
        server.remove()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'part':{width}}  {'PSS MiB':>8}")
    for name, value in rows:
        print(f"{name:{width}}  {value:>8}")


if __name__ == "__main__":
    main()
