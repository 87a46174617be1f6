"""Access control over real HTTP: ``mimir serve`` in a subprocess with ``[server] auth =
"password"``, reached with httpx, the real ``openai`` client and ``gradio_client``.

One server (module scope) serves a class: an admin (ada), two students (sam, kim), API
keys for both students, and a real Hugging Face cache tree that nobody but an admin may
prune. Models are scripted (fast and exact); tests/test_ui_browser.py signs in with a
real browser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("gradio")

from cache_trees import build_cache  # noqa: E402
from serving import Server  # noqa: E402

PASSWORDS = {"ada": "admin password 1", "sam": "student pass 1", "kim": "student pass 2"}
REPLY = "Start from what you know."
CONFIG = f"""
[models.default]
backend = "scripted"
path = "scripted"
options = {{ replies = ["{REPLY}"] }}

[tutor]
thinking = false

[server]
auth = "password"
"""


def cli(env: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "mimir.cli.main", *args], input=stdin, capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def school(tmp_path_factory):
    base = tmp_path_factory.mktemp("school")
    tree = build_cache(base / "hf")
    config = base / "mimir.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "MIMIR_HOME": str(base / "home"), "MIMIR_CONFIG": str(config),
           "HF_HUB_CACHE": str(tree.root), "GRADIO_ANALYTICS_ENABLED": "False"}
    cli(env, "users", "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSWORDS["ada"])
    cli(env, "users", "add", "sam", "--password-stdin", stdin=PASSWORDS["sam"])
    cli(env, "users", "add", "kim", "--password-stdin", stdin=PASSWORDS["kim"])
    keys = {name: cli(env, "keys", "create", name).stdout.strip() for name in ("sam", "kim")}
    server = Server(env)
    try:
        url = server.ready_url()
        yield {"url": url, "env": env, "keys": keys, "tree": tree, "server": server}
        assert server.proc.poll() is None, "the server died during the tests:\n" + server.output
    finally:
        server.stop()


def sign_in(url: str, name: str, password: str | None = None, **headers) -> httpx.Response:
    return httpx.post(url + "login", data={"name": name, "password": password or PASSWORDS[name], "next": "/"},
                      headers=headers, timeout=60)


def cookie_of(response: httpx.Response) -> str:
    return response.cookies["mimir_session"]


# -- starting ----------------------------------------------------------------------------


def test_serve_refuses_a_non_loopback_bind_without_auth(tmp_path):
    env = {**os.environ, "MIMIR_HOME": str(tmp_path / "home")}
    refused = Server(env, "--host", "0.0.0.0")
    try:
        assert refused.wait() == 2
    finally:
        refused.stop()
    assert "server.auth" in refused.output and 'auth = "password"' in refused.output
    assert "--insecure-no-auth" in refused.output and "Traceback" not in refused.output
    assert "Mimir web app" not in refused.output  # nothing was bound


def test_insecure_no_auth_starts_anyway_with_a_warning(tmp_path):
    env = {**os.environ, "MIMIR_HOME": str(tmp_path / "home")}
    server = Server(env, "--host", "0.0.0.0", "--insecure-no-auth")
    try:
        server.url()
        assert "warning: --insecure-no-auth" in server.output and "is an admin" in server.output
    finally:
        server.stop()


def test_password_mode_without_an_admin_refuses_to_start(tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text('[server]\nauth = "password"\n')
    env = {**os.environ, "MIMIR_HOME": str(tmp_path / "home"), "MIMIR_CONFIG": str(config)}
    server = Server(env)
    try:
        assert server.wait() == 2
    finally:
        server.stop()
    assert "no admin exists yet" in server.output and "mimir users add NAME --role admin" in server.output


# -- nothing without credentials ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/config"), ("GET", "/gradio_api/info"), ("POST", "/gradio_api/queue/join"),
     ("GET", "/gradio_api/queue/data?session_hash=x"), ("POST", "/gradio_api/upload"),
     ("GET", "/gradio_api/file=/etc/passwd"), ("GET", "/theme.css"), ("GET", "/v1/models"),
     ("POST", "/v1/chat/completions"), ("POST", "/logout")],
)
def test_no_request_without_credentials_reads_or_changes_anything(school, method, path):
    out = httpx.request(method, school["url"].rstrip("/") + path, timeout=30)
    assert out.status_code in (401, 405) or (out.status_code == 303 and "/login" in out.headers["location"])
    if path.startswith("/v1"):
        assert out.status_code == 401
        error = out.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"


def test_a_page_load_without_sign_in_goes_to_the_login_page(school):
    out = httpx.get(school["url"], headers={"Accept": "text/html"}, timeout=30)
    assert out.status_code == 303 and out.headers["location"] == "/login?next=/"
    page = httpx.get(school["url"] + "login", timeout=30)
    assert page.status_code == 200 and 'id="login-form"' in page.text
    assert "Mimir tutor" in page.text and "Memory" not in page.text


# -- signing in and out ------------------------------------------------------------------


def test_sign_in_sets_an_http_only_same_site_cookie_and_sign_out_ends_it(school):
    url = school["url"]
    out = sign_in(url, "sam")
    assert out.status_code == 303 and out.headers["location"] == "/"
    header = out.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header and "Secure" not in header
    token = cookie_of(out)
    page = httpx.get(url, cookies={"mimir_session": token}, headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    gone = httpx.post(url + "logout", cookies={"mimir_session": token}, timeout=30)
    assert gone.status_code == 303 and "Max-Age=0" in gone.headers["set-cookie"]
    after = httpx.get(url + "gradio_api/info", cookies={"mimir_session": token}, timeout=30)
    assert after.status_code == 401  # the old cookie is worth nothing now


def test_the_cookie_is_secure_behind_https(school):
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1, where a local reverse proxy runs
    out = sign_in(school["url"], "sam", **{"X-Forwarded-Proto": "https"})
    assert out.status_code == 303 and "; Secure" in out.headers["set-cookie"]


def test_wrong_password_and_unknown_user_get_the_same_answer(school):
    wrong = sign_in(school["url"], "sam", "not the password", **{"X-Forwarded-For": "10.0.0.7"})
    unknown = sign_in(school["url"], "nobody", PASSWORDS["sam"], **{"X-Forwarded-For": "10.0.0.7"})
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong user name or password." in wrong.text and wrong.text == unknown.text
    assert "mimir_session" not in wrong.headers.get("set-cookie", "")


@pytest.mark.parametrize("form", [{"name": "x" * 20000, "password": "y"}, {"name": "a\x00b", "password": "p\x07"}])
def test_huge_or_control_character_sign_ins_are_refused_plainly(school, form):
    out = httpx.post(school["url"] + "login", data=form, headers={"X-Forwarded-For": "10.0.0.8"}, timeout=30)
    assert out.status_code == 401 and "Wrong user name or password." in out.text


def test_repeated_failures_are_slowed_down_per_address_and_per_user(school):
    url = school["url"]
    for _ in range(5):
        assert sign_in(url, "kim", "wrong guess", **{"X-Forwarded-For": "10.6.6.6"}).status_code == 401
    # now even the right password waits, from that address...
    held = sign_in(url, "kim", **{"X-Forwarded-For": "10.6.6.6"})
    assert held.status_code == 429 and int(held.headers["retry-after"]) >= 1
    assert "too many failed sign-ins" in held.text
    # ... and for that user from anywhere else, while other users from elsewhere sign in
    assert sign_in(url, "kim", **{"X-Forwarded-For": "10.7.7.7"}).status_code == 429
    assert sign_in(url, "sam", **{"X-Forwarded-For": "10.8.8.8"}).status_code == 303


# -- CSRF and DNS rebinding --------------------------------------------------------------


def test_cross_site_posts_are_refused(school):
    url = school["url"]
    token = cookie_of(sign_in(url, "ada"))
    forged = httpx.post(url + "gradio_api/queue/join", json={}, cookies={"mimir_session": token},
                        headers={"Origin": "https://evil.example"}, timeout=30)
    assert forged.status_code == 403 and "cross-site" in forged.json()["error"]["message"]
    login = httpx.post(url + "login", data={"name": "ada", "password": PASSWORDS["ada"]},
                       headers={"Origin": "null"}, timeout=30)
    assert login.status_code == 403
    same = httpx.post(url + "login", data={"name": "ada", "password": PASSWORDS["ada"]},
                      headers={"Origin": url.rstrip("/")}, timeout=30)
    assert same.status_code == 303


def test_a_dns_rebinding_host_name_is_refused(school):
    url = school["url"]
    token = cookie_of(sign_in(url, "ada"))
    out = httpx.get(url + "gradio_api/info", cookies={"mimir_session": token},
                    headers={"Host": "attacker.example.com"}, timeout=30)
    assert out.status_code == 421 and "allowed_hosts" in out.json()["error"]["message"]


# -- the API with the real OpenAI client -------------------------------------------------


def test_openai_client_without_a_key_gets_401(school):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=school["url"] + "v1", api_key="sk-not-a-mimir-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="mimir-tutor", messages=[{"role": "user", "content": "Hi"}])


def test_openai_client_with_a_key_owns_its_sessions_and_cannot_reach_others(school):
    """Also issue 15's promise for the API: a foreign session id is answered like an unknown one."""
    openai = pytest.importorskip("openai")
    sam = openai.OpenAI(base_url=school["url"] + "v1", api_key=school["keys"]["sam"], max_retries=0)
    kim = openai.OpenAI(base_url=school["url"] + "v1", api_key=school["keys"]["kim"], max_retries=0)
    assert "mimir-tutor" in [m.id for m in sam.models.list().data]
    first = sam.chat.completions.create(model="mimir-tutor", messages=[{"role": "user", "content": "What is a sum?"}],
                                        extra_body={"session_id": "new"})
    assert first.choices[0].message.content == REPLY
    session = first.model_extra["mimir"]["session_id"]
    again = sam.chat.completions.create(model="mimir-tutor", messages=[{"role": "user", "content": "And a product?"}],
                                        extra_body={"session_id": session})
    assert again.model_extra["mimir"]["session_id"] == session
    with pytest.raises(openai.NotFoundError) as foreign:
        kim.chat.completions.create(model="mimir-tutor", messages=[{"role": "user", "content": "Let me in"}],
                                    extra_body={"session_id": session})
    with pytest.raises(openai.NotFoundError) as unknown:
        kim.chat.completions.create(model="mimir-tutor", messages=[{"role": "user", "content": "Let me in"}],
                                    extra_body={"session_id": "s-000000000000"})
    assert foreign.value.body["message"].replace(session, "ID") == unknown.value.body["message"].replace(
        "s-000000000000", "ID")
    # streaming is refused the same way, before any answer starts
    with pytest.raises(openai.NotFoundError):
        kim.chat.completions.create(model="mimir-tutor", messages=[{"role": "user", "content": "Let me in"}],
                                    extra_body={"session_id": session}, stream=True)
    listed = json.loads(cli(school["env"], "sessions", "show", session, "--json").stdout)
    assert listed["session"]["turn_count"] == 2  # kim's attempts stored nothing in sam's session


def test_a_revoked_key_is_refused(school):
    openai = pytest.importorskip("openai")
    env = school["env"]
    key = cli(env, "keys", "create", "kim").stdout.strip()
    client = openai.OpenAI(base_url=school["url"] + "v1", api_key=key, max_retries=0)
    assert client.models.list().data
    key_id = key.split("-")[1]
    cli(env, "keys", "revoke", key_id)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


# -- the web app's handlers through gradio_client ----------------------------------------


def _gradio(school, name: str | None):
    from gradio_client import Client

    headers = {"Cookie": f"mimir_session={cookie_of(sign_in(school['url'], name))}"} if name else None
    return Client(school["url"], headers=headers, verbose=False)


def test_gradio_client_without_sign_in_cannot_connect(school):
    with pytest.raises(Exception, match="(?i)login|credentials|401"):
        _gradio(school, None)


def test_gradio_client_as_a_student_cannot_prune_unload_or_open_others_sessions(school):
    from gradio_client.exceptions import AppError

    tree: object = school["tree"]
    sam = _gradio(school, "sam")
    message, *_ = sam.predict(None, api_name="/unload")
    assert "unloading a model needs the admin role" in message
    line, *_ = sam.predict(True, False, False, api_name="/prune_plan")
    assert "pruning the model cache needs the admin role" in line
    result, *_ = sam.predict(True, api_name="/prune")
    assert "pruning the model cache needs the admin role" in result
    totals, *_ = sam.predict(api_name="/scan")
    assert "the Cache tab needs the admin role" in totals
    pulled = sam.predict("org/alpha", "", "", [], api_name="/pull_plan")
    assert "needs the admin role" in pulled
    assert tree.repo("org/beta").is_dir() and tree.repo("org/alpha").is_dir()
    # kim's session id, sent by sam: refused, and nothing of kim's comes back
    openai = pytest.importorskip("openai")
    kim = openai.OpenAI(base_url=school["url"] + "v1", api_key=school["keys"]["kim"], max_retries=0)
    kim_session = kim.chat.completions.create(
        model="mimir-tutor", messages=[{"role": "user", "content": "Kim's secret question"}],
        extra_body={"session_id": "new"}).model_extra["mimir"]["session_id"]
    try:
        opened = sam.predict(kim_session, api_name="/open_session")
    except AppError as exc:  # Gradio itself refuses a value the user's list does not offer
        opened = str(exc)
    assert "Kim's secret question" not in str(opened)
    dropdown, *_ = sam.predict(api_name="/load_page")
    assert kim_session not in json.dumps(dropdown)
    audit = json.loads(cli(school["env"], "audit", "--json").stdout)
    assert not [e for e in audit if e["action"] in ("cache.prune", "model.unload")]


def test_gradio_client_as_an_admin_prunes_and_it_is_audited(school):
    tree = school["tree"]
    ada = _gradio(school, "ada")
    line, *_ = ada.predict(True, False, False, api_name="/prune_plan")
    assert "Dry run" in line
    # the plan lives in this client's session state; confirming deletes what it lists
    result, *_ = ada.predict(True, api_name="/prune")
    assert "Freed" in result, result
    assert not tree.repo("org/beta").exists() and tree.outside_file.exists()
    (entry,) = [e for e in json.loads(cli(school["env"], "audit", "--json").stdout) if e["action"] == "cache.prune"]
    assert entry["actor"] == "ada" and entry["address"] == "127.0.0.1" and entry["detail"]["freed_bytes"] > 0
    assert Path(entry["target"]) == Path(tree.root)


def test_probes_stay_open_and_metrics_need_an_admin(school):
    url = school["url"]
    assert httpx.get(url + "healthz", timeout=30).status_code == 200
    assert httpx.get(url + "metrics", timeout=30).status_code == 401
    student = cookie_of(sign_in(url, "sam", **{"X-Forwarded-For": "10.0.0.9"}))
    assert httpx.get(url + "metrics", cookies={"mimir_session": student}, timeout=30).status_code == 401
    admin = cookie_of(sign_in(url, "ada", **{"X-Forwarded-For": "10.0.0.9"}))
    scraped = httpx.get(url + "metrics", cookies={"mimir_session": admin}, timeout=30)
    assert scraped.status_code == 200 and "mimir_" in scraped.text


def test_the_sign_in_cookie_is_found_among_other_apps_cookies(school):
    url = school["url"]
    token = cookie_of(sign_in(url, "sam", **{"X-Forwarded-For": "10.0.0.10"}))
    header = f'_ga=GA1.1.1; other={{"json": [1, 2]}}; mimir_session={token}; theme=dark'
    out = httpx.get(url + "gradio_api/info", headers={"Cookie": header}, timeout=30)
    assert out.status_code == 200
