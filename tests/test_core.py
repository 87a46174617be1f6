"""The shared leaf: the step record's one field list and the one memory reader."""

from __future__ import annotations

import dataclasses

import psutil

from mimir.core.events import ModelEvent
from mimir.core.gpu import GpuMemory
from mimir.core.memory import process_rss_bytes
from mimir.cli.memory import CSV_COLUMNS
from mimir.core.records import STEP_COLUMNS, STEP_CSV_COLUMNS, STEP_JSON_KEYS, STEP_SQL_TYPES, StepRecord, step_json
from mimir.runtime.probe import process_footprint
from mimir.storage.db import Database
from mimir.storage.telemetry_store import TelemetryStore
from mimir.telemetry.probes import ProcessProbe

MiB = 1024 * 1024

#: The public shapes as they were when these lists were five hand-kept copies. New fields may
#: be added anywhere; these keys must stay, in this order.
PUBLISHED_JSON_KEYS = (
    "name", "agent", "model", "seq", "started_at", "wall_s", "tokens_in", "tokens_out", "rss_before_bytes",
    "rss_after_bytes", "rss_peak_bytes", "rss_delta_bytes", "system_available_bytes", "cuda_allocated_before_bytes",
    "cuda_allocated_after_bytes", "cuda_reserved_after_bytes", "cuda_peak_allocated_bytes", "gpu_used_before_bytes",
    "gpu_used_after_bytes", "gpu_total_bytes", "gpu_devices", "events", "error",
)
PUBLISHED_CSV_COLUMNS = (
    "session_id", "turn_id", "seq", "name", "agent", "model", "started_at", "wall_s", "tokens_in", "tokens_out",
    "rss_before_bytes", "rss_after_bytes", "rss_peak_bytes", "rss_delta_bytes", "system_available_bytes",
    "cuda_allocated_after_bytes", "cuda_reserved_after_bytes", "cuda_peak_allocated_bytes", "gpu_used_after_bytes",
    "gpu_total_bytes", "events", "error", "instance",
)


def _in_order(published: tuple[str, ...], derived: tuple[str, ...]) -> bool:
    positions = [derived.index(k) if k in derived else -1 for k in published]
    return -1 not in positions and positions == sorted(positions)


def test_published_json_keys_and_csv_columns_survive_in_their_order():
    assert _in_order(PUBLISHED_JSON_KEYS, STEP_JSON_KEYS)
    assert _in_order(PUBLISHED_CSV_COLUMNS, CSV_COLUMNS)
    assert CSV_COLUMNS[:3] == ("session_id", "turn_id", "seq") and CSV_COLUMNS[-1] == "instance"


def test_every_view_derives_from_the_dataclass_fields():
    fields = [f.name for f in dataclasses.fields(StepRecord)]
    derived = {"rss_delta_bytes"}
    for view in (STEP_JSON_KEYS, STEP_COLUMNS, STEP_CSV_COLUMNS):
        assert set(view) - derived <= set(fields)
    assert set(STEP_COLUMNS) == set(STEP_SQL_TYPES)
    # the nested fields are stored elsewhere (gpu_devices_json, telemetry_events), never as a column
    assert "gpu_devices" not in STEP_COLUMNS and "events" not in STEP_COLUMNS


def test_the_migrated_table_has_exactly_the_declared_columns(tmp_path):
    with Database.open(tmp_path / "mimir.db") as db:
        cols = {r["name"]: r["type"] for r in db.read("PRAGMA table_info(telemetry_steps)")}
    storage_own = {"id": "INTEGER", "gpu_devices_json": "TEXT", "instance_id": "TEXT"}
    assert cols == {**STEP_SQL_TYPES, **storage_own}, (
        "telemetry_steps and StepRecord disagree: add a migration for the new field "
        "(see the docstring of mimir.core.records)"
    )


def _full_step() -> StepRecord:
    """A step with a distinct value in every field."""
    values: dict = {}
    for i, f in enumerate(dataclasses.fields(StepRecord)):
        sql = f.metadata["sql"]
        values[f.name] = f"{f.name}-v" if sql == "TEXT" else float(i) + 0.5 if sql == "REAL" else 1000 + i
    values["gpu_devices"] = (GpuMemory(0, 3 * MiB, 8 * MiB),)
    values["events"] = (ModelEvent("load", "m", "first use", 5 * MiB, 6 * MiB, 0.25, "ram", 12.0),)
    return StepRecord(**values)


def test_every_field_survives_the_database_and_reaches_the_json(tmp_path):
    step = _full_step()
    with Database.open(tmp_path / "mimir.db") as db:
        store = TelemetryStore(db)
        store.save_step(step)
        (back,) = store.recent_steps(turn_id=step.turn_id)
    assert back == step
    data = step_json(back)
    assert list(data) == list(STEP_JSON_KEYS)
    assert data["rss_delta_bytes"] == step.rss_after_bytes - step.rss_before_bytes
    assert data["gpu_devices"] == [{"index": 0, "used_bytes": 3 * MiB, "total_bytes": 8 * MiB}]


def test_the_manager_the_probes_and_the_web_app_read_the_same_rss():
    """One reader: the manager's footprint, the telemetry probe and psutil agree on a real
    allocation (the web app shows ``process_rss_bytes()``)."""
    probe = ProcessProbe()
    try:
        before = process_rss_bytes()
        block = bytearray(48 * MiB)
        for i in range(0, len(block), 4096):  # touch every page so it is resident
            block[i] = 1
        shared, manager, telemetry = process_rss_bytes(), process_footprint().ram_bytes, probe.read("after")["rss_bytes"]
        own = psutil.Process().memory_info().rss
        assert shared - before >= 40 * MiB
        for reading in (manager, telemetry):
            assert abs(reading - shared) < 8 * MiB
        assert abs(own - shared) < 8 * MiB
        del block
    finally:
        probe.close()
