"""What ``GET /metrics`` serves: one Prometheus registry per app.

It holds three kinds of series:

- counters and histograms fed by telemetry records (:class:`~mimir.telemetry.metrics.MetricsSink`);
- gauges read at scrape time from snapshots: resident models (:meth:`ModelManager.status`),
  the budget per device, the request queue when one exists, GPU memory through NVML;
- ``mimir_requests_total`` by route and status code, counted by the HTTP middleware.

A scrape costs the same whatever the number of stored turns: nothing here reads the
database (``bench/bench_metrics.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mimir.telemetry.metrics import MetricsSink, prometheus

if TYPE_CHECKING:
    from mimir.app import MimirApp

#: Content type of the Prometheus text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector:
    """Gauges read from snapshots at scrape time (never from the database)."""

    def __init__(self, app: MimirApp, queue_depth: Callable[[], int | None]):
        self._app = app
        self._queue_depth = queue_depth

    def describe(self) -> list:
        return []  # collected at scrape time only; skips the registry's collect() at register

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        from mimir.core.gpu import gpu_memory

        status = self._app.manager.status()
        resident = GaugeMetricFamily(
            "mimir_model_resident_bytes",
            "Memory of each resident model: the estimate made before loading, and what the load measured.",
            labels=["model", "kind"],
        )
        for m in status.resident:
            resident.add_metric([m.model_id, "estimate"], m.estimate_bytes)
            resident.add_metric([m.model_id, "measured"], m.measured_bytes)
        yield resident
        budget = GaugeMetricFamily("mimir_budget_bytes", "Memory budget for loaded models, by device.",
                                   labels=["device"])
        budget.add_metric(["ram"], status.budget_ram_bytes)
        if status.budget_gpu_bytes is not None:
            budget.add_metric(["gpu"], status.budget_gpu_bytes)
        yield budget
        used = GaugeMetricFamily("mimir_budget_used_bytes", "Budget charged to resident models, by device.",
                                 labels=["device"])
        used.add_metric(["ram"], status.used_ram_bytes)
        used.add_metric(["gpu"], status.used_gpu_bytes)
        yield used
        depth = self._queue_depth()
        if depth is not None:
            yield GaugeMetricFamily("mimir_queue_depth", "Turns waiting in the admission queue for a slot.",
                                    value=depth)
        devices = gpu_memory()
        if devices:
            gpu_used = GaugeMetricFamily("mimir_gpu_memory_used_bytes", "GPU memory in use (NVML), all processes.",
                                         labels=["gpu"])
            gpu_total = GaugeMetricFamily("mimir_gpu_memory_total_bytes", "GPU memory (NVML).", labels=["gpu"])
            for d in devices:
                gpu_used.add_metric([str(d.index)], d.used_bytes)
                gpu_total.add_metric([str(d.index)], d.total_bytes)
            yield gpu_used
            yield gpu_total


def no_queue() -> int | None:
    return None


class ServerMetrics:
    """The registry, the telemetry sink feeding it, and the request counter."""

    def __init__(self, app: MimirApp, *, queue_depth: Callable[[], int | None] = no_queue):
        pc = prometheus()
        # No ``*_created`` series: they double the exposition, and Prometheus needs none of them.
        pc.disable_created_metrics()
        self.registry = pc.CollectorRegistry(auto_describe=False)
        self.sink = MetricsSink(self.registry, models=app.settings.models)
        self.requests = pc.Counter(
            "mimir_requests", "HTTP requests by route (the route's template, never the raw path) and status code.",
            ["route", "code"], registry=self.registry,
        )
        self.registry.register(_StateCollector(app, queue_depth))
        app.telemetry.add_sink(self.sink)

    def count_request(self, route: str, code: int) -> None:
        self.requests.labels(route=route, code=str(code)).inc()

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return prometheus().generate_latest(self.registry)
