"""The storage foundation on both engines (a SQLite file, a real PostgreSQL server): real
migrations, real transactions; and SQLite's real failures of the directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest

from mimir.errors import StorageError
from mimir.storage.db import Database
from mimir.storage.migrations import MIGRATIONS


def test_open_creates_the_file_in_wal_mode_and_applies_every_migration(tmp_path):
    path = tmp_path / "home" / "deep" / "mimir.db"
    with Database.open(path) as db:
        assert path.is_file()
        assert db.read("PRAGMA journal_mode")[0][0] == "wal"
        assert db.applied_migrations() == [name for name, _ in MIGRATIONS]
        tables = {r["name"] for r in db.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"_migrations", "telemetry_steps", "telemetry_turns", "telemetry_events"} <= tables
        cols = {r["name"]: r["type"] for r in db.read("PRAGMA table_info(telemetry_steps)")}
        assert cols["session_id"] == "TEXT" and cols["turn_id"] == "TEXT"


def _tables(db: Database) -> set[str]:
    if db.engine == "sqlite":
        return {r[0] for r in db.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in db.read("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


def test_every_migration_applies_on_both_engines(db_target):
    with Database.open(db_target) as db:
        assert db.engine == db_target.engine
        assert db.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert {"_migrations", "telemetry_steps", "telemetry_turns", "telemetry_events", "sessions", "turns"} <= _tables(db)
        assert db.pending_migrations() == []
    with Database.open(db_target) as db:  # reopening applies nothing again
        assert db.applied_migrations() == [name for name, _ in MIGRATIONS]


def test_reopening_applies_only_new_migrations_in_order(db_target):
    path = db_target
    Database.open(path).close()

    calls = []

    def m900_notes(conn):
        calls.append("m900")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")

    def m901_notes_author(conn):
        calls.append("m901")
        conn.execute("ALTER TABLE notes ADD COLUMN author TEXT")

    extended = [*MIGRATIONS, ("m900_notes", m900_notes), ("m901_notes_author", m901_notes_author)]
    with Database.open(path, migrations=extended) as db:
        assert calls == ["m900", "m901"]
        assert db.applied_migrations()[-2:] == ["m900_notes", "m901_notes_author"]
        with db.write() as conn:
            conn.execute("INSERT INTO notes (body, author) VALUES ('hi', 'me')")
    with Database.open(path, migrations=extended) as db:
        assert calls == ["m900", "m901"]  # recorded: not run again
        assert db.read("SELECT author FROM notes")[0]["author"] == "me"


def test_a_failing_migration_leaves_nothing_half_done(db_target):
    path = db_target

    def m900_broken(conn):
        conn.execute("CREATE TABLE half (id INTEGER)")
        conn.execute("THIS IS NOT SQL")

    with pytest.raises(StorageError) as info:
        Database.open(path, migrations=[*MIGRATIONS, ("m900_broken", m900_broken)])
    assert path.label.split("@")[-1] in str(info.value)  # (user info is redacted from errors)
    with Database.open(path) as db:
        assert "m900_broken" not in db.applied_migrations()
        assert "half" not in _tables(db)


def test_duplicate_migration_names_are_refused(db_target):
    def m(conn):
        pass

    with pytest.raises(StorageError, match="share a name"):
        Database.open(db_target, migrations=[("a", m), ("a", m)])


def test_each_write_is_one_transaction(db_target):
    with Database.open(db_target, migrations=[("m1", lambda c: c.execute("CREATE TABLE t (x INTEGER)"))]) as db:
        with pytest.raises(RuntimeError):
            with db.write() as conn:
                conn.execute("INSERT INTO t VALUES (1)")
                conn.execute("INSERT INTO t VALUES (2)")
                raise RuntimeError("stop")
        assert db.read("SELECT COUNT(*) FROM t")[0][0] == 0
        with db.write() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            with db.write() as inner:  # joins the outer transaction
                inner.execute("INSERT INTO t VALUES (2)")
        assert db.read("SELECT COUNT(*) FROM t")[0][0] == 2


def test_writes_from_many_threads_are_all_kept(db_target):
    with Database.open(db_target, migrations=[("m1", lambda c: c.execute("CREATE TABLE t (k TEXT, i INTEGER)"))]) as db:

        def worker(k: str) -> None:
            for i in range(50):
                with db.write() as conn:
                    conn.execute("INSERT INTO t VALUES (?, ?)", (k, i))

        threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert db.read("SELECT COUNT(*) FROM t")[0][0] == 400


def test_a_second_connection_reads_while_the_first_writes(db_target):
    path = db_target
    with Database.open(path) as writer, Database.open(path) as reader:
        with writer.write() as conn:
            conn.execute(
                "INSERT INTO telemetry_turns (turn_id, started_at, wall_s, step_count) VALUES ('t', 0, 0, 0)"
            )
            # WAL / MVCC: the reader sees the last committed state, without waiting.
            assert reader.read("SELECT COUNT(*) FROM telemetry_turns")[0][0] == 0
        assert reader.read("SELECT COUNT(*) FROM telemetry_turns")[0][0] == 1


def test_parent_that_is_a_file_fails_at_open(tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create directory"):
        Database.open(blocker / "mimir.db")


def test_database_path_that_is_a_directory_fails_at_open(tmp_path):
    (tmp_path / "mimir.db").mkdir()
    with pytest.raises(StorageError, match="not a file"):
        Database.open(tmp_path / "mimir.db")


def test_file_that_is_not_a_database_fails_at_open(tmp_path):
    path = tmp_path / "mimir.db"
    path.write_bytes(b"this is certainly not sqlite" * 100)
    with pytest.raises(StorageError, match="not a SQLite database"):
        Database.open(path)


def _read_only_home_command(home, command: list[str]) -> list[str]:
    """``command`` run where ``home`` is read-only, for root too: inside a private mount
    namespace (``unshare``) in which ``home`` is bind-mounted onto itself read-only. The
    namespace, and the mount with it, end with the command."""
    unshare = shutil.which("unshare")
    mount = shutil.which("mount")
    if unshare is None or mount is None:
        return []
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    user_ns = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [unshare, "--mount", *user_ns, "sh", "-c", script, "sh", str(home), *command]


def test_read_only_home_fails_at_open_with_exit_code_8(tmp_path):
    home = tmp_path / "ro-home"
    home.mkdir()
    cli = [sys.executable, "-m", "mimir.cli.main", "sessions", "list"]
    env = {**os.environ, "MIMIR_HOME": str(home)}
    expected = f"directory {home} is not writable"
    command = _read_only_home_command(home, cli)
    probe = subprocess.run(command + ["--help"] if command else ["false"], capture_output=True, env=env)
    if probe.returncode != 0:
        # No mount namespace here (a container without CAP_SYS_ADMIN or user namespaces).
        command = cli
        if os.geteuid() != 0:
            home.chmod(0o500)  # permissions bind everyone but root
        else:
            # Root ignores permissions: a home whose parent is a regular file cannot be used
            # by anyone.
            blocker = tmp_path / "a-file"
            blocker.write_text("not a directory")
            home = blocker / "home"
            env["MIMIR_HOME"] = str(home)
            expected = f"cannot create directory {home}"
    try:
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    finally:
        (tmp_path / "ro-home").chmod(0o700)
    assert out.returncode == StorageError.exit_code == 8, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot use database {home / 'mimir.db'}: ")
    assert expected in line
    assert "Traceback" not in out.stderr
    assert not (home / "mimir.db").exists()


def test_read_only_filesystem_fails_at_open_even_for_root():
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("no read-only /sys here")
    with pytest.raises(StorageError):
        Database.open("/sys/kernel/mimir-test/mimir.db")


def test_full_disk_fails_at_open(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(StorageError, match="full"):
        Database.open(tmp_path / "mimir.db", min_free_bytes=free + 1024**4)
    assert not (tmp_path / "mimir.db").exists()


def test_closed_database_refuses_use(db_target):
    db = Database.open(db_target)
    db.close()
    db.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        db.read("SELECT 1")
    with pytest.raises(StorageError, match="closed"):
        with db.write():
            pass


def test_migration_list_is_named_ordered_and_unique():
    names = [name for name, _ in MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(callable(fn) for _, fn in MIGRATIONS)


def _rows(path, table: str, columns: list[str]) -> list[tuple]:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return con.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id").fetchall()
    finally:
        con.close()


def test_an_older_database_with_real_rows_migrates_and_keeps_every_row(tmp_path):
    from mimir.models.spec import ModelSource, ModelSpec
    from mimir.runtime.manager import ModelManager
    from mimir.storage.conversations import ConversationStore
    from mimir.storage.telemetry_store import TelemetryStore
    from mimir.telemetry import Telemetry

    path = tmp_path / "mimir.db"
    first_name, _ = MIGRATIONS[0]
    # A database as the first release left it: only the first migration, and rows written
    # by real telemetry (two turns of real steps with real model-manager events).
    MiB = 1024 * 1024
    specs = {m: ModelSpec(m, "scripted", ModelSource("path", m), options={"size_bytes": 60 * MiB}) for m in "ab"}
    tel = Telemetry(sample_interval_s=None)
    turns = []
    with ModelManager(specs, budget_ram_bytes=100 * MiB) as manager:
        tel.attach(manager)
        for n, model in enumerate("aba"):
            with tel.turn(session_id=f"s{n % 2}", turn_id=f"t{n}") as turn:
                with tel.step("routing", agent="routing", model=model) as step:
                    with manager.use(model):
                        step.add_tokens(tokens_in=10 + n, tokens_out=n)
                with tel.step("response", model=model):
                    pass
            turns.append(turn.record)
    tel.close()
    with Database.open(path, migrations=MIGRATIONS[:1]) as old:
        assert old.applied_migrations() == [first_name]
        columns = {t: [r["name"] for r in old.read(f"PRAGMA table_info({t})")]
                   for t in ("telemetry_turns", "telemetry_steps", "telemetry_events")}
        with old.write() as conn:
            for turn in turns:
                row = {**turn.__dict__, "step_count": len(turn.steps)}
                cols = [c for c in columns["telemetry_turns"] if c != "id"]
                conn.execute(f"INSERT INTO telemetry_turns ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             [row.get(c) for c in cols])
                for step in turn.steps:
                    row = {**step.to_dict(), "gpu_devices_json": "[]"}
                    cols = [c for c in columns["telemetry_steps"] if c != "id"]
                    conn.execute(f"INSERT INTO telemetry_steps ({', '.join(cols)}) "
                                 f"VALUES ({', '.join('?' * len(cols))})", [row.get(c) for c in cols])
                    for seq, event in enumerate(step.events):
                        row = {**event.__dict__, "step_id": step.step_id, "seq": seq}
                        cols = [c for c in columns["telemetry_events"] if c != "id"]
                        conn.execute(f"INSERT INTO telemetry_events ({', '.join(cols)}) "
                                     f"VALUES ({', '.join('?' * len(cols))})", [row.get(c) for c in cols])
    before = {t: _rows(path, t, cols) for t, cols in columns.items()}
    assert [len(before[t]) for t in columns] == [3, 6, 5]  # 3 loads + 2 evictions

    # The current code opens it: the later migrations run, and every row is still there.
    with Database.open(path) as db:
        assert db.applied_migrations() == [name for name, _ in MIGRATIONS]
        store = TelemetryStore(db)
        assert {t.turn_id: [s.name for s in t.steps] for t in store.turns()} == {
            f"t{n}": ["routing", "response"] for n in range(3)}
        loaded = {s.step_id: s for s in store.recent_steps(last_turns=10)}
        for step in (s for t in turns for s in t.steps):
            again = loaded[step.step_id]
            assert (again.name, again.model, again.tokens_in, again.rss_peak_bytes, again.turn_id) == (
                step.name, step.model, step.tokens_in, step.rss_peak_bytes, step.turn_id)
            assert [(e.kind, e.model_id, e.estimate_bytes) for e in again.events] == [
                (e.kind, e.model_id, e.estimate_bytes) for e in step.events]
        # ... and the tables the later migrations added work beside them.
        conversations = ConversationStore(db)
        sid = conversations.create_session("after the upgrade")
        assert conversations.get_session(sid).title == "after the upgrade"
    assert {t: _rows(path, t, cols) for t, cols in columns.items()} == before
