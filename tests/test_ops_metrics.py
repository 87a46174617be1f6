"""GET /metrics: real turns through the bundled model, parsed with prometheus_client's parser,
and checked against the telemetry rows the same turns stored."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from mimir.api.openai import TUTOR_MODEL, install  # noqa: E402
from mimir.api.ops import install_ops  # noqa: E402
from mimir.app import MimirApp  # noqa: E402
from mimir.config import settings_from_dict  # noqa: E402
from mimir.errors import ConfigError  # noqa: E402


def _app(gguf, **server) -> MimirApp:
    return MimirApp(settings_from_dict({
        "models": {"small": {"path": str(gguf), "context_length": 1024, "threads": 2}},
        "tutor": {"thinking": False, "response_max_tokens": 6, "deciders": {"tool": "rules", "routing": "model"}},
        "server": server,
    }))


def _client(app: MimirApp) -> TestClient:
    api = FastAPI()
    install(api, app)
    install_ops(api, app)
    return TestClient(api)


def _samples(text: str) -> dict[str, list]:
    """metric family name -> samples, as prometheus_client parses the exposition."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples, name: str, **labels) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.slow
def test_metrics_after_real_turns_match_the_telemetry_rows(bundled_gguf):
    with _app(bundled_gguf) as app:
        client = _client(app)
        for question in ("What is a fraction?", "How do I add 1/2 and 1/3?"):
            body = {"model": TUTOR_MODEL, "session_id": "new", "messages": [{"role": "user", "content": question}]}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
        scrape = client.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        app.telemetry.flush()
        turns = app.db.read("SELECT COUNT(*) AS n, SUM(CASE WHEN error IS NULL THEN 1 ELSE 0 END) AS ok "
                            "FROM telemetry_turns")[0]
        steps = app.db.read("SELECT name, agent, model, COUNT(*) AS n, SUM(wall_s) AS wall, "
                            "SUM(tokens_in) AS tin, SUM(tokens_out) AS tout, SUM(tokens_evaluated) AS tev FROM telemetry_steps "
                            "GROUP BY name, agent, model")
        loads = app.db.read("SELECT COUNT(*) AS n FROM telemetry_events WHERE kind = 'load'")[0]["n"]

    m = _samples(scrape.text)
    assert turns["n"] == 2
    assert _value(m["mimir_turns"], "mimir_turns_total", status="ok") == turns["ok"] == 2
    assert _value(m["mimir_turns"], "mimir_turns_total", status="error") == 0
    durations = m["mimir_step_duration_seconds"]
    for row in steps:
        labels = {"step": row["name"], "agent": row["agent"] or "none", "model": row["model"] or "none"}
        assert _value(durations, "mimir_step_duration_seconds_count", **labels) == row["n"]
        assert _value(durations, "mimir_step_duration_seconds_sum", **labels) == pytest.approx(row["wall"])
    assert _value(durations, "mimir_step_duration_seconds_count") == sum(r["n"] for r in steps)
    tokens = m["mimir_tokens"]
    total_in = sum(r["tin"] or 0 for r in steps if r["model"] == "small")
    total_out = sum(r["tout"] or 0 for r in steps if r["model"] == "small")
    assert total_out > 0
    assert _value(tokens, "mimir_tokens_total", model="small", direction="in") == total_in
    assert _value(tokens, "mimir_tokens_total", model="small", direction="out") == total_out
    total_evaluated = sum(r["tev"] or 0 for r in steps if r["model"] == "small")
    assert 0 < total_evaluated <= total_in  # the engine reports it; a reused prefix is not evaluated again
    assert _value(tokens, "mimir_tokens_total", model="small", direction="evaluated") == total_evaluated
    assert _value(m["mimir_model_loads"], "mimir_model_loads_total", model="small") == loads == 1
    peak = m["mimir_step_peak_rss_bytes"]
    assert _value(peak, "mimir_step_peak_rss_bytes_count") == sum(r["n"] for r in steps)
    resident = m["mimir_model_resident_bytes"]
    assert _value(resident, "mimir_model_resident_bytes", model="small", kind="estimate") > 0
    assert _value(resident, "mimir_model_resident_bytes", model="small", kind="measured") > 0
    assert _value(m["mimir_budget_bytes"], "mimir_budget_bytes", device="ram") > 0
    requests = m["mimir_requests"]
    assert _value(requests, "mimir_requests_total", route="/v1/chat/completions", code="200") == 2
    # Bounded labels: no session or turn id appears anywhere in the exposition.
    label_names = {k for samples in m.values() for s in samples for k in s.labels}
    assert label_names <= {"step", "agent", "model", "status", "direction", "kind", "device", "route", "code",
                           "le", "gpu"}


def _scripted_app(**server) -> MimirApp:
    return MimirApp(settings_from_dict({
        "models": {"default": {"backend": "scripted", "path": "s", "options": {"replies": ["ok"]}}},
        "tutor": {"thinking": False},
        "server": server,
    }))


def test_metrics_can_be_turned_off():
    with _scripted_app(metrics=False) as app:
        client = _client(app)
        assert client.get("/metrics").status_code == 404
        assert client.get("/healthz").status_code == 200
        assert app.server_metrics is None


def test_metrics_need_the_bearer_token_when_one_is_configured(monkeypatch):
    monkeypatch.setenv("SCRAPE_TOKEN", "s3cret-token")
    with _scripted_app(metrics_token_env="SCRAPE_TOKEN") as app:
        client = _client(app)
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert "s3cret" not in refused.text
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert "mimir_requests_total" in ok.text
        # Refused scrapes are counted too, under the route's template.
        assert 'mimir_requests_total{code="401",route="/metrics"} 2.0' in ok.text


def test_unmatched_paths_share_one_route_label():
    with _scripted_app() as app:
        client = _client(app)
        for i in range(3):
            assert client.get(f"/no/such/page/{i}").status_code == 404
        text = client.get("/metrics").text
    assert 'mimir_requests_total{code="404",route="other"} 3.0' in text
    assert "/no/such" not in text


def test_server_keys_are_checked_when_settings_load():
    with pytest.raises(ConfigError, match="server.metrics"):
        settings_from_dict({"server": {"metrics": "yes"}})
    with pytest.raises(ConfigError, match="server.ready_timeout"):
        settings_from_dict({"server": {"ready_timeout": "soon"}})


def test_queue_depth_is_the_admission_queues_waiting_turns():
    with _scripted_app() as app:
        client = _client(app)
        assert _value(_samples(client.get("/metrics").text)["mimir_queue_depth"], "mimir_queue_depth") == 0
        running = app.queue.enter("ada")
        running.wait()  # holds the only slot
        waiting = [app.queue.enter(user) for user in ("bo", "cy")]
        try:
            depth = _samples(client.get("/metrics").text)["mimir_queue_depth"]
            assert _value(depth, "mimir_queue_depth") == 2 == app.queue.depth
        finally:
            for ticket in (*waiting, running):
                ticket.release()
        assert _value(_samples(client.get("/metrics").text)["mimir_queue_depth"], "mimir_queue_depth") == 0
