"""OpenTelemetry export: a real tutor turn (scripted model, real recorder and probes) becomes
one trace with a span per step, read back through the SDK's in-memory exporter."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from mimir.app import MimirApp  # noqa: E402
from mimir.config import settings_from_dict  # noqa: E402
from mimir.telemetry.otel import OtelSink  # noqa: E402
from mimir.telemetry.setup import parse_telemetry_options  # noqa: E402


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def _app() -> MimirApp:
    return MimirApp(settings_from_dict({
        "models": {"default": {"backend": "scripted", "path": "s",
                               "options": {"replies": ["Let us add the numerators first."], "size_bytes": 4096}}},
        "tutor": {"thinking": False, "deciders": {"routing": "model"}},
    }))


def test_a_turn_is_one_trace_with_a_span_per_step(exporter):
    memory, provider = exporter
    with _app() as app:
        app.telemetry.add_sink(OtelSink(provider))
        app.tutor.run_turn("How do I add 1/2 and 1/3?")
    spans = memory.get_finished_spans()
    roots = [s for s in spans if s.name == "mimir.turn"]
    assert len(roots) == 1
    root = roots[0]
    steps = [s for s in spans if s.parent is not None]
    assert len(spans) == len(steps) + 1
    assert all(s.context.trace_id == root.context.trace_id and s.parent.span_id == root.context.span_id
               for s in steps)
    assert root.attributes["mimir.turn.steps"] == len(steps)
    assert root.attributes["gen_ai.conversation.id"]
    by_name = {s.name: s for s in steps}
    response = by_name["response"]
    assert response.attributes["gen_ai.request.model"] == "default"
    assert response.attributes["gen_ai.operation.name"] == "chat"
    assert response.attributes["gen_ai.usage.output_tokens"] > 0
    assert response.attributes["gen_ai.usage.input_tokens"] > 0
    assert response.attributes["mimir.memory.rss_peak_bytes"] > 0
    assert root.start_time <= min(s.start_time for s in steps)
    assert root.end_time >= max(s.end_time for s in steps)
    # The first model use loaded the model: that step carries the load as a span event.
    loads = [e for s in steps for e in s.events if e.name == "model.load"]
    assert len(loads) == 1 and loads[0].attributes["mimir.model.id"] == "default"
    assert root.attributes["gen_ai.usage.output_tokens"] == sum(
        s.attributes.get("gen_ai.usage.output_tokens", 0) for s in steps)


def test_a_failed_step_is_an_error_span(exporter):
    memory, provider = exporter
    with _app() as app:
        app.telemetry.add_sink(OtelSink(provider))
        with pytest.raises(RuntimeError):
            with app.telemetry.step("lookup", agent="tool"):
                raise RuntimeError("index gone")
    (span,) = memory.get_finished_spans()
    assert span.name == "lookup" and span.parent is None  # a step outside a turn is its own trace
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert "gen_ai.request.model" not in span.attributes


def test_otel_is_a_telemetry_setting():
    assert parse_telemetry_options({"otel": True}).otel
    assert not parse_telemetry_options({}).otel
