"""The runner, the one door to a model: leases, the load-start event, the out-of-memory
policy, token accounting and cancellation. Scripted models (real allocations, injected
faults) for the policies; the bundled model for slots, cancellation and prefix reuse."""

from __future__ import annotations

import threading

import pytest

from mimir.app import MimirApp
from mimir.config import bundled_model_spec, settings_from_dict
from mimir.errors import DeviceOutOfMemoryError, TurnCancelledError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.models.spec import ModelSource, ModelSpec
from mimir.runtime.manager import ModelManager
from mimir.runtime.runner import Runner

MiB = 1024 * 1024
HI = [ChatMessage("user", "hi")]


def scripted(mid: str, **options) -> ModelSpec:
    return ModelSpec(id=mid, backend="scripted", source=ModelSource("path", f"scripted:{mid}"),
                     options={"size_bytes": MiB, **options})


def runner_for(*specs: ModelSpec, budget_mib: int = 100) -> tuple[Runner, ModelManager, list]:
    manager = ModelManager({s.id: s for s in specs}, budget_ram_bytes=budget_mib * MiB)
    events: list = []
    manager.subscribe(lambda e: events.append((e.kind, e.model_id)))
    return Runner(manager), manager, events


def test_out_of_memory_before_any_token_evicts_idle_models_and_retries_once():
    runner, manager, events = runner_for(scripted("talker", replies=["Recovered fine"], oom_generations=1),
                                         scripted("idle"))
    runner.generate("idle", HI)
    tokens: list[str] = []
    completion = runner.generate("talker", HI, on_token=tokens.append)
    assert completion.text == "Recovered fine" and tokens == ["Recovered", " fine"]
    assert ("evict", "idle") in events
    assert manager.status().get("talker").in_use == 0


def test_out_of_memory_after_a_token_was_delivered_is_not_retried():
    runner, manager, events = runner_for(scripted("talker", replies=["one two three"], oom_midstream=1),
                                         scripted("idle"))
    runner.generate("idle", HI)
    tokens: list[str] = []
    with pytest.raises(DeviceOutOfMemoryError):
        runner.generate("talker", HI, on_token=tokens.append)
    assert tokens == ["one"]  # no repeated text: the caller saw each token once
    assert ("evict", "idle") not in events
    assert manager.status().get("talker").in_use == 0  # the lease went back


def test_a_second_out_of_memory_fails():
    runner, manager, _ = runner_for(scripted("talker", oom_generations=2))
    with pytest.raises(DeviceOutOfMemoryError):
        runner.generate("talker", HI)
    assert manager.status().get("talker").in_use == 0


def test_load_starting_event_comes_from_the_call_that_loads():
    runner, _, _ = runner_for(scripted("a", size_bytes=3 * MiB))
    seen = []
    runner.generate("a", HI, on_load=seen.append)
    runner.generate("a", HI, on_load=seen.append)  # resident: no load, no event
    assert [(e.model_id, e.estimate_bytes, e.device) for e in seen] == [("a", 3 * MiB, "ram")]


def test_a_cancelled_request_never_takes_a_lease():
    runner, manager, events = runner_for(scripted("a"))
    with pytest.raises(TurnCancelledError):
        runner.generate("a", HI, cancel=lambda: True)
    assert events == [] and manager.status().resident == ()


def test_tokens_go_into_the_telemetry_step():
    settings = settings_from_dict({"models": {"m": {"backend": "scripted", "path": "s", "options": {
        "replies": ["three little words"]}}}})
    with MimirApp(settings) as app:
        with app.telemetry.step("api_completion", agent="api") as step:
            app.runner.generate("m", [ChatMessage("user", "count me in")], step=step)
            app.runner.generate("m", [ChatMessage("user", "and me")], step=step)
        record = step.record
    assert record.model == "m"
    assert record.tokens_out == 6
    assert record.tokens_in == (3 + 6) + (2 + 6)  # scripted counts words; +6 per message
    assert record.tokens_evaluated is None  # the scripted backend has no prompt cache to report


# -- the bundled model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled():
    manager = ModelManager({"default": bundled_model_spec()}, budget_ram_bytes=2 * 1024 * MiB)
    yield Runner(manager), manager
    manager.close()


@pytest.mark.slow
def test_cancel_mid_stream_stops_within_one_token_and_releases_the_lease(bundled):
    runner, manager = bundled
    stop = threading.Event()
    tokens: list[str] = []

    def on_token(piece: str) -> None:
        tokens.append(piece)
        if len(tokens) == 3:
            stop.set()  # e.g. the client went away

    with pytest.raises(TurnCancelledError, match="after 3 token"):
        runner.generate("default", [ChatMessage("user", "Write a long story about a lighthouse.")],
                        GenerationParams(max_tokens=200, temperature=0), on_token=on_token, cancel=stop)
    assert len(tokens) == 3
    assert manager.status().get("default").in_use == 0
    with manager.use("default") as model:
        assert not model._active  # the engine's slot is free too
    after = runner.generate("default", HI, GenerationParams(max_tokens=4, temperature=0))
    assert after.tokens_out >= 1


@pytest.mark.slow
def test_slots_serve_concurrent_generations_through_the_manager(bundled):
    """Four callers reach their first token while all four hold a lease on the one model:
    nothing serialises them (a barrier that needs all four would time out otherwise)."""
    runner, manager = bundled
    parallel = manager.parallel("default")
    assert parallel == 4
    barrier = threading.Barrier(parallel, timeout=120)
    leases_seen: list[int] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        first = [True]

        def on_token(piece: str) -> None:
            if first[0]:
                first[0] = False
                leases_seen.append(manager.status().get("default").in_use)
                barrier.wait()

        try:
            runner.generate("default", [ChatMessage("user", f"Say a word about the number {i}.")],
                            GenerationParams(max_tokens=8, temperature=0), on_token=on_token)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert max(leases_seen) == parallel
    assert manager.status().get("default").in_use == 0


@pytest.mark.slow
def test_second_turn_evaluates_a_fraction_of_its_prompt():
    settings = settings_from_dict({"tutor": {"response_max_tokens": 24, "thinking_max_tokens": 8}})
    with MimirApp(settings) as app:
        first = app.tutor.run_turn("What does sin, cos and tan do?")
        second = app.tutor.run_turn("And what is a tangent line?", first.session_id)
    response = next(s for s in second.telemetry.steps if s.name == "response")
    assert response.tokens_evaluated is not None and response.tokens_in > 100
    assert response.tokens_evaluated < response.tokens_in
