"""/healthz and /readyz: real database files, the bundled model through llama.cpp, real faults
(a deleted model file, a database another connection holds locked, a generation that hangs)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

pytest.importorskip("fastapi")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from mimir.api.ops import install_ops  # noqa: E402
from mimir.app import MimirApp  # noqa: E402
from mimir.config import settings_from_dict  # noqa: E402
from mimir.ops.health import ReadinessProbe  # noqa: E402


def _client(app: MimirApp) -> TestClient:
    api = FastAPI()
    install_ops(api, app)
    return TestClient(api)


@pytest.fixture
def model_copy(bundled_gguf, tmp_path):
    path = tmp_path / "models" / "small.gguf"
    path.parent.mkdir()
    shutil.copyfile(bundled_gguf, path)
    return path


def _gguf_app(path, **server) -> MimirApp:
    return MimirApp(settings_from_dict({
        "models": {"small": {"path": str(path), "context_length": 512, "threads": 2}},
        # A generous deadline: this shared test machine may be slow; the deadline itself is
        # tested with a scripted model below.
        "server": {"ready_cache": 0, "ready_timeout": "120s", **server},
    }))


def test_healthz_is_alive_even_when_the_model_cannot_load():
    app = MimirApp(settings_from_dict({"models": {"m": {"path": "/nowhere/missing.gguf"}}, "server": {"metrics": False}}))
    with app:
        client = _client(app)
        assert client.get("/healthz").json() == {"status": "alive"}
        assert "manager" not in app.__dict__  # liveness never touches models
        assert client.get("/readyz").json()["failing"] == ["model"]


@pytest.mark.slow
def test_readyz_generates_one_token_then_fails_when_the_model_file_is_deleted(model_copy):
    with _gguf_app(model_copy) as app:
        client = _client(app)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready"
        assert body["checks"]["generation"]["ok"]
        assert "generated" in body["checks"]["generation"]["detail"]
        assert app.manager.status().get("small") is not None  # through the manager's real load path

        model_copy.unlink()
        app.manager.unload("small")
        gone = client.get("/readyz")
        assert gone.status_code == 503
        assert gone.json()["failing"] == ["model"]
        assert str(model_copy) in gone.json()["checks"]["model"]["detail"]


@pytest.mark.slow
def test_readyz_names_the_failed_load_when_the_file_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with _gguf_app(bad) as app:
        out = _client(app).get("/readyz")
    assert out.status_code == 503
    assert out.json()["failing"] == ["generation"]
    assert "bad magic" in out.json()["checks"]["generation"]["detail"]


def test_readyz_is_503_while_another_connection_holds_the_database(tmp_path):
    app = MimirApp(settings_from_dict({"models": {"m": {"backend": "scripted", "path": "s"}}, "server": {"ready_cache": 0}}))
    with app:
        client = _client(app)
        assert client.get("/readyz").status_code == 200
        holder = sqlite3.connect(str(app.settings.db_path), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            locked = client.get("/readyz")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert locked.status_code == 503
        assert locked.json()["failing"] == ["database"]
        assert "locked" in locked.json()["checks"]["database"]["detail"]
        assert client.get("/readyz").status_code == 200


def test_a_slow_generation_fails_readiness_by_the_deadline_and_stays_visible():
    # The scripted model's load takes 1.5 s: longer than the 0.3 s deadline, as a stuck path would.
    app = MimirApp(settings_from_dict({"models": {"m": {"backend": "scripted", "path": "s", "options": {"load_s": 1.5}}}}))
    with app:
        probe = ReadinessProbe(app, timeout_s=0.3, cache_s=0)
        first = probe.check()
        assert not first.ok and first.failing == ("generation",)
        assert "no token within 0.3s" in first.checks[-1].detail
        second = probe.check()  # the first probe's thread is still inside the load: no second thread
        assert second.failing == ("generation",)
        assert "still running" in second.checks[-1].detail
        probe._generation.join(10)
        assert probe.check().ok


def test_readiness_is_cached_for_the_configured_time():
    now = [100.0]
    app = MimirApp(settings_from_dict({"models": {"m": {"backend": "scripted", "path": "s"}}}))
    with app:
        probe = ReadinessProbe(app, timeout_s=5, cache_s=5, clock=lambda: now[0])
        first = probe.check()
        now[0] += 4.9
        assert probe.check() is first
        now[0] += 0.2
        assert probe.check() is not first
