"""Admission control: the bounded turn queue, round-robin across users (real threads)."""

from __future__ import annotations

import threading

import pytest

from mimir.errors import ServerBusyError, TurnCancelledError, TurnTimeoutError
from mimir.runtime.admission import Admission, TurnControl


def _serve_in_threads(tickets, order):
    """One thread per ticket: wait for a slot, note whose turn ran, release."""
    def work(ticket):
        ticket.wait()
        order.append(ticket.user)
        ticket.release()

    threads = [threading.Thread(target=work, args=(t,)) for t in tickets]
    for thread in threads:
        thread.start()
    return threads


def test_two_users_with_five_queued_turns_each_are_served_interleaved():
    admission = Admission(capacity=1, max_queue=20, per_user=5)
    blocker = admission.enter("someone")  # holds the one slot while the others queue
    tickets = [admission.enter("alice") for _ in range(5)] + [admission.enter("bob") for _ in range(5)]
    assert admission.depth == 10
    assert [t.position() for t in tickets] == [1, 3, 5, 7, 9, 2, 4, 6, 8, 10]
    order: list[str] = []
    threads = _serve_in_threads(tickets, order)
    blocker.release()
    for thread in threads:
        thread.join(10)
    assert order == ["alice", "bob"] * 5
    assert admission.depth == 0 and admission.running == 0


def test_a_second_turn_of_one_user_gets_429_and_a_full_queue_503():
    admission = Admission(capacity=1, max_queue=2, per_user=1)
    running = admission.enter("u1")
    with pytest.raises(ServerBusyError) as busy:
        admission.enter("u1")
    assert busy.value.http_status == 429 and busy.value.retry_after_s > 0
    admission.enter("u2")
    admission.enter("u3")
    with pytest.raises(ServerBusyError) as full:
        admission.enter("u4")
    assert full.value.http_status == 503 and full.value.retry_after_s > 0
    snapshot = admission.snapshot()
    assert (snapshot.running, snapshot.waiting, snapshot.refused_busy_user, snapshot.refused_queue_full) == (1, 2, 1, 1)
    running.release()
    assert admission.snapshot().running == 1 and admission.depth == 1


def test_capacity_admits_that_many_turns_at_once():
    admission = Admission(capacity=3, max_queue=5, per_user=2)
    tickets = [admission.enter(f"u{i}") for i in range(5)]
    assert [t.state for t in tickets] == ["running"] * 3 + ["waiting"] * 2
    tickets[0].release()
    assert tickets[3].state == "running"


def test_positions_are_reported_as_they_change_and_a_waiting_turn_can_leave():
    admission = Admission(capacity=1, max_queue=5, per_user=1)
    first = admission.enter("a")
    second, third = admission.enter("b"), admission.enter("c")
    heard: list[int] = []
    changed = threading.Condition()

    def hear(place: int) -> None:
        with changed:
            heard.append(place)
            changed.notify_all()

    waiter = threading.Thread(target=third.wait, kwargs={"on_position": hear})
    waiter.start()
    with changed:
        assert changed.wait_for(lambda: heard == [2], timeout=10)
    second.cancel("the client disconnected")  # the turn ahead leaves the line
    with pytest.raises(TurnCancelledError):
        second.wait()
    with changed:
        assert changed.wait_for(lambda: heard == [2, 1], timeout=10)
    first.release()
    waiter.join(10)
    assert third.state == "running" and admission.depth == 0


def test_drain_refuses_new_turns_and_stops_running_ones_after_the_deadline():
    admission = Admission(capacity=1, max_queue=5, per_user=1)
    running = admission.enter("a")
    waiting = admission.enter("b")
    assert admission.drain(0.05) is False  # the running turn did not finish by itself
    assert running.control.cancelled == "the server is shutting down"
    assert waiting.state == "cancelled"
    with pytest.raises(ServerBusyError) as closed:
        admission.enter("c")
    assert closed.value.http_status == 503
    running.release()
    assert admission.wait_idle(1)


def test_turn_control_stops_on_cancel_and_on_its_deadline():
    now = [100.0]
    control = TurnControl(timeout_s=5, clock=lambda: now[0])
    control.start()
    control.check()
    now[0] += 6
    with pytest.raises(TurnTimeoutError):
        control.check()
    cancelled = TurnControl()
    heard = []
    cancelled.on_cancel(heard.append)
    cancelled.cancel("the client disconnected")
    with pytest.raises(TurnCancelledError):
        cancelled.check()
    assert heard == ["the client disconnected"]
