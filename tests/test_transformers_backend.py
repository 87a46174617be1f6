"""The transformers backend on a real tiny Llama in a real (offline) Hugging Face cache.

The model (``tiny_hf.py``, built once per session) is a randomly initialised
``LlamaForCausalLM`` of about 3.1M parameters (12 MB in float32) with a trained byte-level
BPE tokenizer and a ChatML template, installed per test as ``mimir-test/tiny-llama`` in the
cache layout ``models--mimir-test--tiny-llama/{blobs,snapshots/<commit>,refs/main}``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mimir.config import bundled_model_spec
from mimir.errors import (
    ConfigError,
    ContextOverflowError,
    MissingExtraError,
    ModelLoadError,
)
from mimir.models.base import ChatMessage, GenerationParams
from mimir.models.hf_source import inspect_checkpoint, read_config, resolve_model_dir
from mimir.models.spec import ModelSource, ModelSpec
from mimir.models.transformers_backend import TransformersBackend
from mimir.models.transformers_plan import LoadPlan, estimate_memory
from mimir.core.events import ModelEvent
from mimir.runtime.manager import ModelManager
from mimir.core.memory import process_rss_bytes
from tiny_hf import TINY_COMMIT, TINY_REPO, TinyShape

MiB = 1024 * 1024
SHAPE = TinyShape()
HEAD_DIM = SHAPE.hidden_size // SHAPE.num_attention_heads
MESSAGES = [ChatMessage("system", "You are a patient tutor."), ChatMessage("user", "What is summation?")]
GREEDY = GenerationParams(max_tokens=24, temperature=0)


def tiny_spec(model_id: str = "tiny", *, revision: str = "main", context_length: int = 512, **options) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        backend="transformers",
        source=ModelSource("hf", TINY_REPO, revision=revision),
        context_length=context_length,
        options={"device": "cpu", **options},
    )


def expected_parameters(vocab: int) -> int:
    h, i, layers = SHAPE.hidden_size, SHAPE.intermediate_size, SHAPE.num_hidden_layers
    kv = SHAPE.num_key_value_heads * HEAD_DIM
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return 2 * vocab * h + layers * per_layer + h


def vocab_size(snapshot: Path) -> int:
    return json.loads((snapshot / "config.json").read_text())["vocab_size"]


@pytest.fixture
def backend() -> TransformersBackend:
    return TransformersBackend()


@pytest.fixture
def model(tiny_llama, backend):
    loaded = backend.load(tiny_spec())
    yield loaded
    loaded.close()


# -- estimate, from headers only -----------------------------------------------------------


@pytest.mark.parametrize(("dtype", "nbytes"), [("float32", 4), ("bfloat16", 2), ("float16", 2)])
def test_estimate_counts_parameters_from_headers_times_dtype_bytes(tiny_llama, backend, dtype, nbytes):
    estimate = backend.estimate(tiny_spec(dtype=dtype, context_length=1024))
    params = expected_parameters(vocab_size(tiny_llama))
    assert estimate.weights_bytes == params * nbytes
    assert estimate.kv_cache_bytes == 2 * SHAPE.num_hidden_layers * 1024 * SHAPE.num_key_value_heads * HEAD_DIM * nbytes
    assert estimate.overhead_bytes > 0
    assert estimate.device == "ram"


def test_estimate_covers_the_peak_of_the_load_itself(tiny_llama, backend):
    vocab, h = vocab_size(tiny_llama), SHAPE.hidden_size
    params = expected_parameters(vocab)
    largest = max(vocab * h, SHAPE.intermediate_size * h) * 4  # the largest matrix, float32 in the file
    fixed = 32 * MiB
    # Default (weights copied out of the file): converted tensor by tensor, so the load holds
    # the weights plus one tensor as stored; the total covers that.
    for dtype, nbytes in (("float32", 4), ("bfloat16", 2)):
        est = backend.estimate(tiny_spec(dtype=dtype))
        assert est.load_peak_bytes == params * nbytes + largest + fixed
        assert est.admission_bytes == max(est.total_bytes, est.load_peak_bytes)
    # use_mmap: transformers converts in one go and holds the whole float32 file meanwhile.
    mapped = backend.estimate(tiny_spec(dtype="bfloat16", use_mmap=True))
    assert mapped.load_peak_bytes == params * 2 + params * 4 + fixed
    assert backend.estimate(tiny_spec(dtype="float32", use_mmap=True)).load_peak_bytes == params * 4 + fixed


def test_bfloat16_from_a_float32_file_is_converted_tensor_by_tensor_to_the_same_weights(tiny_llama, backend):
    import torch
    import transformers

    loaded = backend.load(tiny_spec(dtype="bfloat16"))
    try:
        model = loaded._model
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        assert model.dtype == torch.bfloat16
        # Exactly what transformers' own conversion gives, tensor for tensor.
        direct = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.bfloat16)
        ours = dict(model.named_parameters())
        for name, param in direct.named_parameters():
            assert torch.equal(ours[name].data, param.data), name
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        with torch.inference_mode():
            assert torch.equal(model(ids).logits, direct(ids).logits)
        assert loaded.chat(MESSAGES, GREEDY).tokens_out > 0
    finally:
        loaded.close()


def test_auto_dtype_is_the_stored_dtype(tiny_llama, backend):
    assert backend.estimate(tiny_spec()).weights_bytes == expected_parameters(vocab_size(tiny_llama)) * 4


def test_quantized_estimates_shrink_the_linear_layers_only(tiny_llama):
    spec = tiny_spec()
    model_dir = resolve_model_dir(spec)
    config = read_config(spec, model_dir)
    checkpoint = inspect_checkpoint(spec, model_dir, config)
    half = estimate_memory(config, checkpoint, LoadPlan("cuda:0", "float16", None, False), 512)
    nf4 = estimate_memory(config, checkpoint, LoadPlan("cuda:0", "float16", "4bit", False), 512)
    int8 = estimate_memory(config, checkpoint, LoadPlan("cuda:0", "float16", "8bit", False), 512)
    assert half.device == nf4.device == "gpu"
    embeddings_bytes = 2 * vocab_size(tiny_llama) * SHAPE.hidden_size * 2  # embed + lm_head stay float16
    linear = expected_parameters(vocab_size(tiny_llama)) - embeddings_bytes // 2
    assert 0.5 * linear < nf4.weights_bytes - embeddings_bytes < 0.6 * linear
    assert 1.0 * linear < int8.weights_bytes - embeddings_bytes < 1.05 * linear
    assert nf4.weights_bytes < int8.weights_bytes < half.weights_bytes
    assert nf4.kv_cache_bytes == half.kv_cache_bytes  # the KV cache is in the compute dtype


def test_estimate_reads_headers_not_weights(tiny_llama, backend):
    """The header gains a 64 GiB tensor whose bytes are a hole in a sparse file: reading the
    weights would need 64 GiB; reading the header costs nothing."""
    blob = (tiny_llama / "model.safetensors").resolve()
    raw = blob.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    data_end = max(entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__")
    huge_numel = 2**34
    header["model.extra.weight"] = {"dtype": "F32", "shape": [2**16, 2**18], "data_offsets": [data_end, data_end + 4 * huge_numel]}
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    with blob.open("wb") as fh:
        fh.write(len(new_header).to_bytes(8, "little") + new_header + raw[8 + header_len :])
        fh.truncate(8 + len(new_header) + data_end + 4 * huge_numel)
    estimate = backend.estimate(tiny_spec())
    assert estimate.weights_bytes == (expected_parameters(vocab_size(tiny_llama)) + huge_numel) * 4


# -- options and devices -------------------------------------------------------------------


def test_unknown_option_and_bad_values_are_config_errors(tiny_llama, backend):
    with pytest.raises(ConfigError, match="models.tiny.options.dtyp"):
        backend.estimate(tiny_spec(dtyp="float16"))
    with pytest.raises(ConfigError, match="'float8' is not one of"):
        backend.estimate(tiny_spec(dtype="float8"))
    with pytest.raises(ConfigError, match="'tpu' is not one of"):
        backend.estimate(tiny_spec(device="tpu"))
    with pytest.raises(ConfigError, match="'2bit' is not one of"):
        backend.estimate(tiny_spec(quantization="2bit"))


def test_quantization_on_the_cpu_is_refused(tiny_llama, backend):
    with pytest.raises(ConfigError, match="bitsandbytes on CUDA; device is 'cpu'"):
        backend.estimate(tiny_spec(quantization="4bit"))


def test_quantization_without_bitsandbytes_names_the_extra(tiny_llama, backend):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(MissingExtraError) as info:
        backend.estimate(tiny_spec(device="auto", quantization="8bit"))
    assert info.value.extra == "quant" and "mimir-tutor[quant]" in str(info.value)


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="checks the no-CUDA path")
def test_cuda_requested_without_cuda_is_a_config_error(tiny_llama, backend):
    with pytest.raises(ConfigError, match="'cuda' requested but CUDA is not available"):
        backend.estimate(tiny_spec(device="cuda"))


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="checks the no-CUDA path")
def test_auto_device_without_cuda_is_the_cpu(tiny_llama, backend):
    spec = tiny_spec(device="auto")
    assert backend.estimate(spec).device == "ram"
    loaded = backend.load(spec)
    try:
        assert loaded.plan.device == "cpu"
    finally:
        loaded.close()


def test_context_longer_than_the_model_allows_is_a_config_error(tiny_llama, backend):
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        backend.estimate(tiny_spec(context_length=4096))


# -- bad sources ---------------------------------------------------------------------------


def test_missing_repo_names_repo_and_cache(tiny_llama, backend):
    spec = ModelSpec("ghost", "transformers", ModelSource("hf", "org/ghost", revision="main"))
    with pytest.raises(ModelLoadError) as info:
        backend.estimate(spec)
    message = str(info.value)
    assert "repo 'org/ghost' is not in the local Hugging Face cache" in message
    assert os.environ["HF_HUB_CACHE"] in message and "hf download org/ghost" in message


def test_missing_revision_names_it_and_lists_what_is_cached(tiny_llama, backend):
    with pytest.raises(ModelLoadError) as info:
        backend.load(tiny_spec(revision="v2"))
    message = str(info.value)
    assert "revision 'v2' of 'mimir-test/tiny-llama' is not in the local cache" in message
    assert f"main -> {TINY_COMMIT[:7]}" in message


def test_commit_without_snapshot_is_named(tiny_llama, backend):
    with pytest.raises(ModelLoadError, match=f"revision '{'f' * 40}'.*has no snapshot folder"):
        backend.estimate(tiny_spec(revision="f" * 40))


def test_revision_by_commit_hash_resolves(tiny_llama, backend):
    assert backend.estimate(tiny_spec(revision=TINY_COMMIT)).weights_bytes > 0


def test_download_is_not_attempted_offline(tiny_llama, backend):
    spec = ModelSpec("ghost", "transformers", ModelSource("hf", "org/ghost", revision="main"), options={"download": True})
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        backend.load(spec)


def test_garbage_safetensors_header_names_the_file(tiny_llama, backend):
    (tiny_llama / "model.safetensors").resolve().write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64)
    with pytest.raises(ModelLoadError) as info:
        backend.estimate(tiny_spec())
    assert str(tiny_llama / "model.safetensors") in str(info.value)
    assert "header is not valid JSON" in str(info.value)


def test_truncated_safetensors_names_the_file_and_tensor(tiny_llama, backend):
    blob = (tiny_llama / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as info:
        backend.load(tiny_spec())
    assert str(tiny_llama / "model.safetensors") in str(info.value)
    assert "truncated download?" in str(info.value)


def test_impossible_header_length_is_reported(tiny_llama, backend):
    (tiny_llama / "model.safetensors").resolve().write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelLoadError, match="header length 1000000000000 does not fit"):
        backend.estimate(tiny_spec())


def test_missing_blob_is_a_broken_link(tiny_llama, backend):
    (tiny_llama / "model.safetensors").resolve().unlink()
    with pytest.raises(ModelLoadError, match="broken link"):
        backend.estimate(tiny_spec())


def test_local_directory_source(tiny_llama, backend, tmp_path):
    spec = ModelSpec("local", "transformers", ModelSource("path", str(tiny_llama)), options={"device": "cpu"})
    loaded = backend.load(spec)
    try:
        assert loaded.chat(MESSAGES, GREEDY).tokens_out > 0
    finally:
        loaded.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        backend.estimate(ModelSpec("e", "transformers", ModelSource("path", str(empty))))


def test_gguf_style_sources_are_config_errors(backend):
    with pytest.raises(ConfigError, match="'file' is for GGUF repos"):
        backend.estimate(ModelSpec("g", "transformers", ModelSource("hf", "org/x", revision="main", filename="m.gguf")))
    with pytest.raises(ConfigError, match="not a package source"):
        backend.estimate(ModelSpec("p", "transformers", bundled_model_spec().source))


# -- generation ----------------------------------------------------------------------------


def test_streaming_yields_token_pieces_that_make_the_completion(model):
    stream = model.stream(MESSAGES, GREEDY)
    pieces = list(stream)
    completion = stream.completion
    assert len(pieces) > 1
    assert "".join(pieces) == completion.text
    assert completion.finish_reason == "length" and 1 < completion.tokens_out <= 24
    assert model.chat(MESSAGES, GREEDY).text == completion.text  # greedy is deterministic


def test_stop_string_cuts_the_text_and_stops(model):
    full = model.chat(MESSAGES, GenerationParams(max_tokens=40, temperature=0)).text
    middle = len(full) // 2
    stop = full[middle : middle + 3]
    assert len(stop) == 3
    stopped = model.chat(MESSAGES, GenerationParams(max_tokens=40, temperature=0, stop=("\x00never", stop)))
    assert stopped.text == full[: full.index(stop)]
    assert stopped.finish_reason == "stop"


def test_sampling_with_a_seed_repeats(model):
    params = GenerationParams(max_tokens=16, temperature=0.9, seed=7)
    assert model.chat(MESSAGES, params).text == model.chat(MESSAGES, params).text


def test_abandoned_stream_ends_its_generation_thread(model):
    gen = iter(model.stream(MESSAGES, GenerationParams(max_tokens=200, temperature=0)))
    next(gen)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("mimir-generate-")]
    assert model.chat(MESSAGES, GREEDY).tokens_out > 0  # the model's lock was released


def test_prompt_tokens_are_counted_with_the_chat_template(model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model.model_dir.path))
    text = "Solve 3x - y = 7"
    assert model.count_tokens(text) == len(tok(text, add_special_tokens=False)["input_ids"])
    prompt = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in MESSAGES], tokenize=False, add_generation_prompt=True
    )
    assert model.stream(MESSAGES, GREEDY).tokens_in == len(tok(prompt, add_special_tokens=False)["input_ids"])


def test_overflowing_input_is_trimmed_or_refused(tiny_llama, backend):
    loaded = backend.load(tiny_spec(context_length=128))
    try:
        long = [ChatMessage("user", "practice questions help students learn " * 60)]
        trimmed = loaded.stream(long, GenerationParams(max_tokens=8, temperature=0))
        assert trimmed.truncated_input and trimmed.tokens_in <= 128
        assert trimmed.completion.tokens_out > 0
        with pytest.raises(ContextOverflowError):
            loaded.stream(long, GenerationParams(max_tokens=8, overflow="error"))
    finally:
        loaded.close()


def test_score_choices_are_log_probs_of_each_choice_after_the_prompt(model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    choices = ["YES", "NO", "practice questions"]
    scores = model.score_choices(MESSAGES, choices)
    # Reference: one full forward pass over prompt + choice, straight through transformers.
    tok = AutoTokenizer.from_pretrained(str(model.model_dir.path))
    ref = AutoModelForCausalLM.from_pretrained(str(model.model_dir.path), dtype=torch.float32).eval()
    prompt = tok(
        tok.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in MESSAGES], tokenize=False, add_generation_prompt=True
        ),
        add_special_tokens=False,
    )["input_ids"]
    for choice in choices:
        ids = tok(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = ref(torch.tensor([prompt + ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        expected = sum(float(logprobs[len(prompt) - 1 + k, t]) for k, t in enumerate(ids))
        assert scores[choice] == pytest.approx(expected, abs=1e-3)
    assert len(tok("practice questions", add_special_tokens=False)["input_ids"]) > 1  # the multi-token path ran


def test_closed_model_refuses_to_generate(tiny_llama, backend):
    loaded = backend.load(tiny_spec())
    loaded.close()
    loaded.close()  # idempotent
    with pytest.raises(Exception, match="model was unloaded"):
        loaded.chat(MESSAGES, GREEDY)


# -- manager: measured footprint, memory return, mixed pipelines ---------------------------


def test_manager_measures_about_the_weights_and_stays_under_the_estimate(tiny_llama):
    manager = ModelManager({"tiny": tiny_spec()}, budget_ram_bytes=2 * 1024**3)
    events: list[ModelEvent] = []
    manager.subscribe(events.append)
    try:
        estimate = manager.estimate("tiny")
        for _ in range(2):  # the second load is the steady state; the first may carry runtime set-up
            with manager.use("tiny") as m:
                assert m.chat(MESSAGES, GREEDY).tokens_out > 0
            resident = manager.status().get("tiny")
            assert resident is not None and resident.estimate_bytes == estimate.total_bytes
            # Weights are copied out of the mmap into process memory: RSS sees them all.
            assert 0.5 * estimate.weights_bytes < resident.measured_bytes < estimate.weights_bytes + 16 * MiB
            assert resident.measured_bytes < estimate.total_bytes
            manager.unload("tiny")
        unloads = [e for e in events if e.kind == "unload"]
        assert len(unloads) == 2
        assert all(e.measured_bytes >= 0.5 * estimate.weights_bytes for e in unloads)  # close() really freed
    finally:
        manager.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_cpu_weights_are_copied_out_of_the_file_mapping(tiny_llama, backend):
    """Memory-mapped weights are file pages that RSS counts only once touched (so a load
    measures anything from a third to all of the weights); by default they are copied into
    process memory and the weights file is no longer mapped once the model is loaded."""
    weights_blob = str((tiny_llama / "model.safetensors").resolve())
    loaded = backend.load(tiny_spec())
    try:
        gc.collect()
        assert weights_blob not in Path("/proc/self/maps").read_text()
    finally:
        loaded.close()


RSS_CYCLES = 5
#: Measured on this machine (2 CPUs, torch 2.13, transformers 5.24, glibc): after one warm-up
#: cycle, five float32 load/generate/unload cycles end within about 0.7 MiB of the start
#: (bfloat16: 4-7 MiB of heap fragmentation, flat). A model that was not freed would leave
#: about 12 MiB per cycle.
RSS_TOLERANCE_BYTES = 8 * MiB


def test_load_unload_cycles_return_rss_to_where_it_started(tiny_llama):
    manager = ModelManager({"tiny": tiny_spec()}, budget_ram_bytes=2 * 1024**3)
    try:

        def cycle() -> None:
            with manager.use("tiny") as m:
                m.chat(MESSAGES, GREEDY)
            manager.unload("tiny")

        cycle()  # warm-up: one-time runtime set-up is not a leak
        gc.collect()
        start = process_rss_bytes()
        for _ in range(RSS_CYCLES):
            cycle()
        gc.collect()
        assert process_rss_bytes() - start < RSS_TOLERANCE_BYTES
        assert manager.status().loads == RSS_CYCLES + 1
    finally:
        manager.close()


def test_mixed_pipeline_llama_cpp_routing_and_transformers_response(tiny_llama):
    """Routing on the bundled GGUF (llama.cpp), the response on the tiny transformers model,
    under a budget that holds one of them at a time: each use evicts the other."""
    specs = {"router": bundled_model_spec("router"), "writer": tiny_spec("writer")}
    probe = ModelManager(specs, budget_ram_bytes=1)
    router_est, writer_est = probe.estimate("router").total_bytes, probe.estimate("writer").total_bytes
    probe.close()
    budget = max(router_est, writer_est) + min(router_est, writer_est) // 2
    manager = ModelManager(specs, budget_ram_bytes=budget, roles={"routing": "router", "response": "writer"})
    events: list[ModelEvent] = []
    manager.subscribe(events.append)
    seen = {}
    try:
        for _ in range(2):
            with manager.use_role("routing") as router:
                scores = router.score_choices([ChatMessage("user", "Can you make practice questions?")], ["YES", "NO"])
                assert set(scores) == {"YES", "NO"}
            seen["router"] = manager.status().get("router")
            with manager.use_role("response") as writer:
                text = "".join(writer.stream(MESSAGES, GREEDY))
                assert text
            status = manager.status()
            seen["writer"] = status.get("writer")
            assert status.get("router") is None  # evicted to make room
            assert status.used_ram_bytes <= budget
        assert seen["router"].backend == "llama_cpp" and seen["writer"].backend == "transformers"
        assert seen["router"].estimate_bytes == router_est and seen["writer"].estimate_bytes == writer_est
        assert seen["router"].measured_bytes > 50 * MiB and seen["writer"].measured_bytes > 5 * MiB
        evictions = [(e.model_id, e.reason) for e in events if e.kind == "evict"]
        assert ("router", "make room for 'writer'") in evictions and ("writer", "make room for 'router'") in evictions
        loads = {e.model_id: e for e in events if e.kind == "load"}
        assert loads["writer"].measured_bytes is not None and loads["router"].measured_bytes is not None
        assert manager.status().evictions == 3
    finally:
        manager.close()


def test_cli_models_shows_estimate_and_measured_for_a_hugging_face_model(tiny_llama, tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text(
        f"""
[budget]
memory = "2GiB"

[models.tiny]
backend = "transformers"
repo = "{TINY_REPO}"
context_length = 512
options = {{ device = "cpu", dtype = "float32" }}

[roles]
response = "tiny"
""",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "mimir.cli.main", "--config", str(config), "models", "--json", "--load"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["models"]
    assert row["backend"] == "transformers" and row["source"] == f"hf:{TINY_REPO}@main"
    assert row["estimate_parts"]["weights_bytes"] == expected_parameters(vocab_size(tiny_llama)) * 4
    assert row["measured_bytes"] > 5 * MiB and row["device"] == "ram"


# -- out of memory: the manager evicts idle models and retries once (scripted backend) ------


def scripted(model_id: str, **options) -> ModelSpec:
    return ModelSpec(model_id, "scripted", ModelSource("path", f"/scripted/{model_id}"), options={"size_bytes": MiB, **options})


def test_out_of_memory_on_load_evicts_idle_models_on_that_device_and_retries():
    specs = {
        "idle_gpu": scripted("idle_gpu", device="gpu"),
        "idle_ram": scripted("idle_ram"),
        "big": scripted("big", device="gpu", oom_loads=1),
    }
    manager = ModelManager(specs, budget_ram_bytes=64 * MiB, budget_gpu_bytes=64 * MiB)
    events: list[ModelEvent] = []
    manager.subscribe(events.append)
    try:
        for model_id in ("idle_gpu", "idle_ram"):
            with manager.use(model_id):
                pass
        with manager.use("big") as big:
            assert big.chat([ChatMessage("user", "hi")]).text == "ok"
        status = manager.status()
        assert status.get("big") is not None and status.get("idle_ram") is not None
        assert status.get("idle_gpu") is None  # evicted: it held memory on the device that ran out
        assert status.load_failures == 0 and status.evictions == 1
        (evict,) = [e for e in events if e.kind == "evict"]
        assert evict.model_id == "idle_gpu" and evict.reason == "out of gpu memory while loading 'big'"
    finally:
        manager.close()


def test_out_of_memory_twice_fails_clearly_and_the_session_survives():
    specs = {"idle": scripted("idle", device="gpu"), "big": scripted("big", device="gpu", oom_loads=2)}
    manager = ModelManager(specs, budget_ram_bytes=64 * MiB, budget_gpu_bytes=64 * MiB)
    try:
        with manager.use("idle"):
            pass
        with pytest.raises(ModelLoadError) as info:
            with manager.use("big"):
                pass
        message = str(info.value)
        assert "out of gpu memory even after evicting idle models (idle) and retrying once" in message
        assert "scripted out-of-memory on load attempt 2" in message
        assert manager.status().load_failures == 1
        with manager.use("big") as big:  # a later request loads (the third attempt succeeds)
            assert big.chat([ChatMessage("user", "hi")]).text == "ok"
        with manager.use("idle") as idle:
            assert idle.chat([ChatMessage("user", "hi")]).text == "ok"
    finally:
        manager.close()


def test_evict_idle_spares_models_in_use_and_pinned():
    specs = {
        "busy": scripted("busy", device="gpu"),
        "pinned": ModelSpec("pinned", "scripted", ModelSource("path", "/p"), pinned=True, options={"device": "gpu"}),
        "idle": scripted("idle", device="gpu"),
        "cpu": scripted("cpu"),
    }
    manager = ModelManager(specs, budget_ram_bytes=64 * MiB, budget_gpu_bytes=64 * MiB)
    try:
        for model_id in ("pinned", "idle", "cpu"):
            with manager.use(model_id):
                pass
        with manager.use("busy"):
            # What a pipeline does after a DeviceOutOfMemoryError while generating.
            assert manager.evict_idle("out of gpu memory while generating", device="gpu") == ["idle"]
            assert manager.evict_idle("everything idle") == ["cpu"]
        assert sorted(m.model_id for m in manager.status().resident) == ["busy", "pinned"]
    finally:
        manager.close()


# -- CUDA ----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")
def test_gpu_float16_measured_is_cuda_allocated_and_unload_returns_it(tiny_llama):
    import torch

    manager = ModelManager(
        {"tiny": tiny_spec(device="cuda", dtype="float16")}, budget_ram_bytes=2 * 1024**3, budget_gpu_bytes=1024**3
    )
    try:
        estimate = manager.estimate("tiny")
        assert estimate.device == "gpu"
        with manager.use("tiny") as m:
            m.chat(MESSAGES, GREEDY)
        manager.unload("tiny")
        start = torch.cuda.memory_allocated()
        for _ in range(3):
            with manager.use("tiny") as m:
                m.chat(MESSAGES, GREEDY)
            resident = manager.status().get("tiny")
            assert resident.device == "gpu"
            assert 0.9 * estimate.weights_bytes < resident.measured_bytes < estimate.weights_bytes + 8 * MiB
            manager.unload("tiny")
        assert torch.cuda.memory_allocated() - start < 1 * MiB
    finally:
        manager.close()


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")
def test_gpu_out_of_memory_on_load_evicts_retries_once_then_fails_clearly(tiny_llama):
    import torch

    manager = ModelManager({"tiny": tiny_spec(device="cuda", dtype="float16")}, budget_ram_bytes=2 * 1024**3)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(max(1e-6, (torch.cuda.memory_allocated() + 64 * 1024) / total))
    try:
        with pytest.raises(ModelLoadError, match="even after evicting idle models .* and retrying once"):
            with manager.use("tiny"):
                pass
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    with manager.use("tiny") as m:  # the session survives
        assert m.chat(MESSAGES, GREEDY).tokens_out > 0
    manager.close()
