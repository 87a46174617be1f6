"""The bundled SmolLM2-135M model on the llama.cpp server engine (xllamacpp), through the
real backend and manager."""

from __future__ import annotations

import gc
import threading
from dataclasses import replace

import psutil
import pytest

from mimir.config import bundled_model_spec
from mimir.errors import ContextOverflowError, ModelLoadError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.models.context import TRUNCATION_NOTICE
from mimir.models.llama_server import LlamaServerBackend
from mimir.models.spec import ModelSource
from mimir.runtime.manager import ModelManager

GiB = 1024**3
MiB = 1024**2


@pytest.fixture(scope="module")
def model():
    spec = bundled_model_spec()
    loaded = LlamaServerBackend().load(spec)
    yield loaded
    loaded.close()


def test_estimate_reads_metadata_without_loading(bundled_gguf):
    est = LlamaServerBackend().estimate(bundled_model_spec())
    assert est.weights_bytes == bundled_gguf.stat().st_size
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims, f16 K and V, 2048 tokens, 4 slots.
    assert est.kv_cache_bytes == 30 * 2048 * 4 * 3 * (64 + 64) * 2
    assert est.device == "ram"
    one_slot = LlamaServerBackend().estimate(replace(bundled_model_spec(), options={"parallel": 1}))
    assert one_slot.kv_cache_bytes == est.kv_cache_bytes // 4
    smaller = LlamaServerBackend().estimate(replace(bundled_model_spec(), context_length=512))
    assert smaller.kv_cache_bytes == est.kv_cache_bytes // 4


def test_streams_tokens_and_counts_them(model):
    stream = model.stream([ChatMessage("user", "Name a colour.")], GenerationParams(max_tokens=12, temperature=0))
    pieces = list(stream)
    completion = stream.completion
    assert len(pieces) >= 2
    assert completion.text == "".join(pieces) and completion.text.strip()
    assert completion.tokens_out == len(pieces) <= 12
    assert completion.tokens_in > 3


def test_greedy_generation_is_repeatable():
    # Two fresh loads (no KV cache reuse between them) decode greedily to the same text.
    params = GenerationParams(max_tokens=16, temperature=0)
    msgs = [ChatMessage("user", "What is 2 + 2?")]
    texts = []
    for _ in range(2):
        fresh = LlamaServerBackend().load(bundled_model_spec())
        texts.append(fresh.chat(msgs, params).text)
        fresh.close()
    assert texts[0] == texts[1] and texts[0].strip()


def test_max_tokens_and_stop_strings(model):
    msgs = [ChatMessage("user", "Count from 1 to 20 separated by commas.")]
    long = model.chat(msgs, GenerationParams(max_tokens=40, temperature=0))
    assert long.tokens_out <= 40
    assert "5" in long.text
    stopped = model.chat(msgs, GenerationParams(max_tokens=40, temperature=0, stop=("5",)))
    assert "5" not in stopped.text
    assert len(stopped.text) < len(long.text)


def test_context_guard_trims_instead_of_crashing():
    spec = replace(bundled_model_spec(), context_length=256)
    small = LlamaServerBackend().load(spec)
    try:
        history = [ChatMessage("user" if i % 2 == 0 else "assistant", "word " * 60) for i in range(6)]
        out = small.chat(history + [ChatMessage("user", "Say hi.")], GenerationParams(max_tokens=16, temperature=0))
        assert out.dropped_messages > 0 and not out.truncated_input
        huge = small.chat([ChatMessage("user", "tell me " * 400)], GenerationParams(max_tokens=16, temperature=0))
        assert huge.truncated_input
        assert huge.tokens_in <= 256
    finally:
        small.close()


def test_truncation_notice_is_visible_to_the_model():
    spec = replace(bundled_model_spec(), context_length=256)
    small = LlamaServerBackend().load(spec)
    try:
        question = "alpha beta gamma " * 200 + "OMEGA-TAIL"
        stream = small.stream([ChatMessage("user", question)], GenerationParams(max_tokens=8, temperature=0))
        out = stream.completion
        assert out.truncated_input
        given = "".join(m.content for m in stream.messages)
        # The model was given the start of the message, then the notice; the cut tail never
        # reached it. The engine's own count of the prompt it evaluated fits the window.
        assert TRUNCATION_NOTICE.strip() in given
        assert given.index("alpha beta gamma") < given.index(TRUNCATION_NOTICE.strip())
        assert "OMEGA-TAIL" not in given
        assert out.tokens_in <= 256
    finally:
        small.close()


def test_score_choices_prefers_the_obvious_answer(model):
    msgs = [
        ChatMessage("system", "Answer with one letter."),
        ChatMessage("user", "Which is a fruit? A) apple B) hammer"),
    ]
    scored = model.score(msgs, ["A", "B"])
    scores = scored.scores
    assert set(scores) == {"A", "B"}
    assert all(s < 0 for s in scores.values())
    assert scores["A"] > scores["B"]
    assert scored.tokens_in > 10
    # Scoring again finds the prompt in a slot's cache: (almost) nothing is re-evaluated.
    again = model.score(msgs, ["A", "B"])
    assert again.scores == pytest.approx(scores, abs=0.05)
    assert again.tokens_evaluated < scored.tokens_in
    # A choice no top token begins scores below every listed token (the documented floor).
    floor = model.score_choices(msgs, ["A", "zzzz-never"])
    assert floor["zzzz-never"] < floor["A"]


def test_generation_still_works_after_scoring(model):
    model.score_choices([ChatMessage("user", "Pick one: yes or no?")], ["yes", "no"])
    out = model.chat([ChatMessage("user", "Say hello.")], GenerationParams(max_tokens=8, temperature=0))
    assert out.text.strip()


def test_missing_file_is_a_clear_error(tmp_path):
    spec = replace(bundled_model_spec(), source=ModelSource("path", str(tmp_path / "absent.gguf")))
    with pytest.raises(ModelLoadError) as info:
        LlamaServerBackend().estimate(spec)
    assert "absent.gguf" in str(info.value) and "file not found" in str(info.value)


def test_corrupt_file_is_a_clear_error_and_nothing_stays_loaded(tmp_path, bundled_gguf):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    spec = replace(bundled_model_spec("broken"), source=ModelSource("path", str(bad)))
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    m = ModelManager(
        {"broken": spec, "text": replace(spec, id="text", source=ModelSource("path", str(not_gguf)))},
        budget_ram_bytes=2 * GiB,
    )
    with pytest.raises(ModelLoadError) as info:
        with m.use("broken"):
            pass
    assert "broken.gguf" in str(info.value)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        with m.use("text"):
            pass
    assert m.status().resident == ()


def test_manager_measures_the_real_model():
    m = ModelManager({"default": bundled_model_spec()}, budget_ram_bytes=2 * GiB)
    with m.use("default") as model:
        assert model.chat([ChatMessage("user", "Hi")], GenerationParams(max_tokens=4)).tokens_out >= 1
        assert model.parallel == 4 and m.parallel("default") == 4
    r = m.status().get("default")
    # Weights are read into memory: the RSS delta is at least the file size.
    assert r.measured_bytes > 90 * 1024**2
    assert r.estimate_bytes > r.measured_bytes
    m.close()
    assert m.status().resident == ()


def test_two_real_models_under_a_budget_for_one_evict_each_other():
    a = replace(bundled_model_spec("a"), context_length=1024)
    b = replace(bundled_model_spec("b"), context_length=512)
    probe = ModelManager({"a": a, "b": b}, budget_ram_bytes=2 * GiB)
    budget = int(max(probe.estimate("a").total_bytes, probe.estimate("b").total_bytes) * 1.3)
    m = ModelManager({"a": a, "b": b}, budget_ram_bytes=budget)
    events = []
    m.subscribe(events.append)
    for model_id in ("a", "b", "a"):
        with m.use(model_id) as model:
            assert model.chat([ChatMessage("user", "Hi")], GenerationParams(max_tokens=2)).tokens_out >= 1
        assert [r.model_id for r in m.status().resident] == [model_id]
    assert [(e.kind, e.model_id) for e in events] == [
        ("load", "a"), ("evict", "a"), ("load", "b"), ("evict", "b"), ("load", "a")
    ]
    assert all(e.measured_bytes > 50 * 1024**2 for e in events if e.kind == "load")
    m.close()


def test_streams_report_the_prompt_tokens_actually_evaluated(model):
    system = ChatMessage("system", "You are a patient tutor who explains mathematics step by step. " * 8)
    first = model.chat([system, ChatMessage("user", "What is a prime number?")],
                       GenerationParams(max_tokens=4, temperature=0))
    assert first.tokens_evaluated is not None and first.tokens_evaluated <= first.tokens_in
    # A second request sharing the long system prompt evaluates only what differs.
    second = model.chat([system, ChatMessage("user", "What is a square root?")],
                        GenerationParams(max_tokens=4, temperature=0))
    assert second.tokens_in > 100
    assert second.tokens_evaluated < second.tokens_in // 3


def test_overflowing_prompt_with_overflow_error_is_a_context_error(model):
    with pytest.raises(ContextOverflowError):
        model.chat([ChatMessage("user", "word " * 3000)], GenerationParams(max_tokens=8, overflow="error"))


def test_slots_generate_at_once(model):
    """While one generation is held mid-stream, another on the same model runs to the end:
    the model is not serialised behind one lock."""
    other_done = threading.Event()
    held = model.stream([ChatMessage("user", "Count from 1 to 30.")], GenerationParams(max_tokens=24, temperature=0))
    pieces = iter(held)
    first = next(pieces)  # the first generation now holds a slot, paused by us

    def run_other():
        model.chat([ChatMessage("user", "Name a colour.")], GenerationParams(max_tokens=6, temperature=0))
        other_done.set()

    worker = threading.Thread(target=run_other)
    worker.start()
    assert other_done.wait(timeout=120), "the second generation waited for the first one"
    worker.join()
    rest = "".join(pieces)
    assert (first + rest).strip() and held.completion.tokens_out > 1


def test_stream_close_stops_generation_and_frees_the_slot(model):
    stream = model.stream([ChatMessage("user", "Write a long story about the sea.")],
                          GenerationParams(max_tokens=200, temperature=0))
    got = []
    for piece in stream:
        got.append(piece)
        if len(got) == 3:
            stream.close()
            break
    completion = stream.completion
    assert completion.tokens_out == 3 and completion.finish_reason == "cancelled"
    assert not model._active  # nothing left running on the engine
    assert model.chat([ChatMessage("user", "Say hi.")], GenerationParams(max_tokens=4, temperature=0)).text


def _rss() -> int:
    return psutil.Process().memory_info().rss


def test_close_frees_memory_and_the_estimate_bounds_measured_with_busy_slots():
    spec = bundled_model_spec()
    est = LlamaServerBackend().estimate(spec)
    gc.collect()
    before = _rss()
    loaded = LlamaServerBackend().load(spec)
    peak = _rss()
    try:
        msgs = [ChatMessage("user", "Tell me about the moon. " * 40)]
        params = GenerationParams(max_tokens=32, temperature=0)
        threads = [threading.Thread(target=loaded.chat, args=(msgs, params)) for _ in range(loaded.parallel)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, _rss())
            threads[0].join(timeout=0.05)
        for t in threads:
            t.join()
        peak = max(peak, _rss())
    finally:
        loaded.close()
    after = _rss()
    used = peak - before
    assert used > 90 * MiB  # the weights really are in memory
    assert est.total_bytes >= used, f"estimate {est.total_bytes / MiB:.0f} MiB < measured {used / MiB:.0f} MiB"
    assert after - before < used / 2, "close() did not give the model's memory back"


@pytest.mark.parametrize("reuse", [0, 32])
def test_cache_reuse_shifts_a_cached_chunk_into_place(reuse):
    """``options.cache_reuse``: a chunk of the slot's cached prompt that reappears later in the
    next prompt (a turn's answer, first generated after the step's instruction, then part of
    the history) is shifted into place instead of evaluated again; 0 reuses the prefix only."""
    spec = replace(bundled_model_spec(), options={"parallel": 1, "cache_reuse": reuse})
    model = LlamaServerBackend().load(spec)
    try:
        system = ChatMessage("system", "You are a tutor.")
        passage = " ".join(f"Fact {i}: the number {i} squared is {i * i}." for i in range(12))
        params = GenerationParams(max_tokens=2, temperature=0)
        model.chat([system, ChatMessage("user", "Read this first, then answer.\n" + passage)], params)
        second = model.chat([system, ChatMessage("user", passage)], params)
    finally:
        model.close()
    assert second.tokens_in > 150
    if reuse:
        assert second.tokens_evaluated < second.tokens_in // 3  # the passage came from the cache
    else:
        assert second.tokens_evaluated > second.tokens_in // 2  # only the system prompt did


@pytest.mark.parametrize("options, key", [({"cache_reuse": -1}, "cache_reuse"), ({"cache_reuse": "lots"}, "cache_reuse"),
                                          ({"parallel": 0}, "parallel")])
def test_bad_engine_options_are_config_errors_naming_the_key(options, key):
    from mimir.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        LlamaServerBackend().validate(replace(bundled_model_spec(), options=options))
    assert caught.value.key == f"models.{bundled_model_spec().id}.options.{key}"


def test_ignore_eos_generates_exactly_max_tokens(model):
    """``GenerationParams.ignore_eos`` (benchmarks compare fixed answer lengths): a short
    answer ends early without it and runs to ``max_tokens`` with it."""
    messages = [ChatMessage("user", "Reply with the single word: yes")]
    short = model.chat(messages, GenerationParams(max_tokens=60, temperature=0))
    forced = model.chat(messages, GenerationParams(max_tokens=60, temperature=0, ignore_eos=True))
    assert short.tokens_out < 60
    assert forced.tokens_out == 60
