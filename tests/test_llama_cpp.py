"""The bundled SmolLM2-135M model through llama.cpp, via the real backend and manager."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mimir.config import bundled_model_spec
from mimir.errors import ModelLoadError
from mimir.models.base import ChatMessage, GenerationParams
from mimir.models.context import TRUNCATION_NOTICE
from mimir.models.llama_cpp import LlamaCppBackend
from mimir.models.spec import ModelSource
from mimir.runtime.manager import ModelManager

GiB = 1024**3


@pytest.fixture(scope="module")
def model():
    spec = bundled_model_spec()
    loaded = LlamaCppBackend().load(spec)
    yield loaded
    loaded.close()


def test_estimate_reads_metadata_without_loading(bundled_gguf):
    est = LlamaCppBackend().estimate(bundled_model_spec())
    assert est.weights_bytes == bundled_gguf.stat().st_size
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims, f16 K and V, 2048 tokens.
    assert est.kv_cache_bytes == 2 * 30 * 2048 * 3 * 64 * 2
    assert est.device == "ram"
    smaller = LlamaCppBackend().estimate(replace(bundled_model_spec(), context_length=512))
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
        fresh = LlamaCppBackend().load(bundled_model_spec())
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
    small = LlamaCppBackend().load(spec)
    try:
        history = [ChatMessage("user" if i % 2 == 0 else "assistant", "word " * 60) for i in range(6)]
        out = small.chat(history + [ChatMessage("user", "Say hi.")], GenerationParams(max_tokens=16, temperature=0))
        assert out.dropped_messages > 0 and not out.truncated_input
        huge = small.chat([ChatMessage("user", "tell me " * 400)], GenerationParams(max_tokens=16, temperature=0))
        assert huge.truncated_input
        assert huge.tokens_in <= 256
    finally:
        small.close()


def evaluated_text(model) -> str:
    """What the llama.cpp context really holds: the tokens it evaluated, detokenized."""
    llm = model._llm
    return llm.detokenize(list(llm.input_ids[: llm.n_tokens]), special=True).decode("utf-8", errors="replace")


def test_truncation_notice_is_visible_to_the_model():
    spec = replace(bundled_model_spec(), context_length=256)
    small = LlamaCppBackend().load(spec)
    try:
        question = "alpha beta gamma " * 200 + "OMEGA-TAIL"
        out = small.chat([ChatMessage("user", question)], GenerationParams(max_tokens=8, temperature=0))
        assert out.truncated_input
        given = evaluated_text(small)
        # The model was given the start of the message, then the notice; the cut tail never
        # reached it.
        assert TRUNCATION_NOTICE.strip() in given
        assert given.index("alpha beta gamma") < given.index(TRUNCATION_NOTICE.strip())
        assert "OMEGA-TAIL" not in given
        assert small._llm.n_tokens <= 256
    finally:
        small.close()


def test_score_choices_prefers_the_obvious_answer(model):
    msgs = [
        ChatMessage("system", "Answer with one letter."),
        ChatMessage("user", "Which is a fruit? A) apple B) hammer"),
    ]
    scores = model.score_choices(msgs, ["A", "B"])
    assert set(scores) == {"A", "B"}
    assert all(s < 0 for s in scores.values())
    # Scoring twice reuses the evaluated prompt; re-evaluating only the last token changes
    # the float sums slightly (batched vs single-token kernels), never the ranking.
    again = model.score_choices(msgs, ["A", "B"])
    assert again == pytest.approx(scores, abs=0.05)
    assert max(again, key=again.get) == max(scores, key=scores.get)
    # Multi-token choices are scored token by token; a long unlikely one scores lower.
    multi = model.score_choices(msgs, ["A", "B) hammer and nails and glue"])
    assert multi["B) hammer and nails and glue"] < multi["A"]


def test_generation_still_works_after_scoring(model):
    model.score_choices([ChatMessage("user", "Pick one: yes or no?")], ["yes", "no"])
    out = model.chat([ChatMessage("user", "Say hello.")], GenerationParams(max_tokens=8, temperature=0))
    assert out.text.strip()


def test_missing_file_is_a_clear_error(tmp_path):
    spec = replace(bundled_model_spec(), source=ModelSource("path", str(tmp_path / "absent.gguf")))
    with pytest.raises(ModelLoadError) as info:
        LlamaCppBackend().estimate(spec)
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
    r = m.status().get("default")
    # Weights are read into memory (no mmap): the RSS delta is at least the file size.
    assert r.measured_bytes > 90 * 1024**2
    assert r.estimate_bytes > r.measured_bytes * 0.5
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
