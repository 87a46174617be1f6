"""Prometheus metrics from telemetry records: a sink that counts steps, turns, tokens and
model-manager events into a ``prometheus_client`` registry (extra: ``ui``).

The sink only listens, like the other sinks: it never calls the manager. Everything it
counts comes from :class:`~mimir.core.records.StepRecord`, :class:`TurnRecord` and the
manager's events, so its numbers agree with the rows the SQLite sink stores.

Labels stay bounded: step names come from the pipeline, agents are roles, models are the
configured ids. No session, turn or user ids ever become a label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mimir.errors import MissingExtraError
from mimir.core.records import StepRecord, TurnRecord
from mimir.telemetry.sinks import Sink

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mimir.core.events import ModelEvent

_MIB = 1024 * 1024
#: Step latency buckets, seconds: rule decisions take milliseconds, responses tens of seconds.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Peak RSS buckets: powers of two from 64 MiB to 64 GiB.
RSS_BUCKETS_BYTES = tuple(float(_MIB * 2**i) for i in range(6, 17))
#: ``model`` label for a step that used no model (a rule-based decision).
NO_MODEL = "none"
_EVENT_COUNTERS = {"load": "loads", "evict": "evictions", "unload": "unloads", "load_failed": "load_failures"}


def prometheus():
    try:
        import prometheus_client
    except ImportError:
        raise MissingExtraError("prometheus_client", "ui", "Prometheus metrics (/metrics)") from None
    return prometheus_client


class MetricsSink(Sink):
    """Counts every step, turn and model event into ``registry``. Cheap and thread-safe
    (``prometheus_client`` metrics lock per value), so it runs in the generating thread."""

    def __init__(self, registry: CollectorRegistry, models: Iterable[str] = ()):
        """``models``: configured ids whose event counters exist (at 0) before any event."""
        pc = prometheus()
        self.registry = registry
        self.step_duration = pc.Histogram(
            "mimir_step_duration_seconds", "Wall time of one pipeline step.",
            ["step", "agent", "model"], buckets=DURATION_BUCKETS_S, registry=registry,
        )
        self.step_peak_rss = pc.Histogram(
            "mimir_step_peak_rss_bytes", "Highest process RSS seen during one pipeline step.",
            ["step", "model"], buckets=RSS_BUCKETS_BYTES, registry=registry,
        )
        self.turns = pc.Counter("mimir_turns", "Finished tutor turns, by outcome (ok, error).", ["status"],
                                registry=registry)
        self.tokens = pc.Counter(
            "mimir_tokens", "Tokens by model and direction: in (prompt), out (generated), evaluated (prompt tokens the engine "
            "really evaluated, after prefix reuse; when the backend reports it).",
            ["model", "direction"], registry=registry,
        )
        self.events = {
            kind: pc.Counter(f"mimir_model_{name}", f"Model-manager {kind} events.", ["model"], registry=registry)
            for kind, name in _EVENT_COUNTERS.items()
        }
        for status in ("ok", "error"):
            self.turns.labels(status=status)  # series exist from the start (rate() and alerts need them)
        for model in models:
            for counter in self.events.values():
                counter.labels(model=model)

    def on_step(self, record: StepRecord) -> None:
        model = record.model or NO_MODEL
        self.step_duration.labels(step=record.name, agent=record.agent or "none", model=model).observe(record.wall_s)
        if record.rss_peak_bytes is not None:
            self.step_peak_rss.labels(step=record.name, model=model).observe(record.rss_peak_bytes)
        if record.tokens_in is not None or record.tokens_out is not None:
            self.tokens.labels(model=model, direction="in").inc(record.tokens_in or 0)
            self.tokens.labels(model=model, direction="out").inc(record.tokens_out or 0)
        if record.tokens_evaluated is not None:
            self.tokens.labels(model=model, direction="evaluated").inc(record.tokens_evaluated)
        for event in record.events:
            self.on_event(event)

    def on_turn(self, record: TurnRecord) -> None:
        self.turns.labels(status="error" if record.error else "ok").inc()

    def on_event(self, event: ModelEvent) -> None:
        counter = self.events.get(event.kind)
        if counter is not None:
            counter.labels(model=event.model_id).inc()
