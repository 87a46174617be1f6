"""The recorder with real memory: steps that allocate and free, real threads, a real manager."""

from __future__ import annotations

import contextvars
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mimir.errors import MimirError
from mimir.models.spec import ModelSource, ModelSpec
from mimir.runtime.manager import ModelManager
from mimir.telemetry import Probe, ProcessProbe, Telemetry
from mimir.core.memory import max_rss_bytes

MiB = 1024 * 1024


def touched(n: int) -> bytearray:
    """``n`` bytes with every page written, so they count in RSS."""
    return bytearray(b"\x01") * n


def wait_for(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def scripted(model_id: str, size: int, **options) -> ModelSpec:
    return ModelSpec(model_id, "scripted", ModelSource("path", f"scripted:{model_id}"), options={"size_bytes": size, **options})


@pytest.fixture
def telemetry():
    tel = Telemetry(sample_interval_s=0.002)
    yield tel
    tel.close()


def test_step_records_rss_delta_of_memory_kept(telemetry):
    with telemetry.step("alloc", agent="agent_1", model="m") as step:
        kept = touched(64 * MiB)
    rec = step.record
    assert rec.name == "alloc" and rec.agent == "agent_1" and rec.model == "m"
    assert rec.turn_id is None and rec.session_id is None
    assert rec.rss_delta_bytes >= 60 * MiB
    assert rec.rss_peak_bytes >= rec.rss_after_bytes >= rec.rss_before_bytes
    assert rec.system_available_bytes > 0
    assert rec.wall_s > 0
    del kept
    with telemetry.step("free") as step:
        pass
    assert step.record.rss_after_bytes < rec.rss_after_bytes - 32 * MiB


def test_freed_peak_inside_step_is_caught_by_the_sampler(telemetry):
    # Raise the kernel's high-water mark first, so only the sampler can see the step's peak.
    touched(256 * MiB)
    hwm_before = max_rss_bytes()
    with telemetry.step("spike") as step:
        before = step.rss_peak_bytes
        block = touched(64 * MiB)
        assert wait_for(lambda: step.rss_peak_bytes >= before + 60 * MiB), "the sampler never saw the block"
        del block
    rec = step.record
    assert max_rss_bytes() == hwm_before  # no new all-time high: the peak came from sampling
    assert rec.rss_peak_bytes - rec.rss_before_bytes >= 60 * MiB
    assert rec.rss_after_bytes - rec.rss_before_bytes < 32 * MiB


def test_freed_peak_that_sets_a_new_high_shows_without_a_sampler():
    tel = Telemetry(sample_interval_s=None)
    assert tel.sampler is None
    try:
        rss_now = tel.probes[0].read("before")["rss_bytes"]
        size = max_rss_bytes() - rss_now + 96 * MiB  # more than the process ever held
        with tel.step("spike") as step:
            block = touched(size)
            del block
        rec = step.record
        assert rec.rss_after_bytes - rec.rss_before_bytes < 32 * MiB
        assert rec.rss_peak_bytes >= rec.rss_before_bytes + size - 16 * MiB
    finally:
        tel.close()


def test_one_shared_sampler_thread_that_sleeps_when_no_step_is_open(telemetry):
    def sampler_threads():
        return [t for t in threading.enumerate() if t.name == "mimir-rss-sampler"]

    for i in range(5):
        with telemetry.step(f"s{i}"):
            with telemetry.step("nested"):
                time.sleep(0.01)
    assert len(sampler_threads()) == 1
    taken = telemetry.sampler.samples_taken
    assert taken > 0
    time.sleep(0.1)  # ~50 intervals with nothing open
    assert telemetry.sampler.samples_taken == taken
    with telemetry.step("again"):
        assert wait_for(lambda: telemetry.sampler.samples_taken > taken)
    telemetry.close()
    assert wait_for(lambda: not sampler_threads())


def test_turn_orders_steps_and_summarises(telemetry):
    with telemetry.turn(session_id="s1", turn_id="t1") as turn:
        with telemetry.step("tool_decision", agent="tool") as a:
            a.add_tokens(tokens_in=10, tokens_out=1)
        with telemetry.step("routing", agent="agent_2", model="default") as b:
            b.add_tokens(tokens_in=12, tokens_out=3)
            b.add_tokens(tokens_out=2)
            block = touched(48 * MiB)
        assert [s.name for s in turn.steps] == ["tool_decision", "routing"]
    rec = turn.record
    assert (rec.session_id, rec.turn_id) == ("s1", "t1")
    assert [s.seq for s in rec.steps] == [0, 1]
    assert all(s.turn_id == "t1" and s.session_id == "s1" for s in rec.steps)
    assert rec.steps[1].tokens_in == 12 and rec.steps[1].tokens_out == 5
    assert rec.tokens_in == 22 and rec.tokens_out == 6
    assert rec.peak_rss_bytes >= rec.steps[1].rss_after_bytes
    assert rec.peak_rss_bytes == max(rec.peak_rss_bytes, *(s.rss_peak_bytes for s in rec.steps))
    assert rec.wall_s >= sum(s.wall_s for s in rec.steps)
    del block


def test_turns_do_not_nest(telemetry):
    with telemetry.turn(turn_id="outer"):
        with pytest.raises(MimirError, match="do not nest"):
            with telemetry.turn(turn_id="inner"):
                pass


def test_a_step_that_raises_is_recorded_with_the_error(telemetry):
    with telemetry.turn(turn_id="t") as turn:
        with pytest.raises(ValueError):
            with telemetry.step("broken"):
                raise ValueError("boom")
        with telemetry.step("after"):
            pass
    assert turn.record.steps[0].error == "ValueError: boom"
    assert turn.record.steps[1].error is None
    assert telemetry.current_step is None


def test_manager_events_land_in_the_step_that_caused_them(telemetry):
    specs = {"a": scripted("a", 40 * MiB), "b": scripted("b", 40 * MiB)}
    with ModelManager(specs, budget_ram_bytes=60 * MiB) as manager:
        telemetry.attach(manager)
        with telemetry.turn(turn_id="t") as turn:
            with telemetry.step("first", model="a"):
                with manager.use("a"):
                    pass
            with telemetry.step("second", model="b"):
                with manager.use("b"):  # evicts a: the budget holds one
                    pass
            with telemetry.step("third", model="b"):
                with manager.use("b"):
                    pass
        first, second, third = turn.record.steps
        assert [(e.kind, e.model_id) for e in first.events] == [("load", "a")]
        assert [(e.kind, e.model_id) for e in second.events] == [("evict", "a"), ("load", "b")]
        assert second.events[0].reason == "make room for 'b'"
        assert third.events == ()
        assert (first.loads, second.loads, second.evictions) == (1, 1, 1)
        # The model's memory shows in its step: the scripted model really allocates 40 MiB.
        assert first.rss_delta_bytes >= 36 * MiB
        # Attribution agrees with the manager's snapshot.
        load_b = second.events[1]
        resident = manager.status().get("b")
        assert load_b.measured_bytes == resident.measured_bytes
        assert load_b.estimate_bytes == resident.estimate_bytes == 40 * MiB


def test_events_outside_steps_go_to_sinks_not_to_a_step(telemetry):
    from mimir.telemetry import Sink

    class Collect(Sink):
        def __init__(self):
            self.events = []

        def on_event(self, event):
            self.events.append(event)

    sink = Collect()
    telemetry.sinks.append(sink)
    with ModelManager({"a": scripted("a", MiB)}, budget_ram_bytes=64 * MiB) as manager:
        telemetry.attach(manager)
        with manager.use("a"):
            pass
        manager.unload("a", reason="test")
    assert [(e.kind, e.model_id, e.reason) for e in sink.events] == [("load", "a", "first use"), ("unload", "a", "test")]


def test_concurrent_turns_in_threads_never_mix_steps_or_events(telemetry):
    n_threads, n_steps = 6, 8
    specs = {f"m{i}": scripted(f"m{i}", MiB, load_s=0.01) for i in range(n_threads)}
    records = {}
    errors = []
    barrier = threading.Barrier(n_threads)
    with ModelManager(specs, budget_ram_bytes=512 * MiB) as manager:
        telemetry.attach(manager)

        def worker(i: int) -> None:
            try:
                barrier.wait()
                with telemetry.turn(session_id=f"s{i}", turn_id=f"t{i}") as turn:
                    for k in range(n_steps):
                        with telemetry.step(f"step{k}", agent=f"agent{i}", model=f"m{i}") as step:
                            with manager.use(f"m{i}"):
                                step.add_tokens(tokens_in=i, tokens_out=k)
                records[i] = turn.record
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for i, rec in records.items():
        assert rec.turn_id == f"t{i}" and rec.session_id == f"s{i}"
        assert [s.name for s in rec.steps] == [f"step{k}" for k in range(n_steps)]
        assert {s.agent for s in rec.steps} == {f"agent{i}"}
        assert [s.tokens_in for s in rec.steps] == [i] * n_steps
        events = [(e.kind, e.model_id) for s in rec.steps for e in s.events]
        assert events == [("load", f"m{i}")]
        assert rec.steps[0].loads == 1


def test_copied_context_carries_the_turn_into_a_worker_thread(telemetry):
    with telemetry.turn(turn_id="t") as turn:
        ctx = contextvars.copy_context()

        def work():
            with telemetry.step("in_pool"):
                pass

        t = threading.Thread(target=ctx.run, args=(work,))
        t.start()
        t.join()
        with telemetry.step("own_thread"):
            pass
        # A plain thread starts with an empty context: its step has no turn.
        plain = []

        def plain_work():
            with telemetry.step("plain") as step:
                pass
            plain.append(step.record)

        t2 = threading.Thread(target=plain_work)
        t2.start()
        t2.join()
    assert [s.name for s in turn.record.steps] == ["in_pool", "own_thread"]
    assert all(s.turn_id == "t" for s in turn.record.steps)
    assert plain[0].turn_id is None


class _FailingProbe(Probe):
    """A probe whose library breaks after its first reading."""

    name = "flaky"

    def __init__(self):
        super().__init__()
        self.reads = 0

    def _read(self, phase):
        self.reads += 1
        if self.reads > 1:
            raise RuntimeError("NVML: GPU is lost")
        return {"gpu_used_bytes": 123, "gpu_total_bytes": 456}


def test_a_probe_failing_mid_run_degrades_to_null_with_one_warning(caplog):
    probe = _FailingProbe()
    tel = Telemetry(probes=[ProcessProbe(), probe], sample_interval_s=None)
    try:
        with caplog.at_level(logging.WARNING, logger="mimir.telemetry"):
            recs = []
            for i in range(4):
                with tel.step(f"s{i}") as step:
                    pass
                recs.append(step.record)
    finally:
        tel.close()
    assert recs[0].gpu_used_before_bytes == 123 and recs[0].gpu_used_after_bytes is None
    assert all(r.gpu_used_before_bytes is None and r.gpu_total_bytes is None for r in recs[1:])
    assert all(r.rss_after_bytes is not None for r in recs)  # the other probes keep working
    warnings = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert len(warnings) == 1 and "GPU is lost" in warnings[0].getMessage()
    assert probe.failed == "RuntimeError: NVML: GPU is lost"
    assert probe.reads == 2


def test_without_gpu_libraries_gpu_fields_are_null():
    # A process where neither torch nor pynvml can be imported (a ``sys.modules`` guard makes
    # the import fail as if the package were absent), whatever this machine has installed.
    script = textwrap.dedent(
        """
        import json, sys
        sys.modules["torch"] = None
        sys.modules["pynvml"] = None
        from mimir.telemetry import Telemetry
        tel = Telemetry(sample_interval_s=None)
        with tel.step("cpu") as step:
            block = bytearray(b"\\x01") * (4 * 1024 * 1024)
        tel.close()
        r = step.record
        print(json.dumps({k: getattr(r, k) for k in (
            "cuda_peak_allocated_bytes", "cuda_allocated_after_bytes", "gpu_used_before_bytes",
            "gpu_used_after_bytes", "gpu_total_bytes", "gpu_devices", "gpu_str", "rss_after_bytes")}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    gpu_fields = ("cuda_peak_allocated_bytes", "cuda_allocated_after_bytes", "gpu_used_before_bytes",
                  "gpu_used_after_bytes", "gpu_total_bytes")
    assert {k: rec[k] for k in gpu_fields} == dict.fromkeys(gpu_fields)
    assert rec["gpu_devices"] == [] and rec["gpu_str"] == "-"
    assert rec["rss_after_bytes"] > 4 * MiB  # the process probe still measured the step


def test_step_needs_a_name(telemetry):
    with pytest.raises(MimirError):
        telemetry.step("")
