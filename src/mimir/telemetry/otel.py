"""OpenTelemetry export (extra: ``otel``): each turn becomes one trace, with a root span for
the turn and one child span per step, timed from the records' own clocks.

Attribute names follow the GenAI semantic conventions where one exists
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``gen_ai.agent.name``, ``gen_ai.conversation.id``); Mimir's
memory figures are ``mimir.memory.*`` attributes, and model-manager events (load, evict,
unload) are span events. A step outside any turn is a trace of its own.

Turn it on with ``[telemetry] otel = true``. Spans go to the global tracer provider when the
application configured one (``opentelemetry-instrument``, or code); otherwise Mimir sets up
the SDK with the OTLP/HTTP exporter, which reads the standard ``OTEL_EXPORTER_OTLP_*``
environment variables (default ``http://localhost:4318``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mimir.errors import MissingExtraError
from mimir.core.records import StepRecord, TurnRecord
from mimir.telemetry.sinks import Sink

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

_NS = 1_000_000_000


def _trace():
    try:
        from opentelemetry import trace
    except ImportError:
        raise MissingExtraError("opentelemetry-api", "otel", "Exporting telemetry to OpenTelemetry") from None
    return trace


def default_tracer_provider() -> TracerProvider:
    """The global provider if the application set one, else an SDK provider exporting OTLP/HTTP."""
    trace = _trace()
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise MissingExtraError("opentelemetry-sdk", "otel", "Exporting telemetry to OpenTelemetry") from None
    provider = SdkTracerProvider(resource=Resource.create({"service.name": "mimir"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def step_attributes(record: StepRecord) -> dict[str, Any]:
    """A step's span attributes (None values left out: OpenTelemetry refuses them)."""
    attrs: dict[str, Any] = {
        "mimir.step.name": record.name,
        "mimir.step.seq": record.seq,
        "gen_ai.agent.name": record.agent,
        "mimir.memory.rss_before_bytes": record.rss_before_bytes,
        "mimir.memory.rss_after_bytes": record.rss_after_bytes,
        "mimir.memory.rss_peak_bytes": record.rss_peak_bytes,
        "mimir.memory.rss_delta_bytes": record.rss_delta_bytes,
        "mimir.memory.system_available_bytes": record.system_available_bytes,
        "mimir.memory.cuda_peak_allocated_bytes": record.cuda_peak_allocated_bytes,
        "mimir.memory.gpu_used_after_bytes": record.gpu_used_after_bytes,
        "mimir.model.loads": record.loads,
        "mimir.model.evictions": record.evictions,
    }
    if record.model is not None:
        attrs["gen_ai.operation.name"] = "chat"
        attrs["gen_ai.request.model"] = record.model
    if record.tokens_in is not None:
        attrs["gen_ai.usage.input_tokens"] = record.tokens_in
    if record.tokens_out is not None:
        attrs["gen_ai.usage.output_tokens"] = record.tokens_out
    if record.tokens_evaluated is not None:  # prompt tokens really evaluated (after prefix reuse)
        attrs["mimir.usage.evaluated_tokens"] = record.tokens_evaluated
    if record.error:
        attrs["error.type"] = record.error.split(":", 1)[0]
    return {k: v for k, v in attrs.items() if v is not None}


class OtelSink(Sink):
    """Turns and steps as OpenTelemetry spans, on ``tracer_provider`` (default: see module)."""

    def __init__(self, tracer_provider: TracerProvider | None = None):
        trace = _trace()
        self._trace = trace
        from opentelemetry.trace import Status, StatusCode

        self._status = (Status, StatusCode)
        provider = tracer_provider or default_tracer_provider()
        from mimir import __version__

        self._tracer = provider.get_tracer("mimir", __version__)

    def _step_span(self, record: StepRecord, context=None) -> None:
        start = int(record.started_at * _NS)
        span = self._tracer.start_span(record.name, context=context, start_time=start,
                                       attributes=step_attributes(record))
        for event in record.events:
            span.add_event(f"model.{event.kind}", timestamp=int(event.at * _NS), attributes={
                k: v for k, v in {"mimir.model.id": event.model_id, "mimir.model.reason": event.reason,
                                  "mimir.model.estimate_bytes": event.estimate_bytes,
                                  "mimir.model.measured_bytes": event.measured_bytes,
                                  "mimir.model.device": event.device}.items() if v is not None})
        if record.error:
            Status, StatusCode = self._status
            span.set_status(Status(StatusCode.ERROR, record.error))
        span.end(end_time=start + int(record.wall_s * _NS))

    def on_step(self, record: StepRecord) -> None:
        if record.turn_id is None:  # steps of a turn are exported with it
            self._step_span(record)

    def on_turn(self, record: TurnRecord) -> None:
        start = int(record.started_at * _NS)
        attrs = {
            "mimir.turn.id": record.turn_id,
            "gen_ai.conversation.id": record.session_id,
            "gen_ai.usage.input_tokens": record.tokens_in,
            "gen_ai.usage.output_tokens": record.tokens_out,
            "mimir.memory.rss_peak_bytes": record.peak_rss_bytes,
            "mimir.memory.cuda_peak_allocated_bytes": record.cuda_peak_allocated_bytes,
            "mimir.turn.steps": len(record.steps),
        }
        root = self._tracer.start_span("mimir.turn", start_time=start,
                                       attributes={k: v for k, v in attrs.items() if v is not None})
        context = self._trace.set_span_in_context(root)
        for step in record.steps:
            self._step_span(step, context)
        if record.error:
            Status, StatusCode = self._status
            root.set_status(Status(StatusCode.ERROR, record.error))
        root.end(end_time=start + int(record.wall_s * _NS))
