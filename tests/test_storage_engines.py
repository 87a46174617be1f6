"""The stores on both engines, and what only a server brings: a real PostgreSQL started by the
suite (tests/pg_server.py), passwords that never show, concurrent migrators, slots shared by
processes, and a server restart in the middle of the work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mimir.config import load_settings, settings_from_dict
from mimir.errors import ConfigError, NotFoundError, StorageError
from mimir.storage.conversations import ConversationStore
from mimir.storage.db import Database, IntegrityError
from mimir.storage.dialect import postgres_sql
from mimir.storage.migrations import MIGRATIONS
from mimir.storage.url import StorageTarget, redact_url, storage_target


# -- conversations on both engines -------------------------------------------------------------
def test_sessions_and_turns_round_trip(db_target):
    with Database.open(db_target) as db:
        store = ConversationStore(db)
        sid = store.create_session()
        for i in range(3):
            store.add_turn(
                turn_id=f"t{i}", session_id=sid, user_message=f"What is {i} + {i}?", response=str(2 * i),
                status="ok", flags=("b", "a"), notices=("n",), tokens_in=10 + i, tokens_out=2, wall_s=0.5,
            )
        store.add_turn(turn_id="tf", session_id=sid, user_message="x", response=None, status="failed", error="boom")
        turns = store.turns(sid)
        assert [t.seq for t in turns] == [1, 2, 3, 4]
        assert turns[0].flags == ("a", "b") and turns[0].notices == ("n",) and turns[0].wall_s == 0.5
        assert [t.id for t in store.turns(sid, limit=2)] == ["t2", "tf"]
        assert [t.id for t in store.turns(sid, only_ok=True)] == ["t0", "t1", "t2"]
        info = store.get_session(sid)
        assert info.title == "What is 0 + 0?" and info.turn_count == 4
        assert info.updated_at >= info.created_at > 1.6e9  # full precision timestamps on both engines
        assert abs(store.get_turn("t0").created_at - info.created_at) < 60
        with pytest.raises(IntegrityError):  # a turn id is unique on both engines
            with db.write() as conn:
                conn.execute(
                    "INSERT INTO turns (id, session_id, seq, created_at, user_message, status, flags_json)"
                    " VALUES ('t0', ?, 99, 0, 'x', 'ok', '[]')",
                    (sid,),
                )
        assert store.delete_session(sid) == 4
        with pytest.raises(NotFoundError):
            store.get_session(sid)
        assert db.read("SELECT COUNT(*) FROM turns")[0][0] == 0  # cascade on both engines


def test_math_records_round_trip(db_target):
    with Database.open(db_target) as db:
        store = ConversationStore(db)
        sid = store.create_session()
        store.add_turn(turn_id="m1", session_id=sid, user_message="Solve 2x = 6", response="Try dividing.", status="ok")
        key = {"statement": "2x = 6", "answer": "3", "hints": ["divide both sides by 2"]}
        store.add_math("m1", sid, {"skill": "linear", "source": "student", "question": "2x = 6", "key": key,
                                   "hints_given": 1, "verdict": None, "verdict_detail": None, "open": True})
        assert store.get_math("m1")["key"] == key and store.get_math("m1")["hints_given"] == 1
        assert store.open_question(sid)["question"] == "2x = 6"
        with pytest.raises(IntegrityError):  # the turn must exist, on both engines
            store.add_math("nope", sid, {"open": False})


def test_big_numbers_keep_their_width(db_target):
    """Byte counts beyond 32 bits and time.time() values survive unrounded on both engines."""
    from mimir.storage.telemetry_store import TelemetryStore
    from mimir.core.records import StepRecord

    fields = {f: None for f in StepRecord.__dataclass_fields__}
    fields.update(
        step_id="s1", session_id=None, turn_id=None, seq=0, name="response", started_at=1_790_000_000.123456,
        wall_s=1.25, gpu_total_bytes=150 * 1024**3, rss_peak_bytes=5 * 1024**3, gpu_devices=(), events=(),
    )
    with Database.open(db_target) as db:
        store = TelemetryStore(db)
        store.save_step(StepRecord(**fields))
        [back] = store.recent_steps(last_turns=1)
        assert back.gpu_total_bytes == 150 * 1024**3 and back.rss_peak_bytes == 5 * 1024**3
        assert back.started_at == 1_790_000_000.123456


def test_slots_are_shared_by_every_process_and_freed_when_one_dies(db_target, tmp_path):
    with Database.open(db_target) as a, Database.open(db_target) as b:
        first = a.try_slot("user:ada", 2)
        second = b.try_slot("user:ada", 2)
        assert first is not None and second is not None and {first.slot, second.slot} == {0, 1}
        assert a.try_slot("user:ada", 2) is None and b.try_slot("user:ada", 2) is None
        assert a.try_slot("user:bob", 2) is not None  # another key has its own slots
        second.release()
        second.release()  # idempotent
        again = a.try_slot("user:ada", 2)
        assert again is not None and again.slot == second.slot
        again.release()
        first.release()

        # A process that holds a slot and dies frees it.
        script = (
            "import sys; from mimir.storage.db import Database; from mimir.storage.url import StorageTarget\n"
            f"db = Database.open(StorageTarget.parse({db_target.label if db_target.engine == 'postgresql' else str(db_target.path)!r}))\n"
            "lease = db.try_slot('user:cy', 1); print('held' if lease else 'none', flush=True); sys.stdin.readline()\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "held"
            assert a.try_slot("user:cy", 1) is None
        finally:
            proc.kill()
            proc.wait()
        lease = None
        for _ in range(50):  # the server notices the closed connection at once, or very soon
            lease = a.try_slot("user:cy", 1)
            if lease is not None:
                break
            threading.Event().wait(0.1)
        assert lease is not None


def test_the_per_user_limit_holds_across_instances(db_target):
    """Two admission queues (two instances) on one database: a user's second turn is refused
    on the other instance while the first runs, and admitted once it is over."""
    from mimir.errors import ServerBusyError
    from mimir.runtime.admission import Admission

    with Database.open(db_target) as a_db, Database.open(db_target) as b_db:
        a, b = Admission(per_user=1, shared=a_db.try_slot), Admission(per_user=1, shared=b_db.try_slot)
        ticket = a.enter("user:sam")
        ticket.wait()
        with pytest.raises(ServerBusyError) as info:
            b.enter("user:sam")
        assert info.value.http_status == 429 and "across every server" in str(info.value)
        other = b.enter("user:kim")  # another user is not held back
        other.release()
        ticket.release()
        again = b.enter("user:sam")
        again.wait()
        with pytest.raises(ServerBusyError):
            a.enter("user:sam")
        again.release()
        a.enter("user:sam").release()


# -- the storage URL ------------------------------------------------------------------------------
def test_default_is_the_sqlite_file_under_home(tmp_path):
    settings = settings_from_dict({}, env={"MIMIR_HOME": str(tmp_path)})
    target = storage_target(settings, env={})
    assert target.engine == "sqlite" and target.path == tmp_path / "mimir.db"


def test_url_from_config_or_environment_and_password_from_file_or_env(tmp_path):
    secret = tmp_path / "pgpass"
    secret.write_text("fr0m-file\n")
    settings = settings_from_dict(
        {"storage": {"url": "postgresql://mimir@db.example:5432/mimir", "password_file": str(secret)}}, env={}
    )
    target = storage_target(settings, env={})
    assert target.engine == "postgresql" and target.password == "fr0m-file"
    assert target.label == "postgresql://mimir@db.example:5432/mimir"
    assert storage_target(settings, env={"MIMIR_DATABASE_PASSWORD": "fr0m-env"}).password == "fr0m-env"
    env = {"MIMIR_DATABASE_URL": "postgresql://ops:in-url@10.0.0.5/prod"}
    from_env = settings_from_dict({}, env=env)
    assert "in-url" not in repr(from_env) and from_env.storage.url == "postgresql://ops@10.0.0.5/prod"
    target = storage_target(from_env, env=env)
    assert target.password == "in-url" and "in-url" not in target.label and "in-url" not in repr(target)
    assert target.label == "postgresql://ops@10.0.0.5/prod"


def test_a_password_in_the_config_file_is_refused(tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text('[storage]\nurl = "postgresql://mimir:hunter2@db/mimir"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config, env={})
    assert "hunter2" not in str(info.value) and "password_file" in str(info.value)


def test_redaction_hides_every_form_of_password():
    assert redact_url("postgresql://u:p%40ss@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert "sekret" not in redact_url("postgresql://u@h/d?password=sekret&sslmode=require")
    assert StorageTarget.parse("postgresql://u:pw@h/d").url == "postgresql://u@h/d"
    assert StorageTarget.parse("sqlite:////abs/m.db").path == Path("/abs/m.db")
    with pytest.raises(ValueError, match="scheme"):
        StorageTarget.parse("mysql://u@h/d")


def test_sql_is_adapted_for_postgresql_outside_literals_only():
    assert postgres_sql("SELECT * FROM t WHERE a = ? AND b LIKE 'x?%'") == "SELECT * FROM t WHERE a = %s AND b LIKE 'x?%%'"
    ddl = postgres_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, at REAL, note TEXT DEFAULT 'REAL')")
    assert ddl == (
        "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT, at DOUBLE PRECISION,"
        " note TEXT DEFAULT 'REAL')"
    )
    assert postgres_sql("INSERT INTO t (at) VALUES (?)") == "INSERT INTO t (at) VALUES (%s)"


# -- PostgreSQL only -------------------------------------------------------------------------------
def test_password_authentication_and_no_password_in_errors(postgres_server, tmp_path):
    from pg_server import PASSWORD_USER

    name = postgres_server.new_database()
    try:
        url = postgres_server.url(name, user=PASSWORD_USER)
        secret = tmp_path / "pw"
        secret.write_text(postgres_server.password + "\n")
        settings = settings_from_dict({"storage": {"url": url, "password_file": str(secret)}}, env={})
        with Database.from_settings(settings) as db:
            assert db.applied_migrations() == [n for n, _ in MIGRATIONS]
        wrong = StorageTarget.parse(url, password="not-" + postgres_server.password)
        with pytest.raises(StorageError) as info:
            Database.open(wrong)
        assert "password authentication failed" in str(info.value)
        assert postgres_server.password not in str(info.value)
    finally:
        postgres_server.drop_database(name)


def test_unreachable_server_fails_at_open_in_one_line(postgres_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StorageError) as info:
        Database.open(f"postgresql://mimir@127.0.0.1:{port}/nope")
    assert "cannot connect" in str(info.value) and "\n" not in str(info.value)


_MIGRATOR = """
import json, sys, time
from mimir.storage.db import Database
from mimir.storage.migrations import MIGRATIONS
def m900_slow(conn):
    conn.execute("CREATE TABLE slow (id TEXT PRIMARY KEY)")
    time.sleep(0.5)  # hold the lock while the other process tries to migrate
    conn.execute("INSERT INTO slow (id) VALUES (?)", (sys.argv[2],))
db = Database.open(sys.argv[1], migrate=False)
sys.stdin.readline()  # both start migrating at the same moment
print(json.dumps(db.migrate([*MIGRATIONS, ("m900_slow", m900_slow)])), flush=True)
db.close()
"""


def test_two_processes_starting_together_migrate_exactly_once(postgres_url):
    procs = [
        subprocess.Popen([sys.executable, "-c", _MIGRATOR, postgres_url, f"p{i}"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    applied = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        applied.append(json.loads(out))
    all_names = [n for n, _ in MIGRATIONS] + ["m900_slow"]
    assert sorted(applied[0] + applied[1]) == sorted(all_names)  # each applied by exactly one
    with Database.open(postgres_url, migrate=False) as db:
        assert db.read("SELECT COUNT(*) FROM slow")[0][0] == 1
        assert sorted(db.applied_migrations()) == sorted(all_names)


def test_a_server_restart_mid_work_loses_nothing(postgres_server, postgres_url):
    """Writers keep going while the server restarts: every turn is stored exactly once."""
    with Database.open(postgres_url) as db:
        store = ConversationStore(db)
        sid = store.create_session()
        stored, errors = [], []
        restarted = threading.Event()

        def writer(w: int) -> None:
            for i in range(40):
                if i == 10 and w == 0:
                    postgres_server.restart(mode="fast")  # drops every connection
                    restarted.set()
                try:
                    store.add_turn(turn_id=f"w{w}-{i}", session_id=sid, user_message=f"q{i}", response="a", status="ok")
                    stored.append(f"w{w}-{i}")
                except Exception as exc:  # noqa: BLE001 - any loss fails the test below
                    errors.append(repr(exc))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert restarted.is_set() and errors == []
        ids = [t.id for t in store.turns(sid)]
        assert sorted(ids) == sorted(stored) and len(ids) == 120
        assert [t.seq for t in store.turns(sid)] == list(range(1, 121))


def test_migrations_run_on_postgres_with_exact_types(postgres_url):
    with Database.open(postgres_url) as db:
        types = {
            (r["table_name"], r["column_name"]): r["data_type"]
            for r in db.read("SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'")
        }
    assert types[("telemetry_steps", "gpu_total_bytes")] == "bigint"
    assert types[("turns", "created_at")] == "double precision"
    assert types[("telemetry_steps", "id")] == "bigint"


def test_env_url_reaches_the_app(postgres_url, monkeypatch):
    from mimir.app import MimirApp

    monkeypatch.setenv("MIMIR_DATABASE_URL", postgres_url)
    with MimirApp.from_config() as app:
        assert app.db.engine == "postgresql"
        sid = app.conversations.create_session("from the app")
    with Database.open(postgres_url) as db:
        assert db.read("SELECT title FROM sessions WHERE id = ?", (sid,))[0]["title"] == "from the app"
    assert not (Path(os.environ["MIMIR_HOME"]) / "mimir.db").exists()


def test_a_turn_survives_a_server_restart_in_its_middle(postgres_server, postgres_url, monkeypatch):
    """The server restarts while a real tutor turn is loading its model: the turn, its steps and
    its events are all stored once the turn ends (writes retry over the new connections)."""
    from mimir.app import MimirApp
    from mimir.config import settings_from_dict
    from mimir.storage.telemetry_store import TelemetryStore

    monkeypatch.setenv("MIMIR_DATABASE_URL", postgres_url)
    data = {
        "models": {"m": {"backend": "scripted", "path": "scripted", "options": {"load_s": 3, "replies": ["Four."]}}},
        "tutor": {"thinking": False},
    }
    with MimirApp(settings_from_dict(data)) as app:
        sid = app.conversations.create_session("restart")
        app.telemetry  # built (and its writer thread started) before the restart
        done = {}
        worker = threading.Thread(target=lambda: done.update(result=app.tutor.run_turn("What is 2 + 2?", sid)))
        worker.start()
        threading.Event().wait(1.0)  # the turn is inside its 3 s model load
        postgres_server.restart(mode="fast")
        worker.join(timeout=120)
        app.telemetry.flush()
        result = done["result"]
        [turn] = app.conversations.turns(sid)
        assert turn.id == result.turn_id and turn.response == result.response and turn.status == "ok"
        stored = TelemetryStore(app.db)
        steps = stored.recent_steps(turn_id=result.turn_id)
        assert [s.step_id for s in steps] == [s.step_id for s in result.telemetry.steps]
        assert any(e.kind == "load" for s in steps for e in s.events)
        assert [t.turn_id for t in stored.turns(last=5)] == [result.turn_id]


def test_a_migration_from_another_instance_does_not_break_running_queries(postgres_url):
    """A rolling upgrade: instance B adds a column while instance A keeps reading the table."""
    with Database.open(postgres_url) as a:
        store = ConversationStore(a)
        sid = store.create_session()
        store.add_turn(turn_id="r1", session_id=sid, user_message="q", response="a", status="ok")
        for _ in range(8):  # often enough that a driver would have prepared the statement
            store.get_turn("r1")

        def m900_extra(conn):
            conn.execute("ALTER TABLE turns ADD COLUMN extra TEXT")

        with Database.open(postgres_url, migrations=[*MIGRATIONS, ("m900_extra", m900_extra)]):
            pass
        assert store.get_turn("r1").id == "r1"


def test_a_turn_postgres_cannot_take_is_spooled_and_stored_at_the_next_start(postgres_server, postgres_url, monkeypatch):
    """The server goes away mid-turn and stays away longer than the retries: the student still
    gets the answer (with a 'not saved' notice), the turn waits in the spool, and the next
    start stores it in PostgreSQL through the same stores."""
    from mimir.app import MimirApp
    from mimir.config import settings_from_dict
    from mimir.storage.telemetry_store import TelemetryStore

    monkeypatch.setenv("MIMIR_DATABASE_URL", postgres_url)
    data = {
        "models": {"m": {"backend": "scripted", "path": "scripted",
                         "options": {"token_s": 0.3, "replies": ["Two and two make four."]}}},
        "tutor": {"thinking": False},
    }
    first_token = threading.Event()
    with MimirApp(settings_from_dict(data)) as app:
        sid = app.conversations.create_session("spooled")
        app.db.retry_s = 1.0  # give up quickly: the server stays down for this test
        app.tutor  # built (replaying an empty spool) while the server is up
        done = {}
        worker = threading.Thread(target=lambda: done.update(
            result=app.tutor.run_turn("What is 2 + 2?", sid, on_token=lambda text: first_token.set())))
        worker.start()
        assert first_token.wait(120)
        postgres_server.stop()
        try:
            worker.join(timeout=180)
            result = done["result"]
            assert result.response == "Two and two make four."
            assert any("could not be saved" in n for n in result.notices)
            app.telemetry.flush()
        finally:
            postgres_server.start_again()
    assert (app.settings.home / "spool.jsonl").exists()

    with MimirApp(settings_from_dict(data)) as again:
        again.tutor  # the next start replays the spool
        [turn] = again.conversations.turns(sid)
        assert turn.id == result.turn_id and turn.response == result.response
        assert result.turn_id in TelemetryStore(again.db).turn_instances([result.turn_id])


def test_a_connection_terminated_by_the_server_is_retried(postgres_url):
    """A backend ended by the server (``pg_terminate_backend``, as a restart or an admin does:
    SQLSTATE 57P01) is a lost connection: the transaction runs again on a new one. The
    driver can report it before it marks the connection broken; it is classified by SQLSTATE."""
    import psycopg

    with Database.open(postgres_url) as db:
        runs = []

        def work(conn):
            runs.append(len(runs))
            if len(runs) == 1:
                pid = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
                info = StorageTarget.parse(postgres_url).conninfo()
                with psycopg.connect(info["conninfo"], password=info.get("password"), autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            return conn.execute("SELECT 41 + 1 AS answer").fetchone()["answer"]

        assert db.transact(work) == 42
        assert runs == [0, 1]


def test_the_servers_own_session_end_codes_count_as_a_lost_connection(postgres_url):
    """psycopg can raise AdminShutdown (57P01) before it marks the connection broken (seen in
    a full run during a server restart); by its SQLSTATE it is still a lost connection, so
    the transaction is retried instead of failing the turn."""
    import psycopg

    from mimir.storage.dialect import Connection, ConnectionLost

    info = StorageTarget.parse(postgres_url).conninfo()
    with psycopg.connect(info["conninfo"], password=info.get("password")) as raw:
        assert not raw.broken and not raw.closed
        conn = Connection(raw, "postgresql", "test", lost=(psycopg.OperationalError,))

        def fail(exc):
            raise exc

        with pytest.raises(ConnectionLost):
            conn._guarded(fail, psycopg.errors.AdminShutdown("terminating connection due to administrator command"))
        with pytest.raises(psycopg.errors.QueryCanceled):  # 57014: this statement only, the session lives
            conn._guarded(fail, psycopg.errors.QueryCanceled("canceling statement due to statement timeout"))
