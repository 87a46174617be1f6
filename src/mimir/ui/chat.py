"""Running tutor turns for the web app: through the admission queue, in a worker thread, streamed.

``TurnRunner.stream(message, session_id, user=...)`` yields :class:`ChatEvent` values as the
turn progresses: ``status`` lines ("you are #2 in line", "loading model 'default' (estimated
352.0MiB)"), ``text`` pieces of the answer, then one ``done`` (with the ``TurnResult``) or
``error`` (with the exception). The turn runs in its own thread so the page streams while the
model works.

Turns wait in the app's admission queue (:mod:`mimir.runtime.admission`), served round-robin
across users (the signed-in user, else the browser session), with the same limits as the
API: a second turn of one user is refused while the first runs, a full queue is refused, and
a waiting visitor sees their place in line. A page that goes away (the event's generator is
closed) cancels the turn: generation stops at the next token and frees the model.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mimir.errors import MimirError

if TYPE_CHECKING:
    from mimir.app import MimirApp
    from mimir.runtime.admission import Ticket
    from mimir.tutor.pipeline import TurnResult

log = logging.getLogger(__name__)



def waiting_text(place: int) -> str:
    """The status line of a turn waiting in line (1: next)."""
    return f"you are #{place} in line" + (" (next)" if place == 1 else "")


@dataclass(frozen=True)
class ChatEvent:
    kind: Literal["status", "text", "done", "error"]
    text: str = ""
    result: TurnResult | None = None
    error: BaseException | None = None


class TurnRunner:
    def __init__(self, app: MimirApp):
        self.app = app

    def start_session(self, message: str, session_id: str | None, *, owner_id: str | None = None) -> str:
        """The session this message goes to: ``session_id`` (which must exist) or a new one
        owned by ``owner_id``.

        The message is checked first, so an empty one creates no session. The web app creates
        the session before the turn so that it knows the id even when the turn fails.
        """
        from mimir.tutor.text import clean_user_text

        clean_user_text(message)  # raises InvalidInputError for empty input
        if session_id is None:
            return self.app.conversations.create_session(owner_id=owner_id)
        self.app.conversations.get_session(session_id)  # NotFoundError if it was deleted
        return session_id

    def stream(self, message: str, session_id: str, *, user: str = "local") -> Iterator[ChatEvent]:
        """Run one turn in a worker thread; yield its events until ``done`` or ``error``.

        Consecutive text pieces that arrived while the consumer was busy come as one event.
        Closing the generator before the end cancels the turn.
        """
        try:
            ticket = self.app.queue.enter(user)
        except MimirError as exc:  # busy user or full queue: nothing started
            yield ChatEvent("error", error=exc)
            return
        events: queue.SimpleQueue[ChatEvent] = queue.SimpleQueue()
        worker = threading.Thread(
            target=self._work, args=(message, session_id, events, ticket), name="mimir-ui-turn", daemon=True
        )
        worker.start()
        try:
            yield from self._events(events)
        finally:
            ticket.cancel("the page was closed")  # no effect once the turn is over

    @staticmethod
    def _events(events: queue.SimpleQueue[ChatEvent]) -> Iterator[ChatEvent]:
        while True:
            event = events.get()
            if event.kind == "text":
                pieces = [event.text]
                pending: ChatEvent | None = None
                while True:
                    try:
                        nxt = events.get_nowait()
                    except queue.Empty:
                        break
                    if nxt.kind != "text":
                        pending = nxt
                        break
                    pieces.append(nxt.text)
                yield ChatEvent("text", "".join(pieces))
                if pending is None:
                    continue
                event = pending
            yield event
            if event.kind in ("done", "error"):
                return

    def _work(self, message: str, session_id: str, events: queue.SimpleQueue[ChatEvent], ticket: Ticket) -> None:
        try:
            ticket.wait(on_position=lambda place: events.put(ChatEvent("status", waiting_text(place))))
            result = self.app.tutor.run_turn(
                message,
                session_id,
                on_token=lambda text: events.put(ChatEvent("text", text)),
                on_status=lambda text: events.put(ChatEvent("status", text)),
                control=ticket.control,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the page, which shows it
            if not isinstance(exc, Exception):
                log.warning("turn interrupted: %r", exc)
            elif not isinstance(exc, MimirError):
                log.exception("turn failed with an unexpected error")
            ticket.release()
            self._flush()
            events.put(ChatEvent("error", error=exc))
            if not isinstance(exc, Exception):
                raise  # Ctrl-C and SystemExit are not the page's to keep
            return
        ticket.release()
        # Steps are written by the telemetry writer thread: the Memory tab sees this turn
        # as soon as the page does.
        self._flush()
        events.put(ChatEvent("done", result=result))

    def _flush(self) -> None:
        try:
            self.app.telemetry.flush()
        except Exception:  # a failing sink must not hide the answer
            log.exception("flushing telemetry failed")
