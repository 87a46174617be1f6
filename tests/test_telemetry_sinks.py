"""Sinks: the log line, the SQLite store (threads, shutdown), trackio when installed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import dataclasses

import pytest

from mimir.models.spec import ModelSource, ModelSpec
from mimir.core.events import ModelEvent
from mimir.runtime.manager import ModelManager
from mimir.storage.db import Database
from mimir.storage.telemetry_store import TelemetryStore
from mimir.telemetry import LogSink, SqliteSink, Telemetry, format_step_line, turn_json
from mimir.core.records import StepRecord

MiB = 1024 * 1024


@pytest.fixture
def db(db_target):
    """The telemetry store on both engines (SQLite file, real PostgreSQL)."""
    database = Database.open(db_target)
    yield database
    database.close()


def test_log_sink_writes_one_readable_line_per_step(caplog):
    tel = Telemetry(sinks=[LogSink()], sample_interval_s=None)
    with caplog.at_level(logging.INFO, logger="mimir.telemetry"):
        with tel.turn(turn_id="t1"):
            with tel.step("routing", agent="agent_2", model="default") as step:
                block = bytearray(b"\x01") * (8 * MiB)
                step.add_tokens(tokens_in=12, tokens_out=3)
    tel.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "mimir.telemetry"]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("step=routing agent=agent_2 model=default ")
    assert " rss=" in line and " (+" in line and " peak=" in line and " gpu=" in line
    assert "tokens=12/3" in line and "loads=0 evictions=0" in line and "turn=t1" in line
    assert caplog.records[0].levelno == logging.INFO
    del block


def test_step_line_format_is_exact():
    # Fixed numbers, expected text written out by hand (not rebuilt with the formatter).
    record = StepRecord(
        step_id="x", name="routing", agent="agent_2", model="default", session_id="s", turn_id="t1", seq=0,
        started_at=0.0, wall_s=0.2149, tokens_in=300, tokens_out=24,
        rss_before_bytes=209 * MiB, rss_after_bytes=212 * MiB, rss_peak_bytes=230 * MiB + 512 * 1024,
        events=(ModelEvent("load", "default", "first use", 100 * MiB), ModelEvent("unload", "x", "manual", MiB)),
    )
    assert format_step_line(record) == (
        "step=routing agent=agent_2 model=default 0.21s rss=212.0MiB (+3.0MiB) peak=230.5MiB gpu=- "
        "tokens=300/24 loads=1 evictions=0 unloads=1 turn=t1"
    )
    shrunk = dataclasses.replace(record, agent=None, model=None, tokens_in=None, tokens_out=None, events=(),
                                 turn_id=None, rss_before_bytes=3 * 1024**3, rss_after_bytes=2 * 1024**3,
                                 gpu_used_after_bytes=1536 * MiB, gpu_total_bytes=80 * 1024**3,
                                 error="GenerationError: boom")
    assert format_step_line(shrunk) == (
        "step=routing model=- 0.21s rss=2.0GiB (-1.0GiB) peak=230.5MiB gpu=1.5GiB/80.0GiB "
        "loads=0 evictions=0 error='GenerationError: boom'"
    )
    cuda = dataclasses.replace(shrunk, cuda_peak_allocated_bytes=700 * MiB)
    assert " gpu=cuda_peak=700.0MiB " in format_step_line(cuda)


def test_sqlite_sink_stores_turns_with_steps_and_events(db):
    store = TelemetryStore(db)
    tel = Telemetry(sinks=[SqliteSink(store)], sample_interval_s=None)
    specs = {"a": ModelSpec("a", "scripted", ModelSource("path", "a"), options={"size_bytes": 16 * MiB})}
    with ModelManager(specs, budget_ram_bytes=256 * MiB) as manager:
        tel.attach(manager)
        with tel.turn(session_id="s1", turn_id="t1") as turn:
            with tel.step("decide", agent="tool", model="a") as s:
                with manager.use("a"):
                    s.add_tokens(tokens_in=5, tokens_out=1)
            with tel.step("respond", model="a"):
                pass
        with tel.step("lonely"):  # outside any turn
            pass
        resident = manager.status().get("a")
        tel.flush()
        stored = store.recent_steps(last_turns=10)
    tel.close()
    assert [(s.name, s.turn_id) for s in stored] == [("decide", "t1"), ("respond", "t1"), ("lonely", None)]
    assert stored[0] == turn.record.steps[0]  # read back exactly as recorded
    (event,) = stored[0].events
    assert event.kind == "load" and event.measured_bytes == resident.measured_bytes
    assert store.last_measured_sizes()["a"].measured_bytes == resident.measured_bytes
    assert store.last_measured_sizes()["a"].estimate_bytes == 16 * MiB
    # The manager's shutdown unload happened outside any step: stored as a loose event.
    assert [(e.kind, e.reason) for e in store.events(loose=True)] == [("unload", "shutdown")]
    (stored_turn,) = store.turns()
    assert stored_turn.peak_rss_bytes == turn.record.peak_rss_bytes
    assert [s.name for s in stored_turn.steps] == ["decide", "respond"]
    assert store.recent_steps(turn_id="t1") == list(turn.record.steps)


def test_recent_steps_limits_by_turn(db):
    store = TelemetryStore(db)
    tel = Telemetry(sinks=[SqliteSink(store)], sample_interval_s=None)
    for t in range(4):
        with tel.turn(session_id="s", turn_id=f"t{t}"):
            for k in range(3):
                with tel.step(f"k{k}"):
                    pass
    tel.close()
    steps = store.recent_steps(last_turns=2)
    assert [(s.turn_id, s.name) for s in steps] == [("t2", "k0"), ("t2", "k1"), ("t2", "k2"), ("t3", "k0"), ("t3", "k1"), ("t3", "k2")]
    assert store.count_steps() == 12


def test_concurrent_turns_are_stored_complete_and_unmixed(db):
    store = TelemetryStore(db)
    tel = Telemetry(sinks=[SqliteSink(store)], sample_interval_s=0.001)
    n_threads, n_turns, n_steps = 8, 5, 6

    def worker(i: int) -> None:
        for t in range(n_turns):
            with tel.turn(session_id=f"s{i}", turn_id=f"t{i}-{t}"):
                for k in range(n_steps):
                    with tel.step(f"step{k}", agent=f"a{i}"):
                        pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tel.close()  # drains the writer queue
    rows = db.read("SELECT id, session_id, turn_id, seq, name, agent FROM telemetry_steps ORDER BY id")
    assert len(rows) == n_threads * n_turns * n_steps
    assert db.read("SELECT COUNT(*) FROM telemetry_turns")[0][0] == n_threads * n_turns
    by_turn: dict[str, list] = {}
    for r in rows:
        by_turn.setdefault(r["turn_id"], []).append(r)
    for turn_id, turn_rows in by_turn.items():
        i = turn_id.split("-")[0][1:]
        assert [r["seq"] for r in turn_rows] == list(range(n_steps))
        assert {r["agent"] for r in turn_rows} == {f"a{i}"} and {r["session_id"] for r in turn_rows} == {f"s{i}"}
        ids = [r["id"] for r in turn_rows]
        assert ids == list(range(ids[0], ids[0] + n_steps))  # one transaction: contiguous rows


def test_records_after_close_are_refused_with_one_warning(db, caplog):
    sink = SqliteSink(TelemetryStore(db))
    tel = Telemetry(sinks=[sink], sample_interval_s=None)
    sink.close()
    with caplog.at_level(logging.WARNING, logger="mimir.telemetry"):
        for _ in range(3):
            with tel.step("late"):
                pass
    assert len([r for r in caplog.records if "closed" in r.getMessage()]) == 1
    assert TelemetryStore(db).count_steps() == 0
    tel.close()


def test_a_normal_exit_without_close_loses_nothing(tmp_path):
    """The writer queue is drained at interpreter exit (atexit), not dropped."""
    db_path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        from mimir.storage.db import Database
        from mimir.storage.telemetry_store import TelemetryStore
        from mimir.telemetry import SqliteSink, Telemetry

        db = Database.open({str(db_path)!r})
        tel = Telemetry(sinks=[SqliteSink(TelemetryStore(db))])
        for t in range(50):
            with tel.turn(turn_id=f"t{{t}}"):
                for k in range(20):
                    with tel.step(f"s{{k}}"):
                        pass
        for k in range(10):
            with tel.step("loose"):
                pass
        # no flush, no close: exiting must still write everything
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with Database.open(db_path) as db:
        assert TelemetryStore(db).count_steps() == 50 * 20 + 10
        assert db.read("SELECT COUNT(*) FROM telemetry_turns")[0][0] == 50


def test_turn_json_has_the_documented_fields():
    tel = Telemetry(sample_interval_s=None)
    with tel.turn(session_id="s", turn_id="t") as turn:
        with tel.step("response", agent="response", model="default") as s:
            s.add_tokens(tokens_in=4, tokens_out=2)
    tel.close()
    data = json.loads(json.dumps(turn_json(turn.record, "hello", model="default")))
    assert data["response"] == "hello" and data["model"] == "default"
    assert data["peak_rss_bytes"] == turn.record.peak_rss_bytes > 0
    (step,) = data["steps"]
    for key in (
        "name",
        "agent",
        "model",
        "wall_s",
        "rss_before_bytes",
        "rss_after_bytes",
        "rss_peak_bytes",
        "cuda_peak_allocated_bytes",
        "events",
    ):
        assert key in step
    assert (step["name"], step["agent"], step["model"], step["tokens_out"]) == ("response", "response", "default", 2)


def test_trackio_sink_logs_step_metrics(tmp_path, monkeypatch):
    trackio = pytest.importorskip("trackio")
    from mimir.telemetry import TrackioSink

    from trackio.sqlite_storage import SQLiteStorage

    project = f"mimir-test-{tmp_path.name}"
    sink = TrackioSink(project, run_name="run1")
    tel = Telemetry(sinks=[sink], sample_interval_s=None)
    with tel.turn(session_id="s", turn_id="t"):
        with tel.step("routing") as step:
            step.add_tokens(tokens_in=5, tokens_out=1)
    tel.close()
    assert sink.failed_writes == 0
    logs = SQLiteStorage.get_logs(project, "run1")
    merged = {k: v for entry in logs for k, v in entry.items()}
    assert merged["routing/tokens_in"] == 5.0
    assert merged["routing/wall_s"] == pytest.approx(step.record.wall_s)
    assert "turn/wall_s" in merged
    assert trackio.__name__ == "trackio"


def test_step_metrics_for_trackio_are_named_by_step_with_units():
    from mimir.telemetry.sinks import step_metrics

    tel = Telemetry(sample_interval_s=None)
    with tel.step("routing") as step:
        step.add_tokens(tokens_in=3, tokens_out=1)
    tel.close()
    metrics = step_metrics(step.record)
    assert metrics["routing/wall_s"] == step.record.wall_s
    assert metrics["routing/rss_peak_mib"] == step.record.rss_peak_bytes / MiB
    assert metrics["routing/tokens_in"] == 3.0
    assert all(k.startswith("routing/") for k in metrics)
    # GPU numbers appear exactly when the step has them.
    bare = dataclasses.replace(step.record, cuda_peak_allocated_bytes=None, gpu_used_after_bytes=None)
    assert not any("cuda" in k or "gpu" in k for k in step_metrics(bare))
    on_gpu = dataclasses.replace(step.record, cuda_peak_allocated_bytes=512 * MiB, gpu_used_after_bytes=MiB)
    assert step_metrics(on_gpu)["routing/cuda_peak_allocated_mib"] == 512.0
    assert step_metrics(on_gpu)["routing/gpu_used_mib"] == 1.0


def test_trackio_without_the_extra_names_it(tmp_path):
    # trackio is installed for the tests; a ``sys.modules`` guard in a fresh process makes
    # its import fail exactly as if it were not, and the real CLI reports it.
    config = tmp_path / "mimir.toml"
    config.write_text('[telemetry]\ntrackio_project = "mimir"\n\n[models.default]\nbackend = "scripted"\n'
                      'path = "scripted"\n')
    script = textwrap.dedent(
        """
        import runpy, sys
        sys.modules["trackio"] = None
        sys.argv = ["mimir", "-c", sys.argv[1], "ask", "What is a prime number?"]
        runpy.run_module("mimir.cli.main", run_name="__main__")
        """
    )
    out = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and "pip install 'mimir-tutor[trackio]'" in line
    assert "Traceback" not in out.stderr


def test_a_record_that_cannot_be_written_does_not_take_others_with_it(db, caplog):
    store = TelemetryStore(db)
    tel = Telemetry(sample_interval_s=None)
    records = []
    for i in range(50):
        with tel.step(f"s{i}") as step:
            pass
        records.append(step.record)
    tel.close()
    store.save_step(records[25])  # already stored: writing it again breaks the UNIQUE step_id
    sink = SqliteSink(store)
    with caplog.at_level(logging.ERROR, logger="mimir.telemetry"):
        for record in records:
            sink.on_step(record)
        sink.close()
    assert sink.failed_writes == 1
    assert store.count_steps() == 50
    assert any("could not write a telemetry step record" in r.getMessage() for r in caplog.records)
