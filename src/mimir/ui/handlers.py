"""What the web app's buttons and timers do: read the app's state, render it, catch errors.

Each method returns the values for its event's outputs, in order (see :mod:`mimir.ui.app`
for the wiring). Errors never escape: a ``MimirError`` becomes a readable line in the page,
anything else is logged with its traceback and shown as an internal error, and the server
keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from mimir.auth.roles import Principal, require
from mimir.auth.web import address_of, principal_of
from mimir.core.memory import process_rss_bytes
from mimir.errors import InvalidInputError, MimirError
from mimir.storage.conversations import ANY_OWNER
from mimir.tutor.summary import turn_status_line
from mimir.ui import render
from mimir.ui.chat import TurnRunner

if TYPE_CHECKING:
    from mimir.app import MimirApp

log = logging.getLogger(__name__)

#: How many recent turns the Memory tab plots and offers in its turn picker.
MEMORY_TURNS = 8
#: Past sessions the dropdown lists (newest first).
MAX_LISTED_SESSIONS = 50


def _error(exc: BaseException) -> str:
    if not isinstance(exc, MimirError):
        log.exception("web app handler failed", exc_info=exc)
    return render.error_markdown(exc)


def _frame(table: render.Table):
    return table.to_frame()


class Handlers:
    """Every handler takes the ``gr.Request`` last and checks the signed-in user's role
    itself (:func:`mimir.auth.roles.require`): the page hiding a tab or a button is never
    the check, since any handler can be called directly (``gradio_client``)."""

    def __init__(self, app: MimirApp):
        self.app = app
        self.runner = TurnRunner(app)

    def _who(self, request: Any, action: str = "chat") -> Principal:
        """The signed-in user of this request, allowed ``action``; else an error."""
        return require(principal_of(request), action)

    def _audit(self, who: Principal, action: str, target: str | None, detail: dict, request: Any) -> None:
        self.app.audit.record(who.name, action, target, detail, address=address_of(request))

    # -- chat ------------------------------------------------------------------------------
    def _sessions(self, who: Principal) -> tuple[list[tuple[str, str]], str]:
        """The past-sessions choices this user may open, and the note under the list.
        Students: their own. Teachers and admins: everyone's (others' read-only)."""
        everyone = who.can("read_all_sessions")
        owner = ANY_OWNER if everyone else who.user_id
        infos = self.app.conversations.list_sessions(MAX_LISTED_SESSIONS, owner=owner)
        names = self._owner_names() if everyone and not who.is_local else {}
        note = render.sessions_info(len(infos), everyone and not who.is_local)
        return render.session_choices(infos, owners=names, me=who.user_id), note

    def _owner_names(self) -> dict[str | None, str]:
        return {u.id: u.name for u in self.app.accounts.list_users()}

    def _sessions_update(self, who: Principal, value: str | None):
        choices, info = self._sessions(who)
        return gr.update(choices=choices, value=value, info=info)

    def load_page(self, request: gr.Request):
        """On page load: the user's past sessions, who is signed in, the tabs their role may
        see. Outputs: sessions dropdown, status line, user line, cache tab, models tab."""
        try:
            who = self._who(request)
            sessions = self._sessions_update(who, None)
        except Exception as exc:
            hidden = gr.update(visible=False)
            return gr.update(choices=[], value=None), _error(exc), "", hidden, hidden
        return (
            sessions,
            "",
            render.user_line(who.name, who.role, signed_in=not who.is_local),
            gr.update(visible=who.can("view_cache")),
            gr.update(visible=who.can("view_models")),
        )

    def chat(self, message: str, history: list | None, session_id: str | None, request: gr.Request) -> Iterator[tuple]:
        """Stream one turn. Outputs: chatbot, textbox, status line, session, sessions.

        The turn goes to ``session_id`` only if the signed-in user owns it; otherwise it is
        refused exactly like a session that does not exist.
        """
        history = list(history or [])
        try:
            who = self._who(request)
            if session_id is not None:
                self.app.conversations.get_session(session_id, owner=who.user_id)
            session_id = self.runner.start_session(message or "", session_id, owner_id=who.user_id)
        except Exception as exc:
            yield history, message, _error(exc), session_id, gr.skip()
            return
        shown = [*history, {"role": "user", "content": message}]
        answer = ""
        status = render.status_message("thinking…", pending=True)
        yield [*shown, status], "", "", session_id, gr.skip()
        user = f"user:{who.user_id}" if who.user_id else f"browser:{getattr(request, 'session_hash', None) or 'local'}"
        for event in self.runner.stream(message, session_id, user=user):
            if event.kind == "status":
                status = render.status_message(event.text, pending=True)
                yield [*shown, *([{"role": "assistant", "content": answer}] if answer else []), status], gr.skip(), \
                    event.text, session_id, gr.skip()
            elif event.kind == "text":
                answer += event.text
                yield [*shown, {"role": "assistant", "content": answer}], gr.skip(), "", session_id, gr.skip()
            elif event.kind == "done":
                result = event.result
                line = turn_status_line(result)
                messages = render.answer_messages(
                    result.response, status=line, chart_path=result.chart_path,
                    chart_description=result.chart_description, notices=result.notices,
                )
                yield [*shown, *messages], gr.skip(), line, session_id, self._sessions_update(who, session_id)
            else:
                exc = event.error
                text = str(exc) if isinstance(exc, MimirError) else f"{type(exc).__name__}: {exc}"
                messages = render.answer_messages(answer, error=text)
                try:
                    sessions = self._sessions_update(who, session_id)
                except MimirError:
                    sessions = gr.skip()
                yield [*shown, *messages], gr.skip(), render.error_markdown(exc), session_id, sessions

    def new_session(self):
        """Outputs: chatbot, status line, session, sessions dropdown value."""
        return [], "", None, gr.update(value=None)

    def open_session(self, session_id: str | None, request: gr.Request):
        """Outputs: chatbot, status line, session.

        Students open only their own sessions; a session id of another user (typed, forged
        or replayed) is answered exactly like one that does not exist. Teachers and admins
        read anyone's, read-only (a turn sent into another user's session is refused).
        """
        if not session_id:
            return gr.skip(), "Choose a past session first.", gr.skip()
        try:
            who = self._who(request)
            owner = ANY_OWNER if who.can("read_all_sessions") else who.user_id
            info = self.app.conversations.get_session(session_id, owner=owner)
            turns = self.app.conversations.turns(session_id)
            peaks = self._turn_peaks(ANY_OWNER if who.can("read_all_memory") else who.user_id)
        except Exception as exc:
            return gr.skip(), _error(exc), gr.skip()
        note = f"Reopened a session with {len(turns)} turn(s)."
        if not who.owns(info.owner_id):
            note += " It belongs to another user: read-only (press **New session** to chat)."
        return render.history_messages(turns, peaks), note, session_id

    def _turn_peaks(self, owner) -> dict[str, int | None]:
        from mimir.storage.telemetry_store import TelemetryStore

        return {t.turn_id: t.peak_rss_bytes for t in TelemetryStore(self.app.db).turns(last=200, owner=owner)}

    # -- memory ----------------------------------------------------------------------------
    def memory(self, picked: str | None, last_key: Any, request: gr.Request):
        """Outputs: plot, turn picker, steps table, resident table, budget line, key, message.

        Students see the steps of their own turns only; teachers and admins see every turn.
        The steps shown are those of ``picked``, else of the newest turn. The plot, picker
        and steps are redrawn only when new steps were stored or the choice changed (``key``).
        """
        return self._memory(picked, last_key, request)[0]

    def pick_turn(self, turn_id: str | None, last_key: Any, request: gr.Request):
        """The visitor chose a turn: show it until they choose again. Choosing the newest
        turn means "follow the newest". Outputs: those of :meth:`memory`, then ``picked``."""
        outputs, newest = self._memory(turn_id, last_key, request)
        return (*outputs, None if turn_id == newest else turn_id)

    def _memory(self, picked: str | None, last_key: Any, request: Any) -> tuple[tuple, str | None]:
        from mimir.storage.telemetry_store import TelemetryStore
        from mimir.ui.plots import timeline_figure

        try:
            who = self._who(request)
            owner = ANY_OWNER if who.can("read_all_memory") else who.user_id
            status = self.app.manager.status()
            resident = _frame(render.resident_table(status))
            budget = render.budget_markdown(
                status, ram_setting=self.app.settings.budget.ram_setting, rss_now_bytes=process_rss_bytes()
            )
            store = TelemetryStore(self.app.db)
            turns = store.turns(last=MEMORY_TURNS, owner=owner)
            newest = turns[-1].turn_id if turns else None
            ids = [t.turn_id for t in turns]
            chosen = picked if picked in ids else newest
            key = (who.user_id, store.count_steps(owner=owner), newest, chosen)
            if key == last_key:
                return (gr.skip(), gr.skip(), gr.skip(), resident, budget, key, ""), newest
            steps = store.recent_steps(last_turns=MEMORY_TURNS, owner=owner)
            figure = timeline_figure(
                render.timeline(steps, budget_ram_bytes=status.budget_ram_bytes, budget_gpu_bytes=status.budget_gpu_bytes)
            )
            mine = {s.id for s in self.app.conversations.list_sessions(MAX_LISTED_SESSIONS, owner=who.user_id)}
            instances = store.turn_instances(ids)
            shown = instances if self.app.db.engine == "postgresql" or len(set(instances.values())) > 1 else None
            choices = render.turn_choices(turns, own_sessions=mine, instances=shown)
            chosen_steps = next((t.steps for t in turns if t.turn_id == chosen), ())
            steps_frame = _frame(render.steps_table(chosen_steps))
            return (figure, gr.update(choices=choices, value=chosen), steps_frame, resident, budget, key, ""), newest
        except Exception as exc:
            return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), None, _error(exc)), None

    # -- models ----------------------------------------------------------------------------
    def models(self, request: gr.Request):
        """Outputs: counters line, budget line, roles table, models table, unload choices. Admins only."""
        from mimir.inventory import model_rows

        try:
            self._who(request, "view_models")
            status = self.app.manager.status()
            rows = model_rows(self.app)
        except Exception as exc:
            return _error(exc), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        idle = render.idle_models(status)
        return (
            render.counters_markdown(status, keep_alive_s=self.app.settings.keep_alive_s),
            render.budget_markdown(status, ram_setting=self.app.settings.budget.ram_setting),
            _frame(render.roles_table(self.app.settings.roles)),
            _frame(render.models_table(rows)),
            gr.update(choices=idle, value=idle[0] if idle else None),
        )

    def unload(self, model_id: str | None, request: gr.Request):
        """Outputs: message, then those of :meth:`models`. Admins only; audited."""
        try:
            who = self._who(request, "unload_model")
        except Exception as exc:
            return (_error(exc), *self.models(request))
        if not model_id:
            return ("No idle model is loaded.", *self.models(request))
        try:
            done = self.app.manager.unload(model_id, reason=f"unloaded from the web app by {who.name}")
            if done:
                self._audit(who, "model.unload", model_id, {}, request)
        except Exception as exc:
            return (_error(exc), *self.models(request))
        message = f"Unloaded `{model_id}`." if done else f"`{model_id}` was not loaded."
        return (message, *self.models(request))

    # -- cache -----------------------------------------------------------------------------
    def scan(self, request: gr.Request):
        """Outputs: totals, repos table, warnings table, model files table. Admins only."""
        from mimir.cache import scan_cache

        try:
            self._who(request, "view_cache")
            report = scan_cache(None, self.app.settings)
        except Exception as exc:
            return _error(exc), gr.skip(), gr.skip(), gr.skip()
        return (
            render.cache_totals_markdown(report),
            _frame(render.cache_table(report)),
            _frame(render.cache_warnings_table(report)),
            _frame(render.cache_models_table(report)),
        )

    def plan(self, unreferenced: bool, old_revisions: bool, incomplete: bool, request: gr.Request):
        """The dry run. Outputs: plan line, plan table, plan state, confirm box, delete button, result. Admins only."""
        from mimir.cache import plan_cleanup, scan_cache

        reset = (gr.update(value=False), gr.update(interactive=False), "")
        try:
            self._who(request, "prune_cache")
            report = scan_cache(None, self.app.settings)
            plan = plan_cleanup(report, unreferenced=unreferenced, old_revisions=old_revisions, incomplete=incomplete)
        except Exception as exc:
            return (_error(exc), gr.skip(), None, *reset)
        return (render.plan_markdown(plan), _frame(render.plan_table(plan)), None if plan.is_empty else plan, *reset)

    def options_changed(self):
        """Changing what to prune drops the plan shown. Outputs: plan line, plan state, confirm, delete."""
        return "Options changed: press **Plan** to see what would go.", None, gr.update(value=False), \
            gr.update(interactive=False)

    def confirm_changed(self, confirmed: bool, plan):
        return gr.update(interactive=bool(confirmed and plan is not None))

    def execute(self, confirmed: bool, plan, request: gr.Request):
        """Delete what the shown plan lists. Outputs: result, plan state, confirm, delete, then :meth:`scan`'s.
        Admins only; audited."""
        done = (None, gr.update(value=False), gr.update(interactive=False))
        try:
            who = self._who(request, "prune_cache")
        except Exception as exc:
            return (_error(exc), *done, *self.scan(request))
        if plan is None:
            return (_error(InvalidInputError("make a plan first: nothing is deleted without one")), *done,
                    *self.scan(request))
        if not confirmed:
            return (_error(InvalidInputError("tick the confirmation box to delete")), plan, gr.skip(), gr.skip(),
                    *self.scan(request))
        try:
            result = plan.execute()
            self._audit(who, "cache.prune", str(plan.cache_dir), result.summary(), request)
        except Exception as exc:
            return (_error(exc), *done, *self.scan(request))
        return (render.cleanup_result_markdown(result), *done, *self.scan(request))
