"""What telemetry records: frozen step and turn records, and their JSON shapes.

Raw numbers live in ``*_bytes`` / ``*_s`` fields (``None`` where a probe is absent or failed);
display strings are ``*_str`` properties. :func:`turn_json` is the one place that builds the
JSON object ``mimir ask --json`` (and the tutor pipeline) prints for a turn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mimir.runtime.manager import ModelEvent
from mimir.telemetry.gpu import GpuMemory
from mimir.units import format_bytes, format_delta_bytes


@dataclass(frozen=True)
class StepRecord:
    """One pipeline step: what it was, how long it took, and the memory it moved."""

    step_id: str
    name: str
    agent: str | None
    model: str | None
    session_id: str | None
    turn_id: str | None
    #: Position of the step in its turn (order of opening), from 0.
    seq: int
    #: Wall-clock start, seconds since the epoch.
    started_at: float
    wall_s: float
    tokens_in: int | None = None
    tokens_out: int | None = None
    #: Prompt tokens the engine actually evaluated; the rest of ``tokens_in`` came from its
    #: prompt cache (a prefix shared with an earlier step or turn). None: not reported.
    tokens_evaluated: int | None = None
    rss_before_bytes: int | None = None
    rss_after_bytes: int | None = None
    #: Highest RSS seen between the start and the end of the step (sampled, plus the
    #: kernel's high-water mark when the step set a new one).
    rss_peak_bytes: int | None = None
    #: Memory the whole system still has available, read at the end of the step.
    system_available_bytes: int | None = None
    cuda_allocated_before_bytes: int | None = None
    cuda_allocated_after_bytes: int | None = None
    cuda_reserved_after_bytes: int | None = None
    cuda_peak_allocated_bytes: int | None = None
    gpu_used_before_bytes: int | None = None
    gpu_used_after_bytes: int | None = None
    gpu_total_bytes: int | None = None
    #: Per-device NVML reading at the end of the step.
    gpu_devices: tuple[GpuMemory, ...] = ()
    #: Model-manager events (load, evict, unload, load_failed) that happened inside the step.
    events: tuple[ModelEvent, ...] = ()
    #: ``"ExceptionType: message"`` when the step's block raised.
    error: str | None = None

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


#: The per-step keys of :func:`turn_json`, in order.
STEP_JSON_KEYS: tuple[str, ...] = (
    "name",
    "agent",
    "model",
    "seq",
    "started_at",
    "wall_s",
    "tokens_in",
    "tokens_out",
    "tokens_evaluated",
    "rss_before_bytes",
    "rss_after_bytes",
    "rss_peak_bytes",
    "rss_delta_bytes",
    "system_available_bytes",
    "cuda_allocated_before_bytes",
    "cuda_allocated_after_bytes",
    "cuda_reserved_after_bytes",
    "cuda_peak_allocated_bytes",
    "gpu_used_before_bytes",
    "gpu_used_after_bytes",
    "gpu_total_bytes",
    "gpu_devices",
    "events",
    "error",
)


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
