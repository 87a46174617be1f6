"""Running tutor turns for the web app: one at a time, in a worker thread, streamed.

``TurnRunner.stream(message, session_id)`` yields :class:`ChatEvent` values as the turn
progresses: ``status`` lines ("loading model 'default' (estimated 352.0MiB)"), ``text``
pieces of the answer, then one ``done`` (with the ``TurnResult``) or ``error`` (with the
exception). The turn runs in its own thread so the page streams while the model works; a
browser that goes away mid-answer does not stop the turn (it is stored as usual).

Turns run one at a time (``_turn_lock``): the tutor keeps per-turn callbacks on itself and
the bundled model serves one generation at a time, so a second visitor's turn waits, and is
told so, instead of mixing with the first.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mimir.app import MimirApp
    from mimir.tutor.pipeline import TurnResult

log = logging.getLogger(__name__)

WAITING_TEXT = "waiting for another visitor's answer to finish"


@dataclass(frozen=True)
class ChatEvent:
    kind: Literal["status", "text", "done", "error"]
    text: str = ""
    result: TurnResult | None = None
    error: BaseException | None = None


class TurnRunner:
    def __init__(self, app: MimirApp):
        self.app = app
        self._turn_lock = threading.Lock()

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

    def stream(self, message: str, session_id: str) -> Iterator[ChatEvent]:
        """Run one turn in a worker thread; yield its events until ``done`` or ``error``.

        Consecutive text pieces that arrived while the consumer was busy come as one event.
        """
        events: queue.SimpleQueue[ChatEvent] = queue.SimpleQueue()
        worker = threading.Thread(
            target=self._work, args=(message, session_id, events), name="mimir-ui-turn", daemon=True
        )
        worker.start()
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

    def _work(self, message: str, session_id: str, events: queue.SimpleQueue[ChatEvent]) -> None:
        if not self._turn_lock.acquire(blocking=False):
            events.put(ChatEvent("status", WAITING_TEXT))
            self._turn_lock.acquire()
        try:
            result = self.app.tutor.run_turn(
                message,
                session_id,
                on_token=lambda text: events.put(ChatEvent("text", text)),
                on_status=lambda text: events.put(ChatEvent("status", text)),
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the page, which shows it
            if not isinstance(exc, Exception):
                log.warning("turn interrupted: %r", exc)
            else:
                from mimir.errors import MimirError

                if not isinstance(exc, MimirError):
                    log.exception("turn failed with an unexpected error")
            self._flush()
            self._turn_lock.release()
            events.put(ChatEvent("error", error=exc))
            return
        # Steps are written by the telemetry writer thread: the Memory tab sees this turn
        # as soon as the page does.
        self._flush()
        self._turn_lock.release()
        events.put(ChatEvent("done", result=result))

    def _flush(self) -> None:
        try:
            self.app.telemetry.flush()
        except Exception:  # a failing sink must not hide the answer
            log.exception("flushing telemetry failed")
