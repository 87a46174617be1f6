"""Admission control: a bounded queue of turns, served round-robin across users.

``capacity`` turns run at once (the engine's parallel slots; 1 for the in-process llama.cpp
model), the rest wait in a queue of at most ``max_queue`` turns. Waiting turns are served
round-robin by user (an API key's user, a signed-in user, a session or a browser): a user
with five turns waiting does not delay another user's one turn by five turns. One user may
have at most ``per_user`` turns running or waiting.

Refusals are :class:`~mimir.errors.ServerBusyError` with a ``retry_after_s`` estimate from
recent turn times: 429 when the user is at their limit, 503 when the queue is full or the
server is shutting down. Both come before any work starts.

Use::

    ticket = admission.enter(user)          # raises ServerBusyError
    try:
        ticket.wait(on_position=print)      # blocks until a slot is free; position 1 = next
        run_turn(..., control=ticket.control)
    finally:
        ticket.release()

:class:`TurnControl` is how a running turn is stopped: ``cancel(reason)`` from any thread
(the client went away, the server shuts down) and the ``deadline`` (``turn_timeout``); the
pipeline calls ``check()`` before each step and on every generated token.

Locking: one ``Condition`` protects every field of :class:`Admission` and the ``state`` of
its tickets; waiting threads wait on it, never sleep-poll. ``depth``, ``running`` and
``snapshot()`` read under it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mimir.errors import ServerBusyError, TurnCancelledError, TurnTimeoutError

#: What a turn is assumed to take before any has finished (for Retry-After).
DEFAULT_TURN_S = 10.0
#: Weight of the newest turn in the running average of turn times.
_EMA_WEIGHT = 0.2


class TurnControl:
    """Stops one turn: cancelled from another thread, or past its deadline."""

    def __init__(self, timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self._clock = clock
        self._deadline: float | None = None
        self._reason: str | None = None
        self._callbacks: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the deadline (when the turn gets its slot: queue wait is not turn time)."""
        if self.timeout_s is not None:
            self._deadline = self._clock() + self.timeout_s

    def cancel(self, reason: str = "the client disconnected") -> None:
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(reason)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the turn is cancelled (at once if it already is)."""
        with self._lock:
            reason = self._reason
            if reason is None:
                self._callbacks.append(callback)
                return
        callback(reason)

    @property
    def cancelled(self) -> str | None:
        """Why the turn was cancelled, or ``None``."""
        return self._reason

    def remaining_s(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock()

    def check(self) -> None:
        """Raise :class:`TurnCancelledError` or :class:`TurnTimeoutError` when the turn must stop."""
        if self._reason is not None:
            raise TurnCancelledError(self._reason)
        if self._deadline is not None and self._clock() > self._deadline:
            raise TurnTimeoutError("the turn", self.timeout_s or 0.0)


@dataclass(frozen=True)
class AdmissionSnapshot:
    capacity: int
    running: int
    waiting: int
    max_waiting_seen: int
    users_waiting: int
    admitted_total: int
    refused_busy_user: int
    refused_queue_full: int


class Ticket:
    """One turn's place: ``waiting`` -> ``running`` -> ``done``, or ``cancelled`` while waiting."""

    _ids = itertools.count(1)

    def __init__(self, admission: Admission, user: str, control: TurnControl):
        self.id = next(self._ids)
        self.user = user
        self.control = control
        self.state = "waiting"
        self._admission = admission
        self._started: float | None = None
        #: The user's slot shared with other instances (``Admission(shared=...)``), if any.
        self._shared_lease = None

    def wait(self, on_position: Callable[[int], None] | None = None) -> None:
        """Block until the turn may run. ``on_position(n)`` hears the place in line whenever it
        changes (1: next). Raises :class:`TurnCancelledError` if cancelled while waiting."""
        self._admission._wait(self, on_position)

    def position(self) -> int:
        """Place in line (1 = next), or 0 once running."""
        return self._admission._position(self)

    def cancel(self, reason: str = "the client disconnected") -> None:
        """Leave the queue, or stop the running turn (through its control)."""
        self._admission._cancel(self, reason)

    def release(self) -> None:
        """The turn is over: free its slot for the next one. Idempotent."""
        self._admission._release(self)
        if self._shared_lease is not None:
            self._shared_lease.release()  # idempotent too

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Admission:
    def __init__(self, capacity: int = 1, *, max_queue: int = 32, per_user: int = 1,
                 turn_timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 shared: Callable[[str, int], Any] | None = None):
        if capacity < 1 or per_user < 1 or max_queue < 0:
            raise ValueError("capacity and per_user must be >= 1, max_queue >= 0")
        self.capacity = capacity
        self.max_queue = max_queue
        self.per_user = per_user
        self.turn_timeout_s = turn_timeout_s
        self._clock = clock
        #: ``shared(key, limit)`` takes one of ``limit`` slots named ``key`` for every instance on
        #: one database (``Database.try_slot``) or returns None; the per-user limit then holds
        #: across instances, not only in this process.
        self._shared = shared
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Ticket]] = {}
        self._ring: deque[str] = deque()  # users with waiting turns, in serving order
        self._running: set[Ticket] = set()
        self._per_user: dict[str, int] = {}
        self._closed = False
        self._turn_s = DEFAULT_TURN_S
        self._waiting = 0
        self._max_waiting = 0
        self._admitted = 0
        self._refused_user = 0
        self._refused_full = 0

    # -- reading ---------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Turns waiting for a slot (the ``mimir_queue_depth`` gauge)."""
        return self._waiting

    @property
    def running(self) -> int:
        return len(self._running)

    def snapshot(self) -> AdmissionSnapshot:
        with self._cond:
            return AdmissionSnapshot(self.capacity, len(self._running), self._waiting, self._max_waiting,
                                     len(self._ring), self._admitted, self._refused_user, self._refused_full)

    # -- entering --------------------------------------------------------------------------
    def enter(self, user: str) -> Ticket:
        """A ticket for one turn of ``user``, running at once or waiting; or ServerBusyError."""
        # The slot shared with other instances first, outside the lock (it asks the database).
        lease = self._shared(f"turns:{user}", self.per_user) if self._shared is not None else None
        if self._shared is not None and lease is None:
            with self._cond:
                self._refused_user += 1
            raise ServerBusyError(
                f"you already have {self.per_user} turn(s) running or waiting (the limit is {self.per_user}, "
                "counted across every server); wait for the answer, then send the next message",
                retry_after_s=self._turn_s, http_status=429)
        try:
            ticket = self._enter_locked(user)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        ticket._shared_lease = lease
        return ticket

    def _enter_locked(self, user: str) -> Ticket:
        with self._cond:
            if self._closed:
                raise ServerBusyError("the server is shutting down; try again shortly",
                                      retry_after_s=self._turn_s, http_status=503)
            held = self._per_user.get(user, 0)
            if held >= self.per_user:
                self._refused_user += 1
                raise ServerBusyError(
                    f"you already have {held} turn(s) running or waiting (the limit is {self.per_user}); "
                    "wait for the answer, then send the next message", retry_after_s=self._turn_s, http_status=429)
            if len(self._running) >= self.capacity and self._waiting >= self.max_queue:
                self._refused_full += 1
                raise ServerBusyError(
                    f"the server is busy: {self._waiting} turns are waiting (the limit is {self.max_queue}); "
                    "try again shortly", retry_after_s=self._turn_s * (self._waiting / self.capacity + 1),
                    http_status=503)
            ticket = Ticket(self, user, TurnControl(self.turn_timeout_s, self._clock))
            self._per_user[user] = held + 1
            if user not in self._queues:
                self._queues[user] = deque()
                self._ring.append(user)
            self._queues[user].append(ticket)
            self._waiting += 1
            self._admit_locked()
            self._max_waiting = max(self._max_waiting, self._waiting)
            return ticket

    def _admit_locked(self) -> None:
        admitted = False
        while len(self._running) < self.capacity and self._ring:
            user = self._ring.popleft()
            queue = self._queues[user]
            ticket = queue.popleft()
            if queue:
                self._ring.append(user)  # round-robin: the user's next turn goes to the back
            else:
                del self._queues[user]
            self._waiting -= 1
            ticket.state = "running"
            ticket._started = self._clock()
            ticket.control.start()
            self._running.add(ticket)
            self._admitted += 1
            admitted = True
        if admitted:
            self._cond.notify_all()

    # -- waiting, leaving ------------------------------------------------------------------
    def _order_locked(self) -> list[Ticket]:
        """Waiting tickets in the order they will be served."""
        queues = {user: list(q) for user, q in self._queues.items()}
        ring = deque(self._ring)
        order = []
        while ring:
            user = ring.popleft()
            order.append(queues[user].pop(0))
            if queues[user]:
                ring.append(user)
        return order

    def _position(self, ticket: Ticket) -> int:
        with self._cond:
            if ticket.state != "waiting":
                return 0
            return self._order_locked().index(ticket) + 1

    def _wait(self, ticket: Ticket, on_position: Callable[[int], None] | None) -> None:
        with self._cond:
            last = None
            while ticket.state == "waiting":
                if on_position is not None:
                    place = self._order_locked().index(ticket) + 1
                    if place != last:
                        last = place
                        on_position(place)
                self._cond.wait()
            if ticket.state == "cancelled":
                raise TurnCancelledError(ticket.control.cancelled or "cancelled while waiting")

    def _cancel(self, ticket: Ticket, reason: str) -> None:
        with self._cond:
            if ticket.state == "waiting":
                self._queues[ticket.user].remove(ticket)
                if not self._queues[ticket.user]:
                    del self._queues[ticket.user]
                    self._ring.remove(ticket.user)
                self._waiting -= 1
                self._drop_user_locked(ticket.user)
                ticket.state = "cancelled"
                self._cond.notify_all()
        ticket.control.cancel(reason)

    def _release(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket.state == "waiting":
                pass  # never admitted: leave the queue as a cancellation does
            elif ticket.state != "running":
                return
            else:
                self._running.discard(ticket)
                ticket.state = "done"
                self._drop_user_locked(ticket.user)
                if ticket._started is not None:
                    took = max(0.0, self._clock() - ticket._started)
                    self._turn_s = (1 - _EMA_WEIGHT) * self._turn_s + _EMA_WEIGHT * took
                self._admit_locked()
                self._cond.notify_all()
                return
        self._cancel(ticket, "left the queue")

    def _drop_user_locked(self, user: str) -> None:
        left = self._per_user.get(user, 0) - 1
        if left > 0:
            self._per_user[user] = left
        else:
            self._per_user.pop(user, None)

    # -- shutting down ---------------------------------------------------------------------
    def close(self) -> None:
        """Refuse new turns (503) and cancel the waiting ones; running turns go on."""
        with self._cond:
            self._closed = True
            waiting = [t for q in self._queues.values() for t in q]
        for ticket in waiting:
            ticket.cancel("the server is shutting down")

    def drain(self, timeout_s: float) -> bool:
        """Close, then wait up to ``timeout_s`` for running turns to finish; cancel those left.
        Returns whether every turn finished on its own."""
        self.close()
        with self._cond:
            finished = self._cond.wait_for(lambda: not self._running, timeout=timeout_s)
            left = list(self._running)
        for ticket in left:
            ticket.control.cancel("the server is shutting down")
        return finished

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no turn runs (after :meth:`drain` cancelled them)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout=timeout_s)
