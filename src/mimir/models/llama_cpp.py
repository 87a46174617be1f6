"""llama.cpp backend (``llama-cpp-python``): GGUF models run in-process.

Sources: a GGUF ``path``, a ``package`` resource (the bundled SmolLM2 model), or an ``hf``
repo + ``file`` resolved from the local Hugging Face cache. Options (``ModelSpec.options``):

- ``n_batch`` (default 512): prompt tokens evaluated per step;
- ``use_mmap`` (default false): with mmap, weights are file-backed pages the kernel may
  share or drop, which hides them from RSS; Mimir reads them into memory by default so the
  budget and the measurements see what the model really holds;
- ``seed`` (default: random).

Estimate before load = weights file size + KV cache (f16, 2 x layers x context x kv heads x
head dim) + the compute buffer (``n_batch x vocab`` floats) + a fixed runtime overhead.
Layer and head counts come from the GGUF metadata, read through llama.cpp's C API with ``vocab_only`` (the tokenizer is read, the weights are not).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from mimir.errors import ConfigError, ContextOverflowError, GenerationError, MissingExtraError, ModelLoadError
from mimir.models.base import Backend, ChatMessage, Delta, GenerationParams, LoadedModel
from mimir.models.spec import MemoryEstimate, ModelSpec

MiB = 1024 * 1024
#: Runtime overhead beyond weights, KV cache and buffers (threads, graph, allocator slack).
FIXED_OVERHEAD_BYTES = 32 * MiB
GGUF_MAGIC = b"GGUF"


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:  # pragma: no cover - core dependency
        raise MissingExtraError("llama_cpp", "llama", "the llama_cpp backend") from None
    return llama_cpp


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
                hf_hub_download(
                    source.value, source.filename, revision=source.revision, local_files_only=True
                )
            )
        except Exception as exc:
            raise ModelLoadError(spec.id, source.describe(), f"not in the local Hugging Face cache ({type(exc).__name__})") from None
    else:
        path = source.local_path()
        if path is None:
            raise ModelLoadError(spec.id, source.describe(), f"package '{source.value.split('/')[0]}' is not installed")
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


def gguf_memory_estimate(
    *, file_bytes: int, n_layer: int, n_head_kv: int, head_dim: int, n_vocab: int, context_length: int,
    n_batch: int = 512,
) -> MemoryEstimate:
    """The llama.cpp footprint of a GGUF model from its facts (also used by the catalogue and
    ``mimir pull`` before a file is on disk): weights = the file, KV cache in f16
    (2 x layers x context x kv heads x head dim x 2 bytes), and a compute buffer that grows
    with batch x vocabulary (the logits of a full batch; the bundled model touched ~70 MiB
    of it on a 1,500-token prompt) plus a fixed runtime overhead."""
    kv_bytes = 2 * n_layer * context_length * n_head_kv * head_dim * 2
    buffers = min(n_batch, context_length) * n_vocab * 4
    return MemoryEstimate(
        weights_bytes=file_bytes,
        kv_cache_bytes=kv_bytes,
        overhead_bytes=buffers + FIXED_OVERHEAD_BYTES,
        device="ram",
    )


def _threads(spec: ModelSpec) -> int:
    return spec.threads or os.cpu_count() or 1


class LlamaCppModel(LoadedModel):
    #: Tokens the chat template adds beyond the messages (default system prompt, markers).
    PROMPT_OVERHEAD_TOKENS = 32

    def __init__(self, spec: ModelSpec, llm, path: Path):
        super().__init__(spec)
        self._llm = llm
        self.path = path
        # llama.cpp contexts are not thread-safe: one generation or scoring at a time.
        self._lock = threading.RLock()
        self._formatter = None

    @property
    def context_length(self) -> int:
        return self.spec.context_length - self.PROMPT_OVERHEAD_TOKENS

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    @staticmethod
    def _as_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in messages]

    def _generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[Delta]:
        with self._lock:
            if self._llm is None:
                raise GenerationError(self.id, "model was unloaded")
            try:
                chunks = self._llm.create_chat_completion(
                    messages=self._as_dicts(messages),
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    stop=list(params.stop) or None,
                    seed=params.seed if params.seed is not None else self.spec.options.get("seed"),
                    repeat_penalty=params.repeat_penalty,
                    presence_penalty=params.presence_penalty,
                    frequency_penalty=params.frequency_penalty,
                    stream=True,
                )
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    yield Delta(choice["delta"].get("content") or "", choice.get("finish_reason"))
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise ContextOverflowError(self.id, -1, self.spec.context_length) from exc
                raise GenerationError(self.id, str(exc)) from exc
            except RuntimeError as exc:
                raise GenerationError(self.id, str(exc)) from exc

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def _prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The exact tokens generation would see: the GGUF chat template, assistant turn open."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self._formatter is None:
            template = self._llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise GenerationError(self.id, "GGUF file has no chat template; cannot score choices")
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llm.token_eos()),
                bos_token=self._token_text(self._llm.token_bos()),
            )
        prompt = self._formatter(messages=self._as_dicts(messages)).prompt
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def _eval_from(self, tokens: list[int]) -> None:
        """Evaluate ``tokens``, reusing the KV cache for the prefix already evaluated."""
        llm = self._llm
        done = llm.n_tokens
        prefix = 0
        cached = llm.input_ids[:done]
        limit = min(done, len(tokens) - 1)  # always evaluate at least one token for logits
        while prefix < limit and cached[prefix] == tokens[prefix]:
            prefix += 1
        llm.n_tokens = prefix
        llm.eval(tokens[prefix:])

    def _last_logprobs(self):
        import numpy as np

        llama_cpp = _llama_cpp()
        n_vocab = self._llm.n_vocab()
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._llm.ctx), shape=(n_vocab,)).astype(np.float64)
        top = logits.max()
        return logits - top - np.log(np.exp(logits - top).sum())

    def score_choices(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        with self._lock:
            if self._llm is None:
                raise GenerationError(self.id, "model was unloaded")
            prompt = self._prompt_tokens(messages)
            if len(prompt) + 16 > self.spec.context_length:
                raise ContextOverflowError(self.id, len(prompt) + 16, self.spec.context_length)
            self._eval_from(prompt)
            base = self._last_logprobs()
            scores: dict[str, float] = {}
            for choice in choices:
                toks = self._llm.tokenize(choice.encode("utf-8"), add_bos=False, special=False)
                if not toks:
                    scores[choice] = float("-inf")
                    continue
                total = float(base[toks[0]])
                if len(toks) > 1:
                    self._llm.n_tokens = len(prompt)
                    for prev, nxt in zip(toks[:-1], toks[1:]):
                        self._llm.eval([prev])
                        total += float(self._last_logprobs()[nxt])
                    self._llm.n_tokens = len(prompt)
                scores[choice] = total
            return scores

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                try:
                    self._llm.close()
                finally:
                    self._llm = None


class LlamaCppBackend(Backend):
    name = "llama_cpp"

    def validate(self, spec: ModelSpec) -> None:
        resolve_gguf_path(spec)

    def _metadata(self, spec: ModelSpec, path: Path) -> dict[str, str]:
        """GGUF metadata through llama.cpp's C API with ``vocab_only``: no weights, no context."""
        import ctypes

        llama_cpp = _llama_cpp()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not model:
            raise ModelLoadError(spec.id, str(path), "cannot read GGUF metadata (corrupt or unsupported file)")
        try:
            meta: dict[str, str] = {}
            size = 4096
            buf = ctypes.create_string_buffer(size)
            for i in range(llama_cpp.llama_model_meta_count(model)):
                if llama_cpp.llama_model_meta_key_by_index(model, i, buf, size) < 0:
                    continue
                key = buf.value.decode("utf-8", errors="replace")
                if key.startswith("tokenizer.ggml."):
                    continue
                n = llama_cpp.llama_model_meta_val_str_by_index(model, i, buf, size)
                if 0 <= n < size:
                    meta[key] = buf.value.decode("utf-8", errors="replace")
            return meta
        finally:
            llama_cpp.llama_model_free(model)

    def estimate(self, spec: ModelSpec) -> MemoryEstimate:
        path = resolve_gguf_path(spec)
        meta = self._metadata(spec, path)
        arch = meta.get("general.architecture", "llama")

        def num(key: str, default: int) -> int:
            try:
                return int(float(meta.get(f"{arch}.{key}", default)))
            except ValueError:
                return default

        n_head = max(1, num("attention.head_count", 32))
        n_embd = num("embedding_length", 4096)
        n_vocab = num("vocab_size", 0) or int(meta.get("tokenizer.ggml.vocab_size", 32000) or 32000)
        return gguf_memory_estimate(
            file_bytes=path.stat().st_size,
            n_layer=num("block_count", 32),
            n_head_kv=num("attention.head_count_kv", n_head),
            head_dim=num("attention.key_length", n_embd // n_head),
            n_vocab=n_vocab,
            context_length=spec.context_length,
            n_batch=int(spec.options.get("n_batch", 512)),
        )

    def load(self, spec: ModelSpec) -> LoadedModel:
        llama_cpp = _llama_cpp()
        path = resolve_gguf_path(spec)
        try:
            llm = llama_cpp.Llama(
                str(path),
                n_ctx=spec.context_length,
                n_threads=_threads(spec),
                n_batch=int(spec.options.get("n_batch", 512)),
                use_mmap=bool(spec.options.get("use_mmap", False)),
                verbose=bool(spec.options.get("verbose", False)),
            )
        except Exception as exc:
            raise ModelLoadError(spec.id, str(path), f"{type(exc).__name__}: {exc}") from None
        return LlamaCppModel(spec, llm, path)
