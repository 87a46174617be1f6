"""A scripted backend: real memory, declared sizes, queued replies.

For policy tests, benchmarks and demos that must not depend on a model's wording. A scripted
model really allocates ``alloc_bytes`` of memory when loaded (and frees it when closed), so
RSS-based measurements see it; it replies from a queue, cycling, one word per streamed token.

Options (``ModelSpec.options``):

- ``size_bytes``: the estimate (weights part); default 1 MiB;
- ``alloc_bytes``: bytes actually allocated at load; default ``size_bytes``;
- ``load_peak_bytes``: the declared peak of the load itself (``MemoryEstimate.load_peak_bytes``);
- ``replies``: list of reply strings; default ``["ok"]``;
- ``scores``: mapping choice -> log-prob for ``score_choices``; unknown choices get -10;
- ``load_s``: seconds a load takes (to exercise concurrent requests);
- ``token_s``: seconds each streamed token takes (to exercise queues, deadlines and
  cancellation); ``tokens_streamed`` counts the tokens handed out;
- ``fail``: an error message; loading raises ``ModelLoadError`` with it;
- ``fail_on``: generation raises ``GenerationError`` when the last message contains this text;
- ``device``: ``"ram"`` or ``"gpu"`` (declared only; memory is host memory);
- ``oom_generations``: the first N generations raise ``DeviceOutOfMemoryError``;
- ``oom_midstream``: the first N generations raise ``DeviceOutOfMemoryError`` after their
  first word was streamed;
- ``close_s``: seconds a close takes (to observe a model while it is closing);
- ``oom_loads``: the first N load attempts of this model (per backend instance) raise
  ``DeviceOutOfMemoryError`` on ``device``, to exercise the manager's evict-and-retry path.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence

from collections import Counter

from mimir.errors import DeviceOutOfMemoryError, GenerationError, ModelLoadError
from mimir.models.base import Backend, ChatMessage, Delta, GenerationParams, LoadedModel
from mimir.models.spec import MemoryEstimate, ModelSpec

MiB = 1024 * 1024


class ScriptedModel(LoadedModel):
    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        alloc = int(spec.options.get("alloc_bytes", spec.options.get("size_bytes", MiB)))
        # Touch every page so the allocation shows in RSS.
        self._memory: bytearray | None = bytearray(b"\x01") * alloc
        self._replies = itertools.cycle(list(spec.options.get("replies", ["ok"])))
        self._scores = dict(spec.options.get("scores", {}))
        self._lock = threading.Lock()
        self.calls: list[list[ChatMessage]] = []
        self._ooms_left = int(spec.options.get("oom_generations", 0))
        self._midstream_ooms_left = int(spec.options.get("oom_midstream", 0))
        self._token_s = float(spec.options.get("token_s", 0))
        self.tokens_streamed = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[Delta]:
        with self._lock:
            self.calls.append(list(messages))
            reply = next(self._replies)
            oom = self._ooms_left > 0
            self._ooms_left -= oom
            midstream_oom = not oom and self._midstream_ooms_left > 0
            self._midstream_ooms_left -= midstream_oom
        if oom:
            raise DeviceOutOfMemoryError(self.id, self.spec.options.get("device", "ram"), "generation",
                                         "scripted out-of-memory")
        trigger = self.spec.options.get("fail_on")
        if trigger and messages and trigger in messages[-1].content:
            raise GenerationError(self.id, f"scripted failure on {trigger!r}")
        words = reply.split(" ")
        for i, word in enumerate(words[: params.max_tokens]):
            if self._token_s:
                time.sleep(self._token_s)  # stands in for decoding a token
            self.tokens_streamed += 1
            text = word if i == 0 else " " + word
            for stop in params.stop:
                if stop in text:
                    yield Delta(text.split(stop)[0], "stop")
                    return
            yield Delta(text)
            if midstream_oom:
                raise DeviceOutOfMemoryError(self.id, self.spec.options.get("device", "ram"), "generation",
                                             "scripted out-of-memory after the first token")
        yield Delta("", "length" if len(words) > params.max_tokens else "stop")

    def score_choices(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        with self._lock:
            self.calls.append(list(messages))
        return {c: float(self._scores.get(c, -10.0)) for c in choices}

    def close(self) -> None:
        delay = float(self.spec.options.get("close_s", 0))
        if delay and self._memory is not None:
            time.sleep(delay)  # stands in for a slow teardown
        self._memory = None


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self) -> None:
        self._attempts: Counter = Counter()  # load attempts per model id (for ``oom_loads``)
        self._attempts_lock = threading.Lock()

    def estimate(self, spec: ModelSpec) -> MemoryEstimate:
        size = int(spec.options.get("size_bytes", MiB))
        device = spec.options.get("device", "ram")
        return MemoryEstimate(weights_bytes=size, kv_cache_bytes=0, overhead_bytes=0, device=device,
                              load_peak_bytes=int(spec.options.get("load_peak_bytes", 0)))

    def load(self, spec: ModelSpec) -> LoadedModel:
        delay = float(spec.options.get("load_s", 0))
        if delay:
            time.sleep(delay)  # stands in for reading weights
        with self._attempts_lock:
            self._attempts[spec.id] += 1
            attempt = self._attempts[spec.id]
        if attempt <= int(spec.options.get("oom_loads", 0)):
            device = spec.options.get("device", "ram")
            raise DeviceOutOfMemoryError(spec.id, device, "load", f"scripted out-of-memory on load attempt {attempt}")
        if spec.options.get("fail"):
            raise ModelLoadError(spec.id, spec.source.describe(), str(spec.options["fail"]))
        return ScriptedModel(spec)
