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

from mimir.core.memory import process_rss_bytes
from mimir.errors import InvalidInputError, MimirError, NotFoundError
from mimir.tutor.summary import turn_status_line
from mimir.ui import render
from mimir.ui.chat import TurnRunner

if TYPE_CHECKING:
    from mimir.app import MimirApp

log = logging.getLogger(__name__)

#: How many recent turns the Memory tab plots and offers in its turn picker.
MEMORY_TURNS = 8
#: Past sessions a browser remembers.
MAX_OWNED_SESSIONS = 50


def _error(exc: BaseException) -> str:
    if not isinstance(exc, MimirError):
        log.exception("web app handler failed", exc_info=exc)
    return render.error_markdown(exc)


def _frame(table: render.Table):
    return table.to_frame()


class Handlers:
    def __init__(self, app: MimirApp):
        self.app = app
        self.runner = TurnRunner(app)

    # -- chat ------------------------------------------------------------------------------
    def _owned_sessions(self, owned: list[str] | None) -> tuple[list[str], list[tuple[str, str]]]:
        """This browser's session ids that still exist, and their dropdown choices."""
        infos = []
        for sid in list(owned or [])[:MAX_OWNED_SESSIONS]:
            if not isinstance(sid, str):
                continue
            try:
                infos.append(self.app.conversations.get_session(sid))
            except NotFoundError:
                continue
        return [i.id for i in infos], render.session_choices(infos)

    def load_page(self, owned: list[str] | None):
        """On page load: the sessions this browser started before (from its local storage)."""
        try:
            kept, choices = self._owned_sessions(owned)
        except MimirError as exc:
            return gr.update(choices=[], value=None), owned, _error(exc)
        return gr.update(choices=choices, value=None, info=render.sessions_info(len(choices))), kept, ""

    def chat(self, message: str, history: list | None, session_id: str | None, owned: list[str] | None) -> Iterator[tuple]:
        """Stream one turn. Outputs: chatbot, textbox, status line, session, owned, sessions."""
        history = list(history or [])
        owned = list(owned or [])
        try:
            session_id = self.runner.start_session(message or "", session_id)
        except MimirError as exc:
            yield history, message, _error(exc), session_id, owned, gr.skip()
            return
        except Exception as exc:
            yield history, message, _error(exc), session_id, owned, gr.skip()
            return
        if session_id not in owned:
            owned = [session_id, *owned][:MAX_OWNED_SESSIONS]
        shown = [*history, {"role": "user", "content": message}]
        answer = ""
        status = render.status_message("thinking…", pending=True)
        yield [*shown, status], "", "", session_id, owned, gr.skip()
        for event in self.runner.stream(message, session_id):
            if event.kind == "status":
                status = render.status_message(event.text, pending=True)
                yield [*shown, *([{"role": "assistant", "content": answer}] if answer else []), status], gr.skip(), \
                    event.text, session_id, owned, gr.skip()
            elif event.kind == "text":
                answer += event.text
                yield [*shown, {"role": "assistant", "content": answer}], gr.skip(), "", session_id, owned, gr.skip()
            elif event.kind == "done":
                result = event.result
                line = turn_status_line(result)
                messages = render.answer_messages(
                    result.response, status=line, chart_path=result.chart_path,
                    chart_description=result.chart_description, notices=result.notices,
                )
                _, choices = self._owned_sessions(owned)
                sessions = gr.update(choices=choices, value=session_id, info=render.sessions_info(len(choices)))
                yield [*shown, *messages], gr.skip(), line, session_id, owned, sessions
            else:
                exc = event.error
                text = str(exc) if isinstance(exc, MimirError) else f"{type(exc).__name__}: {exc}"
                messages = render.answer_messages(answer, error=text)
                try:
                    _, choices = self._owned_sessions(owned)
                    sessions = gr.update(choices=choices, value=session_id, info=render.sessions_info(len(choices)))
                except MimirError:
                    sessions = gr.skip()
                yield [*shown, *messages], gr.skip(), render.error_markdown(exc), session_id, owned, sessions

    def new_session(self):
        """Outputs: chatbot, status line, session, sessions dropdown value."""
        return [], "", None, gr.update(value=None)

    def open_session(self, session_id: str | None, owned: list[str] | None):
        """Outputs: chatbot, status line, session. Only this browser's sessions open."""
        if not session_id:
            return gr.skip(), "Choose a past session first.", gr.skip()
        if session_id not in (owned or []):
            return gr.skip(), _error(InvalidInputError("that session was not started in this browser")), gr.skip()
        try:
            turns = self.app.conversations.turns(session_id)
            peaks = self._turn_peaks()
        except MimirError as exc:
            return gr.skip(), _error(exc), gr.skip()
        return render.history_messages(turns, peaks), f"Reopened a session with {len(turns)} turn(s).", session_id

    def _turn_peaks(self) -> dict[str, int | None]:
        from mimir.storage.telemetry_store import TelemetryStore

        return {t.turn_id: t.peak_rss_bytes for t in TelemetryStore(self.app.db).turns(last=200)}

    # -- memory ----------------------------------------------------------------------------
    def memory(self, picked: str | None, owned: list[str] | None, last_key: Any):
        """Outputs: plot, turn picker, steps table, resident table, budget line, key, message.

        The steps shown are those of ``picked``, else of the newest turn. The plot, picker
        and steps are redrawn only when new steps were stored or the choice changed (``key``).
        """
        return self._memory(picked, owned, last_key)[0]

    def pick_turn(self, turn_id: str | None, owned: list[str] | None, last_key: Any):
        """The visitor chose a turn: show it until they choose again. Choosing the newest
        turn means "follow the newest". Outputs: those of :meth:`memory`, then ``picked``."""
        outputs, newest = self._memory(turn_id, owned, last_key)
        return (*outputs, None if turn_id == newest else turn_id)

    def _memory(self, picked: str | None, owned: list[str] | None, last_key: Any) -> tuple[tuple, str | None]:
        from mimir.storage.telemetry_store import TelemetryStore
        from mimir.ui.plots import timeline_figure

        try:
            status = self.app.manager.status()
            resident = _frame(render.resident_table(status))
            budget = render.budget_markdown(
                status, ram_setting=self.app.settings.budget.ram_setting, rss_now_bytes=process_rss_bytes()
            )
            store = TelemetryStore(self.app.db)
            turns = store.turns(last=MEMORY_TURNS)
            newest = turns[-1].turn_id if turns else None
            ids = [t.turn_id for t in turns]
            chosen = picked if picked in ids else newest
            key = (store.count_steps(), newest, chosen)
            if key == last_key:
                return (gr.skip(), gr.skip(), gr.skip(), resident, budget, key, ""), newest
            steps = store.recent_steps(last_turns=MEMORY_TURNS)
            figure = timeline_figure(
                render.timeline(steps, budget_ram_bytes=status.budget_ram_bytes, budget_gpu_bytes=status.budget_gpu_bytes)
            )
            choices = render.turn_choices(turns, own_sessions=owned or [])
            chosen_steps = next((t.steps for t in turns if t.turn_id == chosen), ())
            steps_frame = _frame(render.steps_table(chosen_steps))
            return (figure, gr.update(choices=choices, value=chosen), steps_frame, resident, budget, key, ""), newest
        except Exception as exc:
            return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), None, _error(exc)), None

    # -- models ----------------------------------------------------------------------------
    def models(self):
        """Outputs: counters line, budget line, roles table, models table, unload choices."""
        from mimir.inventory import model_rows

        try:
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

    def unload(self, model_id: str | None):
        """Outputs: message, then those of :meth:`models`."""
        if not model_id:
            return ("No idle model is loaded.", *self.models())
        try:
            done = self.app.manager.unload(model_id, reason="unloaded from the web app")
        except Exception as exc:
            return (_error(exc), *self.models())
        message = f"Unloaded `{model_id}`." if done else f"`{model_id}` was not loaded."
        return (message, *self.models())

    # -- cache -----------------------------------------------------------------------------
    def scan(self):
        """Outputs: totals, repos table, warnings table, model files table."""
        from mimir.cache import scan_cache

        try:
            report = scan_cache(None, self.app.settings)
        except Exception as exc:
            return _error(exc), gr.skip(), gr.skip(), gr.skip()
        return (
            render.cache_totals_markdown(report),
            _frame(render.cache_table(report)),
            _frame(render.cache_warnings_table(report)),
            _frame(render.cache_models_table(report)),
        )

    def plan(self, unreferenced: bool, old_revisions: bool, incomplete: bool):
        """The dry run. Outputs: plan line, plan table, plan state, confirm box, delete button, result."""
        from mimir.cache import plan_cleanup, scan_cache

        reset = (gr.update(value=False), gr.update(interactive=False), "")
        try:
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

    def execute(self, confirmed: bool, plan):
        """Delete what the shown plan lists. Outputs: result, plan state, confirm, delete, then :meth:`scan`'s."""
        done = (None, gr.update(value=False), gr.update(interactive=False))
        if plan is None:
            return (_error(InvalidInputError("make a plan first: nothing is deleted without one")), *done, *self.scan())
        if not confirmed:
            return (_error(InvalidInputError("tick the confirmation box to delete")), plan, gr.skip(), gr.skip(),
                    *self.scan())
        try:
            result = plan.execute()
        except Exception as exc:
            return (_error(exc), *done, *self.scan())
        return (render.cleanup_result_markdown(result), *done, *self.scan())
