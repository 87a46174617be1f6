"""The web app's handlers and turn runner, called directly (no server, no browser).

Real tutor turns on a scripted backend, real SQLite and telemetry, a real cache tree.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from cache_trees import build_cache  # noqa: E402
from mimir.app import MimirApp  # noqa: E402
from mimir.auth.roles import LOCAL_ADMIN, Principal  # noqa: E402
from mimir.config import settings_from_dict  # noqa: E402
from mimir.errors import GenerationError, InvalidInputError, NotFoundError, ServerBusyError  # noqa: E402
from mimir.ui.chat import TurnRunner, waiting_text  # noqa: E402
from mimir.ui.handlers import Handlers  # noqa: E402

MiB = 1024 * 1024
REPLY = "A sum adds terms one by one."


def scripted_app(options: dict | None = None, *, budget: str = "1GiB", extra_models: dict | None = None) -> MimirApp:
    models = {"default": {"backend": "scripted", "path": "scripted", "options": {"replies": [REPLY], **(options or {})}}}
    models.update(extra_models or {})
    data = {"models": models, "roles": {r: "default" for r in ("tool_decision", "routing", "thinking", "response")},
            "budget": {"memory": budget}, "tutor": {"thinking": False}}
    return MimirApp(settings_from_dict(data))


def request_as(principal: Principal | None = LOCAL_ADMIN, address: str = "127.0.0.1"):
    """The ``gr.Request`` Gradio hands a handler after the access guard let the call in."""
    import gradio as gr
    from starlette.requests import Request

    state = {} if principal is None else {"principal": principal}
    scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": [],
             "client": (address, 5000), "state": state}
    return gr.Request(request=Request(scope))


ME = request_as()


def last(generator):
    out = None
    for out in generator:
        pass
    return out


def is_skip(value) -> bool:
    return value == {"__type__": "update"}


# -- the turn runner ---------------------------------------------------------------------


def test_stream_announces_the_load_then_streams_then_finishes():
    with scripted_app() as app:
        runner = TurnRunner(app)
        session = runner.start_session("What is summation?", None)
        events = list(runner.stream("What is summation?", session))
    kinds = [e.kind for e in events]
    assert kinds[0] == "status" and events[0].text.startswith("loading model 'default' (estimated ")
    assert kinds[-1] == "done" and set(kinds[1:-1]) == {"text"}
    assert "".join(e.text for e in events if e.kind == "text") == REPLY
    assert events[-1].result.session_id == session and events[-1].result.response == REPLY


def test_start_session_checks_input_before_creating_anything():
    with scripted_app() as app:
        runner = TurnRunner(app)
        with pytest.raises(InvalidInputError):
            runner.start_session(" \n ", None)
        assert app.conversations.list_sessions() == []
        with pytest.raises(NotFoundError):
            runner.start_session("hi", "s-does-not-exist")
        sid = runner.start_session("hi", None)
        assert runner.start_session("again", sid) == sid


def test_a_second_visitors_turn_waits_in_line_and_says_so():
    # Two real turns at once. The first visitor's turn is held inside the tutor pipeline: its
    # model needs memory that a lease on "blocker" holds (the manager waits for it), so it
    # keeps running for as long as the test holds that lease, without any timing.
    blocker = {"blocker": {"backend": "scripted", "path": "b", "options": {"size_bytes": 60 * MiB}}}
    with scripted_app({"size_bytes": 60 * MiB}, budget="100MiB", extra_models=blocker) as app:
        runner = TurnRunner(app)
        alice = runner.start_session("What is summation?", None)
        bob = runner.start_session("Is 7 prime?", None)
        with app.manager.use("blocker"):
            # The first turn announces nothing while it waits for memory (the "loading"
            # line comes when its load starts), so its events are read in a thread and its
            # start is seen in the admission queue.
            first_events: list = []
            reader = threading.Thread(target=lambda: first_events.extend(
                runner.stream("What is summation?", alice, user="browser:alice")), daemon=True)
            reader.start()
            deadline = time.monotonic() + 60
            while app.queue.running < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert app.queue.running == 1
            second = runner.stream("Is 7 prime?", bob, user="browser:bob")
            waiting = next(second)
            assert (waiting.kind, waiting.text) == ("status", waiting_text(1))
            assert app.queue.depth == 1
            assert app.manager.status().get("default") is None  # the first turn is still waiting
        reader.join(60)
        assert first_events[-1].kind == "done"
        assert first_events[0].text.startswith("loading model 'default'")
        second_events = list(second)
        assert second_events[-1].kind == "done"
        # The second turn ran after the first: it found the model the first one loaded.
        assert [e.text for e in second_events if e.kind == "status"] == []
        assert "".join(e.text for e in first_events if e.kind == "text") == REPLY
        assert "".join(e.text for e in second_events if e.kind == "text") == REPLY
        (a_turn,) = app.conversations.turns(alice)
        (b_turn,) = app.conversations.turns(bob)
        assert a_turn.status == b_turn.status == "ok"


def test_one_visitor_cannot_run_two_turns_at_once():
    with scripted_app() as app:
        runner = TurnRunner(app)
        session = runner.start_session("first", None)
        mine = app.queue.enter("browser:me")
        events = list(runner.stream("second one", session, user="browser:me"))
        assert [e.kind for e in events] == ["error"]
        assert isinstance(events[0].error, ServerBusyError) and events[0].error.http_status == 429
        mine.release()


def test_closing_the_page_mid_answer_stops_the_generation_and_frees_the_model():
    words = " ".join(f"w{i}" for i in range(200))
    with scripted_app({"replies": [words], "token_s": 0.01}) as app:
        runner = TurnRunner(app)
        session = runner.start_session("long answer please", None)
        stream = runner.stream("long answer please", session, user="browser:me")
        for event in stream:
            if event.kind == "text":
                break
        stream.close()  # what Gradio does when the page goes away
        assert app.queue.wait_idle(30)
        turn = app.conversations.turns(session)[-1]
        assert turn.status == "failed" and "page was closed" in turn.error
        assert app.manager.status().get("default").in_use == 0
        with app.manager.use("default") as model:
            assert model.tokens_streamed < 200  # stopped within a token of the page closing


def test_a_failing_turn_is_an_error_event_and_the_session_goes_on():
    with scripted_app({"fail_on": "explode"}) as app:
        runner = TurnRunner(app)
        session = runner.start_session("please explode", None)
        events = list(runner.stream("please explode", session))
        assert events[-1].kind == "error" and isinstance(events[-1].error, GenerationError)
        assert [t.status for t in app.conversations.turns(session)] == ["failed"]
        again = list(runner.stream("What is a prime?", session))
        assert again[-1].kind == "done"
        assert [t.status for t in app.conversations.turns(session)] == ["failed", "ok"]


# -- chat handlers -----------------------------------------------------------------------


def test_chat_streams_and_ends_with_answer_status_and_session():
    with scripted_app() as app:
        h = Handlers(app)
        outputs = list(h.chat("What is summation?", [], None, ME))
        chatbot, box, status, session, sessions = outputs[-1]
        assert outputs[0][1] == ""  # the textbox is cleared as soon as the turn starts
        assert any(o[0][-1].get("metadata", {}).get("status") == "pending" for o in outputs)  # loading shown
        assert chatbot[0] == {"role": "user", "content": "What is summation?"}
        assert chatbot[1] == {"role": "assistant", "content": REPLY}
        assert chatbot[-1]["metadata"]["title"] == status and "peak RSS" in status
        assert app.conversations.get_session(session).turn_count == 1
        assert sessions["value"] == session and [c[1] for c in sessions["choices"]] == [session]
        assert sessions["info"] == "1 session of yours."


SAM = Principal("u-sam", "sam", "student")
KIM = Principal("u-kim", "kim", "student")
TESS = Principal("u-tess", "tess", "teacher")


def test_students_never_see_each_others_sessions_whatever_id_they_send():
    """Also issue 15's promise: a forged or foreign session id sent by the web app's client
    adds no one else's session to this browser (the server decides who owns what)."""
    with scripted_app() as app:
        h = Handlers(app)
        sam, kim = request_as(SAM), request_as(KIM)
        a_chat, _, _, a_session, _ = last(h.chat("Sam asks about fractions", [], None, sam))
        b_chat, _, _, b_session, b_sessions = last(h.chat("Kim asks about verbs", [], None, kim))
        assert a_session != b_session and app.conversations.get_session(a_session).owner_id == "u-sam"
        assert "Sam" not in str(b_chat) and [c[1] for c in b_sessions["choices"]] == [b_session]
        # Kim opens Sam's session by its id: refused exactly like an id that does not exist
        chatbot, message, session = h.open_session(a_session, kim)
        _, missing, _ = h.open_session("s-000000000000", kim)
        assert is_skip(chatbot) and is_skip(session) and "no session" in message
        assert message.replace(a_session, "ID") == missing.replace("s-000000000000", "ID")
        # ... and sending a turn into it is refused too, storing nothing there
        chatbot, _, status, session, sessions = last(h.chat("Kim writes into Sam's session", [], a_session, kim))
        assert "no session" in status and is_skip(sessions)
        assert app.conversations.get_session(a_session).turn_count == 1
        chatbot, message, session = h.open_session(a_session, sam)
        assert session == a_session and chatbot[0]["content"] == "Sam asks about fractions"
        # page load lists only the user's own sessions
        dropdown, *_ = h.load_page(kim)
        assert [c[1] for c in dropdown["choices"]] == [b_session]
        app.conversations.delete_session(b_session)
        assert h.load_page(kim)[0]["info"] == "None of yours yet."


def test_teachers_read_every_session_but_write_only_their_own():
    with scripted_app() as app:
        h = Handlers(app)
        *_, sam_session, _ = last(h.chat("Sam asks about fractions", [], None, request_as(SAM)))
        teacher = request_as(TESS)
        dropdown, _, user, cache_tab, models_tab = h.load_page(teacher)
        assert [c[1] for c in dropdown["choices"]] == [sam_session] and "all users" in dropdown["info"]
        assert "tess" in user and cache_tab["visible"] is False and models_tab["visible"] is False
        chatbot, message, session = h.open_session(sam_session, teacher)
        assert chatbot[0]["content"] == "Sam asks about fractions" and "read-only" in message
        *_, status, _, _ = last(h.chat("Teacher writes into it", [], sam_session, teacher))
        assert "no session" in status and app.conversations.get_session(sam_session).turn_count == 1


def test_every_handler_refuses_a_call_the_guard_did_not_let_in():
    with scripted_app() as app:
        h = Handlers(app)
        nobody = request_as(None)
        *_, status, session, _ = last(h.chat("Hello?", [], None, nobody))
        assert "sign in first" in status and session is None and app.conversations.list_sessions() == []
        assert "sign in first" in h.open_session("s-x", nobody)[1]
        assert "sign in first" in h.memory(None, None, nobody)[-1]
        assert "sign in first" in h.models(nobody)[0]
        assert "sign in first" in h.scan(nobody)[0]
        assert "sign in first" in h.load_page(nobody)[1]


def test_chat_shows_errors_in_the_page_and_keeps_working():
    with scripted_app({"fail": "weights are corrupted"}) as app:
        h = Handlers(app)
        chatbot, box, status, session, _ = last(h.chat("   ", [], None, ME))
        assert status.startswith("**Error:**") and session is None and chatbot == []
        assert box == "   "  # the input stays for the student to fix
        chatbot, _, status, session, _ = last(h.chat("What is a verb?", [], None, ME))
        assert "failed to load" in status and "weights are corrupted" in status
        assert chatbot[-1]["content"].startswith("**Error:**")
        assert session is not None  # the failed turn is in this session
        assert [t.status for t in app.conversations.turns(session)] == ["failed"]


def test_budget_too_small_is_a_readable_message():
    with scripted_app({"size_bytes": 64 * MiB}, budget="1MiB") as app:
        *_, status, _, _ = last(Handlers(app).chat("What is a noun?", [], None, ME))
    assert status.startswith("**Error:**") and "budget" in status and "64.0MiB" in status


# -- memory and models -------------------------------------------------------------------


def test_memory_shows_the_turns_steps_and_follows_the_newest_turn():
    with scripted_app() as app:
        h = Handlers(app)
        *_, first, _ = last(h.chat("What is summation?", [], None, ME))
        plot, picker, steps, resident, budget, key, message = h.memory(None, None, ME)
        assert message == "" and plot is not None
        # "summation" is math, so the math engine checks the message and then the answer's claims.
        assert list(steps["step"]) == ["history", "tool_decision", "routing", "rules", "math_check", "response",
                                       "postprocess", "math_claims"]
        assert list(resident["model"]) == ["default"] and "RAM budget" in budget
        first_turn = picker["value"]
        again = h.memory(None, key, ME)
        assert all(is_skip(v) for v in again[:3]) and again[5] == key  # nothing new: no redraw
        last(h.chat("And a product?", [], first, ME))
        newer = h.memory(None, key, ME)
        assert newer[1]["value"] != first_turn  # follows the newest turn
        *outputs, picked = h.pick_turn(first_turn, newer[5], ME)
        assert picked == first_turn and outputs[1]["value"] == first_turn
        *outputs, picked = h.pick_turn(newer[1]["value"], outputs[5], ME)
        assert picked is None  # choosing the newest means following it


def test_students_see_the_memory_of_their_own_turns_teachers_of_all():
    with scripted_app() as app:
        h = Handlers(app)
        last(h.chat("Sam asks", [], None, request_as(SAM)))
        last(h.chat("Kim asks", [], None, request_as(KIM)))
        _, sam_picker, *_ = h.memory(None, None, request_as(SAM))
        _, kim_picker, *_ = h.memory(None, None, request_as(KIM))
        _, all_picker, *_ = h.memory(None, None, request_as(TESS))
        sam_ids = [c[1] for c in sam_picker["choices"]]
        kim_ids = [c[1] for c in kim_picker["choices"]]
        assert len(sam_ids) == len(kim_ids) == 1 and sam_ids != kim_ids
        assert sorted(c[1] for c in all_picker["choices"]) == sorted(sam_ids + kim_ids)
        # a student picking another's turn id gets their own newest instead
        *outputs, picked = h.pick_turn(kim_ids[0], None, request_as(SAM))
        assert outputs[1]["value"] == sam_ids[0]


def test_models_tab_unloads_only_idle_models():
    with scripted_app() as app:
        h = Handlers(app)
        counters, budget, roles, models, pick = h.models(ME)
        assert pick["choices"] == [] and list(models["resident"]) == ["no"]
        assert list(roles["model"]) == ["default"] * 4
        held = threading.Event()
        done = threading.Event()

        def hold():
            with app.manager.use("default"):
                held.set()
                done.wait(30)

        worker = threading.Thread(target=hold)
        worker.start()
        held.wait(30)
        try:
            message, *_ = h.unload("default", ME)
            assert message.startswith("**Error:**") and "in use" in message
        finally:
            done.set()
            worker.join(30)
        counters, _, _, models, pick = h.models(ME)
        assert pick["choices"] == ["default"] and "**Loads** 1" in counters
        message, counters, _, _, models, pick = h.unload("default", ME)
        assert message == "Unloaded `default`." and list(models["resident"]) == ["no"]
        assert "**unloads** 1" in counters and pick["choices"] == []
        (entry,) = app.audit.entries(action="model.unload")
        assert (entry.actor, entry.target, entry.address) == ("local", "default", "127.0.0.1")


def test_only_admins_unload_models_whatever_the_page_shows():
    with scripted_app() as app:
        h = Handlers(app)
        last(h.chat("What is a noun?", [], None, ME))
        for who in (SAM, TESS):
            message, counters, *_ = h.unload("default", request_as(who))
            assert "unloading a model needs the admin role" in message
            assert "needs the admin role" in counters  # the Models tab's contents are refused too
        assert app.manager.status().resident and app.audit.entries() == []


# -- cache -------------------------------------------------------------------------------


@pytest.fixture
def cache_tree():
    base = Path(os.environ["HF_HUB_CACHE"]).parent
    return build_cache(base)


def test_cache_scan_plan_confirm_and_delete(cache_tree):
    extra = {"alpha": {"backend": "scripted", "repo": "org/alpha"}}
    with scripted_app(extra_models=extra) as app:
        h = Handlers(app)
        totals, repos, warnings, files = h.scan(ME)
        assert {"model/org/alpha", "model/org/beta", "dataset/org/data"} <= set(repos["repo"])
        assert "incomplete" in set(warnings["kind"]) and "default" in set(files["model"])
        line, table, plan, confirm, delete, result = h.plan(True, False, False, ME)
        assert line.startswith("**Dry run:**") and plan is not None and plan.repos
        assert delete["interactive"] is False and confirm["value"] is False
        assert "model/org/beta" in set(table["item"]) and cache_tree.repo("org/beta").is_dir()
        assert h.confirm_changed(False, plan)["interactive"] is False
        assert h.confirm_changed(True, None)["interactive"] is False
        assert h.confirm_changed(True, plan)["interactive"] is True
        # no deletion without the confirmation, or without a plan
        message, kept_plan, *_ = h.execute(False, plan, ME)
        assert "tick the confirmation box" in message and kept_plan is plan and cache_tree.repo("org/beta").is_dir()
        message, *_ = h.execute(True, None, ME)
        assert "make a plan first" in message
        message, plan_after, confirm, delete, totals, repos, *_ = h.execute(True, plan, ME)
        assert message.startswith("**Freed ") and plan_after is None and delete["interactive"] is False
        assert not cache_tree.repo("org/beta").exists() and cache_tree.repo("org/alpha").is_dir()
        assert "model/org/beta" not in set(repos["repo"]) and "model/org/alpha" in set(repos["repo"])
        line, plan_state, confirm, delete = h.options_changed()
        assert plan_state is None and delete["interactive"] is False
        (entry,) = app.audit.entries(action="cache.prune")
        assert entry.actor == "local" and entry.detail["freed_bytes"] > 0


def test_students_and_teachers_cannot_plan_or_prune(cache_tree):
    extra = {"alpha": {"backend": "scripted", "repo": "org/alpha"}}
    with scripted_app(extra_models=extra) as app:
        h = Handlers(app)
        _, _, plan, *_ = h.plan(True, False, False, ME)  # a real plan, made by an admin
        for who in (SAM, TESS):
            line, *_ = h.plan(True, False, False, request_as(who))
            assert "pruning the model cache needs the admin role" in line
            message, *rest = h.execute(True, plan, request_as(who))
            assert "needs the admin role" in message and "needs the admin role" in rest[3]
            assert "needs the admin role" in h.scan(request_as(who))[0]
        assert cache_tree.repo("org/beta").is_dir() and app.audit.entries() == []


def test_cache_errors_are_messages(tmp_path, monkeypatch):
    not_a_dir = tmp_path / "file-not-dir"
    not_a_dir.write_text("x")
    monkeypatch.setenv("HF_HUB_CACHE", str(not_a_dir))
    with scripted_app() as app:
        h = Handlers(app)
        totals, *rest = h.scan(ME)
        assert totals.startswith("**Error:**") and "is a file" in totals and all(is_skip(v) for v in rest)
        line, *_ = h.plan(False, False, False, ME)
        assert line.startswith("**Error:**")


def test_server_binds_a_free_port_and_refuses_a_busy_one():
    from mimir.ui.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        sock.listen()
        port = sock.getsockname()[1]
        assert port > 0
        with pytest.raises(InvalidInputError, match=f"cannot listen on 127.0.0.1:{port}: .*choose another --port"):
            bind("127.0.0.1", port)
    finally:
        sock.close()
    with pytest.raises(InvalidInputError, match="cannot listen on no-such-host.invalid"):
        bind("no-such-host.invalid", 0)
