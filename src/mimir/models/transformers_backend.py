"""transformers backend: Hugging Face causal LMs in-process, on CUDA or the CPU.

Sources (see :mod:`mimir.models.hf_source`): a repo id + revision from the local Hugging Face
cache, or a model directory. Options (``[models.ID.options]``):

- ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``;
- ``dtype``: ``"auto"`` (the dtype the checkpoint is stored in), ``"float32"``,
  ``"bfloat16"``, ``"float16"``;
- ``quantization``: ``"4bit"`` (NF4) or ``"8bit"`` through bitsandbytes, CUDA only
  (extra ``quant``);
- ``use_mmap`` (default false): on the CPU, weights whose dtype matches the file would stay
  memory-mapped, file-backed pages that RSS only counts once touched; Mimir copies them into
  process memory so the budget and the measurements see what the model holds;
- ``download`` (default false): fetch a repo missing from the cache (never with
  ``HF_HUB_OFFLINE=1``);
- ``chat_template``: a Jinja template replacing the tokenizer's own; ``seed``.

Estimate before load, from headers only: parameters from the safetensors headers (or the
config for ``.bin`` checkpoints) times bytes per parameter for the chosen dtype or
quantization, + KV cache (2 x layers x context x kv heads x head dim x dtype bytes) + the
activations of a full-context prefill (context x (4 x hidden + 6 x intermediate) values) + a
fixed overhead. Estimating also imports
torch and builds the model skeleton on the ``meta`` device (no memory), so the measured load
delta is the model, not one-time library initialisation.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import inspect
import math
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mimir.core.memory import release_freed_memory
from mimir.errors import ContextOverflowError, DeviceOutOfMemoryError, GenerationError, ModelLoadError
from mimir.models.base import Backend, ChatMessage, Delta, GenerationParams, LoadedModel
from mimir.models.hf_source import (
    CheckpointInfo,
    ModelDir,
    check_source,
    download_allowed,
    inspect_checkpoint,
    read_config,
    remote_checkpoint,
    resolve_model_dir,
)
from mimir.models.spec import MemoryEstimate, ModelSpec
from mimir.models.transformers_plan import (
    LoadPlan,
    check_context,
    check_options,
    estimate_memory,
    load_dtype,
    plan_load,
)
from mimir.models.transformers_plan import import_runtime as _runtime


def free_memory(cuda: bool) -> None:
    """Collect garbage, return cached CUDA blocks and free heap pages to the OS."""
    gc.collect()
    torch = sys.modules.get("torch")
    if cuda and torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    release_freed_memory()


def _is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None
    return isinstance(exc, MemoryError) or (oom_type is not None and isinstance(exc, oom_type))


class _TokenQueue:
    """A transformers streamer (``put``/``end``) that hands token ids to the consuming thread."""

    _END = object()

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        self.queue.put([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.queue.put(self._END)

    def fail(self, exc: BaseException) -> None:
        self.queue.put(exc)

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class TransformersModel(LoadedModel):
    def __init__(self, spec: ModelSpec, model, tokenizer, plan: LoadPlan, model_dir: ModelDir):
        super().__init__(spec)
        self._model = model
        self._tokenizer = tokenizer
        self.plan = plan
        self.model_dir = model_dir
        # One generation or scoring at a time: memory stays predictable.
        self._lock = threading.RLock()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self._eos_ids = sorted(eos_ids)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self._eos_ids or [0])[0]
        forward_params = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in forward_params
        # transformers 5.2x names the KV cache argument ``cache``; earlier, ``past_key_values``.
        self._cache_arg = "cache" if "cache" in forward_params else "past_key_values"
        self._prompt_overhead, self._per_message = self._measure_template()

    # -- tokens --------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self.spec.context_length - self._prompt_overhead

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self._require()[1](text, add_special_tokens=False)["input_ids"])

    def message_tokens(self, message: ChatMessage) -> int:
        return self.count_tokens(message.content) + self._per_message

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None):
        result = super().stream(messages, params)
        # The guard counts messages; the template's fixed part (generation prompt, default
        # system text) is measured once at load, so the reported prompt size is exact.
        result.tokens_in += self._prompt_overhead
        return result

    def _render(self, messages: Sequence[ChatMessage]) -> str:
        _, tok = self._require()
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return tok.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
        except Exception:
            if not any(m.role == "system" for m in messages):
                raise
        # Some templates (Gemma, older Mistral) reject a system role: fold it into the first user turn.
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        rest = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        if rest and rest[0]["role"] == "user":
            rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
        else:
            rest.insert(0, {"role": "user", "content": system})
        return tok.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)

    def _encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        try:
            prompt = self._render(messages)
        except Exception as exc:
            raise GenerationError(self.id, f"the chat template failed: {type(exc).__name__}: {exc}") from None
        return list(self._require()[1](prompt, add_special_tokens=False)["input_ids"])

    def _measure_template(self) -> tuple[int, int]:
        """Tokens the template adds around one message, and per extra message."""
        one = [ChatMessage("user", "x")]
        three = [*one, ChatMessage("assistant", "y"), ChatMessage("user", "z")]
        try:
            base = len(self._encode_chat(one)) - self.count_tokens("x")
            more = len(self._encode_chat(three)) - base - sum(self.count_tokens(t) for t in "xyz")
        except GenerationError:
            return 32, 6
        per_message = max(1, math.ceil(more / 2))
        return max(0, base - per_message), per_message

    def _require(self):
        model, tok = self._model, self._tokenizer
        if model is None or tok is None:
            raise GenerationError(self.id, "model was unloaded")
        return model, tok

    def _set_threads(self) -> None:
        if self.spec.threads:
            sys.modules["torch"].set_num_threads(self.spec.threads)

    # -- generation ----------------------------------------------------------------------
    def _generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[Delta]:
        torch, transformers = _runtime()
        with self._lock:
            model, tok = self._require()
            ids = self._encode_chat(messages)
            room = self.spec.context_length - len(ids)
            if room <= 0:
                raise ContextOverflowError(self.id, len(ids) + 1, self.spec.context_length)
            max_new = min(params.max_tokens, room)
            streamer = _TokenQueue()
            stop_now = threading.Event()

            class _Stop(transformers.StoppingCriteria):
                def __call__(self, input_ids, scores, **kwargs):
                    return torch.full((input_ids.shape[0],), stop_now.is_set(), dtype=torch.bool, device=input_ids.device)

            kwargs: dict[str, Any] = {
                "input_ids": torch.tensor([ids], device=model.device),
                "attention_mask": torch.ones((1, len(ids)), dtype=torch.long, device=model.device),
                "max_new_tokens": max_new,
                "streamer": streamer,
                "stopping_criteria": transformers.StoppingCriteriaList([_Stop()]),
                "eos_token_id": self._eos_ids or None,
                "pad_token_id": self._pad_id,
                "do_sample": params.temperature > 0,
            }
            if params.temperature > 0:
                kwargs.update(temperature=params.temperature, top_p=params.top_p)
                seed = params.seed if params.seed is not None else self.spec.options.get("seed")
                if seed is not None:
                    torch.manual_seed(int(seed))
            self._set_threads()

            def run() -> None:
                failure = None
                try:
                    with torch.inference_mode():
                        model.generate(**kwargs)
                except BaseException as exc:  # handed to the consumer, which raises it
                    failure = self._translate(exc, "generation")
                if failure is not None:
                    if isinstance(failure, DeviceOutOfMemoryError):
                        free_memory(self.plan.memory == "gpu")
                    streamer.fail(failure)

            thread = threading.Thread(target=run, name=f"mimir-generate-{self.id}", daemon=True)
            thread.start()
            try:
                yield from self._deltas(streamer, tok, params.stop, max_new, stop_now)
            finally:
                stop_now.set()  # a consumer that stops reading early ends the generation too
                thread.join()

    def _deltas(self, streamer: _TokenQueue, tok, stops: Sequence[str], max_new: int, stop_now) -> Iterator[Delta]:
        generated: list[int] = []
        text = ""
        emitted = 0
        stops = [s for s in stops if s]
        for token_ids in streamer:
            generated.extend(token_ids)
            decoded = tok.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            if decoded.endswith("\ufffd"):
                continue  # an incomplete UTF-8 character: wait for the next token
            text = decoded
            cut = min((i for i in (text.find(s, max(0, emitted - len(s))) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                stop_now.set()
                yield Delta(text[emitted:cut], "stop")
                for _ in streamer:  # drain until generate() notices the stop
                    pass
                return
            safe = len(text) - _held_back(text, stops)
            if safe > emitted:
                yield Delta(text[emitted:safe])
                emitted = safe
        finish = "stop" if (generated and generated[-1] in self._eos_ids) or len(generated) < max_new else "length"
        yield Delta(text[emitted:], finish)

    def _translate(self, exc: BaseException, phase: str) -> BaseException:
        if _is_oom(exc):
            cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return DeviceOutOfMemoryError(self.id, self.plan.memory, phase, cause)
        if isinstance(exc, (GenerationError, ContextOverflowError)):
            return exc
        return GenerationError(self.id, f"{type(exc).__name__}: {exc}")

    def score_choices(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        torch, _ = _runtime()
        with self._lock:
            model, tok = self._require()
            prompt = self._encode_chat(messages)
            longest = max((len(tok(c, add_special_tokens=False)["input_ids"]) for c in choices), default=0)
            if len(prompt) + longest > self.spec.context_length:
                raise ContextOverflowError(self.id, len(prompt) + longest, self.spec.context_length)
            self._set_threads()
            failure = None
            try:
                with torch.inference_mode():
                    return self._score(torch, model, tok, prompt, choices)
            except Exception as exc:
                failure = self._translate(exc, "scoring")
            if isinstance(failure, DeviceOutOfMemoryError):
                free_memory(self.plan.memory == "gpu")
            raise failure

    def _score(self, torch, model, tok, prompt: list[int], choices: Sequence[str]) -> dict[str, float]:
        extra = {"logits_to_keep": 1} if self._keeps_logits else {}
        out = model(input_ids=torch.tensor([prompt], device=model.device), use_cache=True, **extra)
        base = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        scores: dict[str, float] = {}
        for choice in choices:
            toks = list(tok(choice, add_special_tokens=False)["input_ids"])
            if not toks:
                scores[choice] = float("-inf")
                continue
            total = float(base[toks[0]])
            if len(toks) > 1:
                # The prompt's KV cache, copied so every choice continues from the prompt.
                past = copy.deepcopy(getattr(out, "cache", None) or getattr(out, "past_key_values", None))
                step = model(
                    input_ids=torch.tensor([toks[:-1]], device=model.device), use_cache=True, **{self._cache_arg: past}
                )
                logprobs = torch.log_softmax(step.logits[0].float(), dim=-1)
                total += float(sum(logprobs[i, t] for i, t in enumerate(toks[1:])))
            scores[choice] = total
        return scores

    def close(self) -> None:
        with self._lock:
            if self._model is None:
                return
            self._model = None
            self._tokenizer = None
        free_memory(self.plan.memory == "gpu")


class TransformersBackend(Backend):
    name = "transformers"

    def validate(self, spec: ModelSpec) -> None:
        check_source(spec)
        check_options(spec)
        if not download_allowed(spec):
            model_dir = resolve_model_dir(spec)
            inspect_checkpoint(spec, model_dir, read_config(spec, model_dir))

    def describe(self, spec: ModelSpec) -> tuple[ModelDir | None, dict[str, Any], CheckpointInfo]:
        """Config and tensor table, from the cache or (``download = true``) from the hub's headers."""
        check_source(spec)
        check_options(spec)
        try:
            model_dir = resolve_model_dir(spec, may_download=False)
        except ModelLoadError:
            if not download_allowed(spec):
                raise
            config, checkpoint = remote_checkpoint(spec, spec.source.value, spec.source.revision or "main")
            return None, config, checkpoint
        config = read_config(spec, model_dir)
        return model_dir, config, inspect_checkpoint(spec, model_dir, config)

    def estimate(self, spec: ModelSpec) -> MemoryEstimate:
        model_dir, config, checkpoint = self.describe(spec)
        plan = plan_load(spec, checkpoint, config)
        check_context(spec, config)
        if model_dir is not None:
            _warm_runtime(model_dir)
        return estimate_memory(config, checkpoint, plan, spec.context_length)

    def load(self, spec: ModelSpec) -> LoadedModel:
        torch, transformers = _runtime()
        model_dir = resolve_model_dir(spec)  # downloads here when allowed
        config = read_config(spec, model_dir)
        checkpoint = inspect_checkpoint(spec, model_dir, config)
        plan = plan_load(spec, checkpoint, config)
        check_context(spec, config)
        where = model_dir.description
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir.path))
        except Exception as exc:
            raise ModelLoadError(spec.id, where, f"cannot load the tokenizer: {type(exc).__name__}: {exc}") from None
        if spec.options.get("chat_template"):
            tokenizer.chat_template = str(spec.options["chat_template"])
        if not getattr(tokenizer, "chat_template", None):
            raise ModelLoadError(spec.id, where, "the tokenizer has no chat template; set chat_template in the model's options")
        dtype = getattr(torch, plan.dtype)
        # On the CPU the file's dtype is loaded as it is, and converted tensor by tensor in
        # _materialise: converting in one go would hold the whole file beside the converted
        # weights (a float32 file loaded as bfloat16 peaked at 2x the estimate).
        loaded_dtype = getattr(torch, load_dtype(plan, checkpoint))
        major = int(transformers.__version__.split(".")[0])
        kwargs: dict[str, Any] = {"dtype" if major >= 5 else "torch_dtype": loaded_dtype}
        if plan.memory == "gpu":
            kwargs["device_map"] = {"": plan.device}
        if plan.quantization:
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=plan.quantization == "4bit",
                load_in_8bit=plan.quantization == "8bit",
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=dtype,
            )
        failure: tuple[str, bool] | None = None
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir.path), **kwargs)
            model.eval()
            if plan.memory == "ram" and not plan.use_mmap:
                _materialise(model, checkpoint.files, None if loaded_dtype == dtype else dtype)
            return TransformersModel(spec, model, tokenizer, plan, model_dir)
        except Exception as exc:
            detail = str(exc) if isinstance(exc, ModelLoadError | GenerationError) else f"{type(exc).__name__}: {exc}"
            failure = (detail, _is_oom(exc))
        # Out of the except block, so the traceback no longer holds the partly loaded model.
        model = None
        free_memory(plan.memory == "gpu")
        detail, oom = failure
        if oom:
            raise DeviceOutOfMemoryError(spec.id, plan.memory, "load", detail.splitlines()[0])
        raise ModelLoadError(spec.id, where, detail)


def _warm_runtime(model_dir: ModelDir) -> None:
    """Import the model's code and build its skeleton on the meta device (no memory).

    One-time library initialisation then happens here, not inside the load that the
    manager measures. Best effort: a model this cannot build fails at load with the cause.
    """
    torch, transformers = _runtime()
    try:
        config = transformers.AutoConfig.from_pretrained(str(model_dir.path))
        with torch.device("meta"):
            transformers.AutoModelForCausalLM.from_config(config)
    except Exception:
        pass


def _materialise(model, files: Sequence[Path], dtype=None) -> None:
    """Copy memory-mapped CPU weights into process memory, one tensor at a time, converting
    floating-point parameters to ``dtype`` on the way when given.

    On Linux, the file pages behind each copied tensor are dropped right away
    (``madvise(MADV_DONTNEED)`` on the read-only-in-practice private file mapping: the
    content stays the file's, so this is safe even for a tensor still referenced), which
    keeps the load's peak near one copy of the weights instead of two. Modules the model
    keeps in float32 (``_keep_in_fp32_modules``) are not converted.
    """
    ranges = _file_mappings(files)
    drop = _page_dropper() if ranges else None
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        old = param.data
        convert = dtype is not None and old.is_floating_point() and not any(k in name for k in keep_fp32)
        param.data = old.to(dtype, copy=True) if convert else old.clone()
        if drop is not None:
            drop(ranges, old.data_ptr(), old.numel() * old.element_size())
        del old
    if dtype is not None:
        model.config.dtype = dtype
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None:
                module._buffers[name] = buf.clone()


def _file_mappings(files: Sequence[Path]) -> list[tuple[int, int]]:
    """Address ranges where ``files`` are memory-mapped in this process (Linux), else []."""
    if not sys.platform.startswith("linux") or not files:
        return []
    targets = {str(Path(f).resolve()) for f in files}
    ranges = []
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5] in targets:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((lo, hi))
    except OSError:
        return []
    return ranges


def _page_dropper():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = os.sysconf("SC_PAGE_SIZE")
    madv_dontneed = 4

    def drop(ranges: list[tuple[int, int]], start: int, nbytes: int) -> None:
        for lo, hi in ranges:
            if lo <= start < hi:
                a = max(lo, -(-start // page) * page)  # whole pages inside the tensor only
                b = min(hi, (start + nbytes) // page * page)
                if b > a:
                    madvise(a, b - a, madv_dontneed)
                return

    return drop
