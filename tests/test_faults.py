"""Faults injected for real: a locked database, a full disk, a model server answering garbage,
chart labels that are mathtext, Ctrl-C inside a turn, a load that outlives load_timeout.
Whatever fails, the student gets an answer or one clear error, and no answer is lost."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mimir.app import MimirApp
from mimir.config import settings_from_dict
from mimir.errors import GenerationError, ModelLoadError, StorageError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.models.spec import ModelSource, ModelSpec
from mimir.runtime.manager import ModelManager
from mimir.storage.spool import Spool

REPLY = "Fractions name parts of a whole."


def scripted_settings(**options):
    return settings_from_dict({
        "models": {"default": {"backend": "scripted", "path": "s", "options": {"replies": [REPLY], **options}}},
        "tutor": {"thinking": False},
    })


# -- storage -----------------------------------------------------------------------------


def test_a_locked_database_keeps_the_answer_and_spools_the_turn_until_the_next_start():
    settings = scripted_settings()
    with MimirApp(settings) as app:
        session = app.conversations.create_session("fractions")
        app.tutor  # built (and the spool replayed, empty) before the lock
        other = sqlite3.connect(str(settings.db_path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            result = app.tutor.run_turn("What is a fraction?", session)
            app.telemetry.flush()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert result.response == REPLY
        assert any("could not be saved" in n for n in result.notices)
        kinds = sorted(e["kind"] for e in Spool(settings.home / "spool.jsonl").entries())
        assert kinds == ["telemetry_turn", "turn"]
        assert app.conversations.turns(session) == []
    with MimirApp(settings) as app:  # the next start
        app.tutor
        [turn] = app.conversations.turns(session)
        assert (turn.id, turn.status, turn.response) == (result.turn_id, "ok", REPLY)
        assert any("could not be saved" in n for n in turn.notices)
        stored = app.db.read("SELECT step_count FROM telemetry_turns WHERE turn_id = ?", (result.turn_id,))
        assert stored and stored[0]["step_count"] == len(result.telemetry.steps)
        assert not (settings.home / "spool.jsonl").exists()


def test_a_full_disk_is_a_storage_error_and_the_answer_still_arrives():
    settings = scripted_settings()
    with MimirApp(settings) as app:
        session = app.conversations.create_session("big")
        pages = app.db.read("PRAGMA page_count")[0][0]
        app.db.read(f"PRAGMA max_page_count = {pages}")  # no page may be added: SQLITE_FULL
        with pytest.raises(StorageError) as full:
            with app.db.write() as conn:
                conn.execute("INSERT INTO sessions (id, title, created_at, updated_at) VALUES (?, ?, 0, 0)",
                             ("s-x", "x" * 100_000))
        assert "full" in str(full.value) and "cannot rollback" not in str(full.value)
        result = app.tutor.run_turn("Explain " + "fractions " * 700, session)
        assert result.response == REPLY and any("could not be saved" in n for n in result.notices)
        spooled = [e for e in app.spool.entries() if e["kind"] == "turn"]
        assert spooled and "full" in spooled[0]["reason"]


@contextmanager
def immutable(*paths):
    """The files made read-only for everyone, root included, with the ``immutable`` attribute
    (``chattr +i``): every open for writing and every write, also through a descriptor opened
    before, fails with EPERM. ``chmod`` is no test when tests run as root (root writes anyway)
    and ``PRAGMA query_only`` is SQLite refusing by choice. Skips where the attribute cannot
    be set (not root, or a filesystem without it); always cleared again, or the files could
    not even be deleted."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run([chattr, "-i", *map(str, paths)], capture_output=True)
        pytest.skip(f"cannot make files immutable here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, paths)], check=True)


def test_a_read_only_database_keeps_the_answer_and_spools_the_turn_until_the_next_start():
    """The database file and its write-ahead log turn read-only while the app runs (what a disk
    remounted read-only after an error, or a volume flipped read-only, does to a live server).
    The shared-memory index (``-shm``) stays writable: SQLite maps it into memory, and making
    a mapped file immutable kills the process with SIGBUS, which tells nothing about Mimir."""
    settings = scripted_settings()
    db = settings.db_path
    with MimirApp(settings) as app:
        session = app.conversations.create_session("fractions")
        app.tutor  # built (and the spool replayed, empty) while the disk is writable
        wal = db.with_name(db.name + "-wal")
        assert wal.exists()  # the WAL is where a commit would be written first
        with immutable(db, wal):
            with pytest.raises(StorageError):  # the fault is real: no write gets through
                with app.db.write() as conn:
                    conn.execute("INSERT INTO sessions (id, title, created_at, updated_at) VALUES (?, ?, 0, 0)",
                                 ("s-ro", "read-only"))
            result = app.tutor.run_turn("What is a fraction?", session)
            app.telemetry.flush()
            assert result.response == REPLY  # the student still gets the answer
            assert any("could not be saved" in n for n in result.notices)  # with the visible notice
            spooled = {e["kind"]: e for e in Spool(settings.home / "spool.jsonl").entries()}
            assert sorted(spooled) == ["telemetry_turn", "turn"]
            assert spooled["turn"]["turn"]["response"] == REPLY
            assert app.conversations.turns(session) == []
    with MimirApp(settings) as app:  # the next start, with the disk writable again
        app.tutor
        [turn] = app.conversations.turns(session)
        assert (turn.id, turn.status, turn.response) == (result.turn_id, "ok", REPLY)
        stored = app.db.read("SELECT step_count FROM telemetry_turns WHERE turn_id = ?", (result.turn_id,))
        assert stored and stored[0]["step_count"] == len(result.telemetry.steps)
        assert not (settings.home / "spool.jsonl").exists()


# -- a model server answering garbage ---------------------------------------------------------


class Garbage(BaseHTTPRequestHandler):
    """/v1/models is fine; /v1/chat/completions answers 200 with whatever ``body`` the test set."""

    replies: dict[str, tuple[str, bytes]] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._send("application/json", b'{"object": "list", "data": [{"id": "m"}]}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        kind, body = self.replies[self.server.mode]
        self._send(kind, body)

    def _send(self, kind: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


Garbage.replies = {
    "json": ("application/json", b'{"choices": [{"message": {"content": "hi"}}]}'),
    "html": ("text/html", b"<html><body>Bad gateway, sorry</body></html>"),
    "broken": ("text/event-stream", b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: {"choi'),
    "not_sse": ("text/event-stream", b"hello there\n\n"),
    "no_done": ("text/event-stream", b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'),
    "endless": ("text/event-stream", b"".join(b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'
                                              for _ in range(50)) + b"data: [DONE]\n\n"),
}


@pytest.fixture
def garbage_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    server.mode = "json"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode,says", [
    ("json", "application/json, not a stream"),
    ("html", "text/html, not a stream"),
    ("broken", "malformed stream event"),
    ("not_sse", "not a server-sent event"),
    ("no_done", "ended early"),
])
def test_a_server_answering_200_with_garbage_is_a_clear_error_naming_it(garbage_server, mode, says):
    garbage_server.mode = mode
    url = f"http://127.0.0.1:{garbage_server.server_address[1]}/v1"
    spec = ModelSpec(id="far", backend="openai", source=ModelSource("url", url), options={"model": "m"})
    with ModelManager({"far": spec}, budget_ram_bytes=10**9) as manager, manager.use("far") as model:
        with pytest.raises(GenerationError) as error:
            model.chat([ChatMessage("user", "hi")], GenerationParams(max_tokens=8))
    assert says in str(error.value) and url in str(error.value)


def test_a_server_ignoring_max_tokens_is_cut_at_the_cap(garbage_server):
    garbage_server.mode = "endless"
    url = f"http://127.0.0.1:{garbage_server.server_address[1]}/v1"
    spec = ModelSpec(id="far", backend="openai", source=ModelSource("url", url), options={"model": "m"})
    with ModelManager({"far": spec}, budget_ram_bytes=10**9) as manager, manager.use("far") as model:
        completion = model.chat([ChatMessage("user", "hi")], GenerationParams(max_tokens=8))
    assert completion.text == "x" * 8 and completion.finish_reason == "length"


# -- charts, interrupts, loads --------------------------------------------------------------------


def test_chart_labels_with_dollars_and_mathtext_never_crash_a_turn(tmp_path):
    pytest.importorskip("matplotlib")
    from mimir.tutor.graph import ChartData, draw_chart

    data = ChartData("bar", ("$5 lunch", r"$\frac{1}{$", "a$b$c", "$x^$"), (5, 7, 9, 2), title=r"Costs in $\sqrt{$")
    result = draw_chart(data, tmp_path)
    assert result.ok and result.path.stat().st_size > 0
    settings = scripted_settings()
    with MimirApp(settings) as app:
        out = app.tutor.run_turn("Make a bar chart: $x$ 5, $\\frac{ 7, a$b 9", None)
        assert out.response == REPLY


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_ctrl_c_and_system_exit_pass_through_a_turn(interrupt):
    with MimirApp(scripted_settings()) as app:
        session = app.conversations.create_session("x")

        def on_token(text: str) -> None:
            raise interrupt()

        with pytest.raises(interrupt):
            app.tutor.run_turn("What is a fraction?", session, on_token=on_token)
        [turn] = app.conversations.turns(session)
        assert turn.status == "failed" and "interrupted" in turn.error


def test_waiting_for_another_requests_load_respects_load_timeout():
    specs = {
        "slow": ModelSpec(id="slow", backend="scripted", source=ModelSource("path", "s"), options={"load_s": 3}),
        "other": ModelSpec(id="other", backend="scripted", source=ModelSource("path", "o")),
    }
    with ModelManager(specs, budget_ram_bytes=10**9, load_timeout_s=0.3) as manager:
        loading = threading.Thread(target=lambda: manager.use("slow").__enter__())
        loading.start()
        while manager.status().loading != "slow":
            threading.Event().wait(0.01)
        with pytest.raises(ModelLoadError) as waited:
            with manager.use("other"):
                pass
        assert "load_timeout" in str(waited.value)
        loading.join(10)
