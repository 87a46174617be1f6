"""What telemetry records: frozen step and turn records, and their JSON, CSV and SQL shapes.

Raw numbers live in ``*_bytes`` / ``*_s`` fields (``None`` where a probe is absent or failed);
display strings are ``*_str`` properties. :func:`turn_json` is the one place that builds the
JSON object ``mimir ask --json`` (and the tutor pipeline) prints for a turn.

**One source for the step record's fields.** :class:`StepRecord`'s dataclass fields, with the
metadata :func:`step_field` gives them, are the only list of a step's fields. The others are
derived from it: :data:`STEP_JSON_KEYS` (per-step keys of ``ask --json`` and the API),
:data:`STEP_COLUMNS` (columns of the ``telemetry_steps`` table), :data:`STEP_SQL_TYPES` (their
SQL types) and :data:`STEP_CSV_COLUMNS` (the step's columns of ``mimir memory --csv``).

To add a step field (``tokens_evaluated`` was added this way, with migration ``m006``):

1. add it to :class:`StepRecord` with a default, e.g.
   ``tokens_evaluated: int | None = step_field(sql="INTEGER")`` (``json``/``csv`` say whether
   ``ask --json`` and ``memory --csv`` show it; both default to yes);
2. append a migration to :mod:`mimir.storage.migrations` that adds the column (never edit a
   shipped one): ``conn.execute("ALTER TABLE telemetry_steps ADD COLUMN tokens_evaluated INTEGER")``.

The store writes and reads :data:`STEP_COLUMNS` by name, so nothing else changes;
``tests/test_core.py`` fails until the migrated table has exactly these columns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mimir.core.events import ModelEvent
from mimir.core.gpu import GpuMemory
from mimir.units import format_bytes, format_delta_bytes


def step_field(
    *, sql: str | None = "INTEGER", json: bool = True, csv: bool = True, default: Any = None, required: bool = False
) -> Any:
    """A :class:`StepRecord` field and where it appears.

    ``sql``: the column type in ``telemetry_steps`` (portable: TEXT, INTEGER, REAL, BIGINT), or
    None when the field is not a column of its own; ``json``: a key of :func:`step_json`;
    ``csv``: a column of ``mimir memory --csv``. ``required`` fields have no default.
    """
    metadata = {"sql": sql, "json": json, "csv": csv}
    if required:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class StepRecord:
    """One pipeline step: what it was, how long it took, and the memory it moved."""

    step_id: str = step_field(required=True, sql="TEXT", json=False, csv=False)
    name: str = step_field(required=True, sql="TEXT")
    agent: str | None = step_field(required=True, sql="TEXT")
    model: str | None = step_field(required=True, sql="TEXT")
    session_id: str | None = step_field(required=True, sql="TEXT", json=False)
    turn_id: str | None = step_field(required=True, sql="TEXT", json=False)
    #: Position of the step in its turn (order of opening), from 0.
    seq: int = step_field(required=True, sql="INTEGER")
    #: Wall-clock start, seconds since the epoch.
    started_at: float = step_field(required=True, sql="REAL")
    wall_s: float = step_field(required=True, sql="REAL")
    tokens_in: int | None = step_field()
    tokens_out: int | None = step_field()
    #: Prompt tokens the engine actually evaluated; the rest of ``tokens_in`` came from its
    #: prompt cache (a prefix shared with an earlier step or turn). None: not reported.
    tokens_evaluated: int | None = step_field()
    rss_before_bytes: int | None = step_field()
    rss_after_bytes: int | None = step_field()
    #: Highest RSS seen between the start and the end of the step (sampled, plus the
    #: kernel's high-water mark when the step set a new one).
    rss_peak_bytes: int | None = step_field()
    #: Memory the whole system still has available, read at the end of the step.
    system_available_bytes: int | None = step_field()
    cuda_allocated_before_bytes: int | None = step_field(csv=False)
    cuda_allocated_after_bytes: int | None = step_field()
    cuda_reserved_after_bytes: int | None = step_field()
    cuda_peak_allocated_bytes: int | None = step_field()
    gpu_used_before_bytes: int | None = step_field(csv=False)
    gpu_used_after_bytes: int | None = step_field()
    gpu_total_bytes: int | None = step_field()
    #: Per-device NVML reading at the end of the step (stored as JSON in ``gpu_devices_json``).
    gpu_devices: tuple[GpuMemory, ...] = step_field(sql=None, csv=False, default=())
    #: Model-manager events (load, evict, unload, load_failed) that happened inside the step
    #: (stored in the ``telemetry_events`` table).
    events: tuple[ModelEvent, ...] = step_field(sql=None, default=())
    #: ``"ExceptionType: message"`` when the step's block raised.
    error: str | None = step_field(sql="TEXT")

    @property
    def rss_delta_bytes(self) -> int | None:
        if self.rss_before_bytes is None or self.rss_after_bytes is None:
            return None
        return self.rss_after_bytes - self.rss_before_bytes

    @property
    def loads(self) -> int:
        return sum(1 for e in self.events if e.kind == "load")

    @property
    def evictions(self) -> int:
        return sum(1 for e in self.events if e.kind == "evict")

    @property
    def unloads(self) -> int:
        return sum(1 for e in self.events if e.kind == "unload")

    @property
    def rss_after_str(self) -> str:
        return format_bytes(self.rss_after_bytes)

    @property
    def rss_peak_str(self) -> str:
        return format_bytes(self.rss_peak_bytes)

    @property
    def rss_delta_str(self) -> str:
        return format_delta_bytes(self.rss_delta_bytes)

    @property
    def gpu_str(self) -> str:
        """CUDA peak when torch measured one, else NVML used/total, else ``-``."""
        if self.cuda_peak_allocated_bytes is not None:
            return f"cuda_peak={format_bytes(self.cuda_peak_allocated_bytes)}"
        if self.gpu_used_after_bytes is not None:
            return f"{format_bytes(self.gpu_used_after_bytes)}/{format_bytes(self.gpu_total_bytes)}"
        return "-"

    @property
    def events_str(self) -> str:
        return ", ".join(event_str(e) for e in self.events) or "-"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["gpu_devices"] = [dataclasses.asdict(d) for d in self.gpu_devices]
        out["events"] = [event_to_dict(e) for e in self.events]
        out["rss_delta_bytes"] = self.rss_delta_bytes
        return out


@dataclass(frozen=True)
class TurnRecord:
    """One turn: its steps in order and what the turn as a whole cost."""

    session_id: str | None
    turn_id: str
    started_at: float
    wall_s: float
    steps: tuple[StepRecord, ...]
    #: Highest RSS seen during the turn (over its steps, and the turn's own window).
    peak_rss_bytes: int | None
    cuda_peak_allocated_bytes: int | None = None
    error: str | None = None

    @property
    def events(self) -> tuple[ModelEvent, ...]:
        return tuple(e for s in self.steps for e in s.events)

    @property
    def tokens_in(self) -> int:
        return sum(s.tokens_in or 0 for s in self.steps)

    @property
    def tokens_out(self) -> int:
        return sum(s.tokens_out or 0 for s in self.steps)

    @property
    def peak_rss_str(self) -> str:
        return format_bytes(self.peak_rss_bytes)


def event_str(event: ModelEvent) -> str:
    size = format_bytes(event.measured_bytes)
    return f"{event.kind} {event.model_id} ({size})"


def event_to_dict(event: ModelEvent) -> dict[str, Any]:
    return dataclasses.asdict(event)


def _step_keys(view: str) -> tuple[str, ...]:
    """The fields shown in ``view`` ("json" or "csv"), in declaration order, with the derived
    ``rss_delta_bytes`` right after ``rss_peak_bytes``."""
    keys: list[str] = []
    for f in dataclasses.fields(StepRecord):
        if f.metadata[view]:
            keys.append(f.name)
        if f.name == "rss_peak_bytes":
            keys.append("rss_delta_bytes")
    return tuple(keys)


#: The per-step keys of :func:`turn_json`, in order.
STEP_JSON_KEYS: tuple[str, ...] = _step_keys("json")

#: Columns of the ``telemetry_steps`` table that hold one field each (``id`` and
#: ``gpu_devices_json`` are the storage's own), in declaration order.
STEP_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StepRecord) if f.metadata["sql"])

#: SQL type of each :data:`STEP_COLUMNS` column.
STEP_SQL_TYPES: dict[str, str] = {f.name: f.metadata["sql"] for f in dataclasses.fields(StepRecord) if f.metadata["sql"]}

#: Leading columns of ``mimir memory --csv``: the turn a row belongs to, then its place in it.
_CSV_LEAD = ("session_id", "turn_id", "seq")

#: The step record's columns of ``mimir memory --csv``, in order (events joined with "; ").
STEP_CSV_COLUMNS: tuple[str, ...] = _CSV_LEAD + tuple(k for k in _step_keys("csv") if k not in _CSV_LEAD)


def step_json(step: StepRecord) -> dict[str, Any]:
    data = step.to_dict()
    return {key: data[key] for key in STEP_JSON_KEYS}


def turn_json(turn: TurnRecord, response: str, **extra: Any) -> dict[str, Any]:
    """The JSON object for one answered turn: the response, its steps and its peak memory.

    ``extra`` keys (the model, token counts, flags...) are added at the top level.
    """
    out: dict[str, Any] = {
        "response": response,
        "session_id": turn.session_id,
        "turn_id": turn.turn_id,
        "wall_s": turn.wall_s,
        "peak_rss_bytes": turn.peak_rss_bytes,
        "cuda_peak_allocated_bytes": turn.cuda_peak_allocated_bytes,
        "tokens_in": turn.tokens_in,
        "tokens_out": turn.tokens_out,
    }
    out.update(extra)
    out["steps"] = [step_json(s) for s in turn.steps]
    return out
