"""Who may read /metrics when authentication is on: ``mimir serve`` with ``[server] auth =
"password"`` in a subprocess, reached over real HTTP with httpx. Admins and the configured
bearer token may scrape; a signed-in student and an anonymous client may not. The probes
stay open (they carry no user data)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("gradio")

from serving import Server  # noqa: E402

PASSWORDS = {"ada": "admin password 1", "sam": "student pass 1"}
TOKEN = "scrape-token-7f3a"
CONFIG = """
[models.default]
backend = "scripted"
path = "scripted"

[server]
auth = "password"
metrics_token_env = "SCRAPE_TOKEN"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("ops-access")
    config = base / "mimir.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "MIMIR_HOME": str(base / "home"), "MIMIR_CONFIG": str(config), "SCRAPE_TOKEN": TOKEN,
           "GRADIO_ANALYTICS_ENABLED": "False"}
    for name, role in (("ada", "admin"), ("sam", "student")):
        out = subprocess.run([sys.executable, "-m", "mimir.cli.main", "users", "add", name, "--role", role,
                              "--password-stdin"], input=PASSWORDS[name], capture_output=True, text=True, env=env,
                             timeout=120)
        assert out.returncode == 0, out.stderr
    server = Server(env)
    try:
        yield server.ready_url()
    finally:
        server.stop()


def _cookie(url: str, name: str) -> dict[str, str]:
    out = httpx.post(url + "login", data={"name": name, "password": PASSWORDS[name], "next": "/"}, timeout=60)
    return {"mimir_session": out.cookies["mimir_session"]}


def test_metrics_for_admins_and_the_token_only(served):
    url = served
    anonymous = httpx.get(url + "metrics", timeout=60)
    assert anonymous.status_code == 401 and TOKEN not in anonymous.text
    student = httpx.get(url + "metrics", cookies=_cookie(url, "sam"), timeout=60)
    assert student.status_code == 401
    admin = httpx.get(url + "metrics", cookies=_cookie(url, "ada"), timeout=60)
    assert admin.status_code == 200 and "mimir_turns_total" in admin.text
    token = httpx.get(url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert token.status_code == 200
    assert httpx.get(url + "metrics", headers={"Authorization": "Bearer nope"}, timeout=60).status_code == 401


def test_probes_need_no_credentials(served):
    assert httpx.get(served + "healthz", timeout=60).json() == {"status": "alive"}
    ready = httpx.get(served + "readyz", timeout=120)
    assert ready.status_code == 200, ready.text
