"""docs/grafana/mimir.json: a Grafana dashboard whose queries name metrics /metrics serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from mimir.api.ops import install_ops  # noqa: E402
from mimir.app import MimirApp  # noqa: E402
from mimir.config import settings_from_dict  # noqa: E402

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "mimir.json"
#: Series that exist only with an NVIDIA GPU.
CONDITIONAL = {"mimir_gpu_memory_used_bytes", "mimir_gpu_memory_total_bytes"}


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_metric_the_dashboard_queries_is_served_after_a_turn():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "Mimir" and dashboard["uid"]
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("budget", "loads", "evictions", "latency", "queue"):
        assert topic in titles
    with MimirApp(settings_from_dict({
        "models": {"default": {"backend": "scripted", "path": "s", "options": {"replies": ["ok"]}}},
        "tutor": {"thinking": False},
    })) as app:
        api = FastAPI()
        install_ops(api, app)
        client = TestClient(api)
        app.tutor.run_turn("What is a fraction?")
        client.get("/metrics")  # a request counted before the scrape that is read
        text = client.get("/metrics").text
    served = set()
    for family in text_string_to_metric_families(text):
        served |= {s.name for s in family.samples}
    referenced = {name for expr in _exprs(dashboard) for name in re.findall(r"\bmimir_[a-z_]+", expr)}
    assert referenced, "the dashboard queries no Mimir metric"
    missing = referenced - served - CONDITIONAL
    assert not missing, f"the dashboard queries metrics /metrics does not serve: {sorted(missing)}"
    # The conditional ones are real names of the collector, not typos.
    source = (Path(__file__).resolve().parent.parent / "src" / "mimir" / "ops" / "metrics.py").read_text()
    assert all(name in source for name in CONDITIONAL & referenced)
