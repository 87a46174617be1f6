"""The math worker process: real adversarial inputs hit its time limit and memory cap, the
child is replaced, and the caller gets "could not check" instead of a hang."""

from __future__ import annotations

import os

import pytest

from mimir.mathcheck.worker import CouldNotCheck, MathWorker


@pytest.fixture
def worker():
    w = MathWorker(timeout_s=1.5, memory_bytes=256 * 1024 * 1024)
    yield w
    w.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("expression", ["9**9**9**9", "100000000!", "(10^10^10)!"])
def test_huge_expressions_time_out_and_the_worker_recovers(worker, expression):
    assert worker.call("evaluate", {"text": "2 + 3"}) == {"value": "5"}
    first_pid = worker.pid
    rss_before = _rss_bytes()
    with pytest.raises(CouldNotCheck, match="longer than"):
        worker.call("evaluate", {"text": expression})
    assert worker.restarts == 1
    assert _rss_bytes() - rss_before < 50 * 1024 * 1024  # the server process did not bloat
    assert worker.call("evaluate", {"text": "2 + 3"}) == {"value": "5"}  # a fresh child answers
    assert worker.pid != first_pid


def test_the_child_runs_under_an_address_space_cap(worker):
    worker.call("ping", {})
    with open(f"/proc/{worker.pid}/limits") as fh:
        line = next(l for l in fh if l.startswith("Max address space"))
    soft = line.split()[3]
    assert soft != "unlimited" and int(soft) > 256 * 1024 * 1024


def test_running_out_of_memory_is_could_not_check():
    tight = MathWorker(timeout_s=20, memory_bytes=8 * 1024 * 1024)
    try:
        tight.call("ping", {})
        with pytest.raises(CouldNotCheck):
            # 2^(2^27) needs a 16 MiB integer: over the 8 MiB cap long before the time limit.
            tight.call("evaluate", {"text": "2^(2^27) + 1"})
        assert tight.call("ping", {}) == {"ok": True}
    finally:
        tight.close()


def test_a_five_megabyte_answer_is_refused_quickly(worker):
    reply = "x = " + "1+" * (2_500_000) + "1"
    out = worker.call("verdict", {"question": "Solve 2x + 3 = 11.", "reply": reply})
    assert out["verdict"] == "unknown"


def test_unparseable_and_injected_answers_are_unknown(worker):
    for reply in ("\\input{/etc/passwd}", "__import__('os').system('true')", "x = \\immediate\\write18{ls}", "%%%"):
        assert worker.call("verdict", {"question": "Solve 2x + 3 = 11.", "reply": reply})["verdict"] == "unknown"
