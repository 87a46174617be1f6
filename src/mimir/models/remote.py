"""Remote backend: a model served by an OpenAI-compatible server (vLLM, TGI, Ollama, the
llama.cpp server, or another Mimir's ``/v1`` API).

This is how Mimir scales beyond one machine: a role points at a server instead of loading a
model in-process. The model's memory lives on that server, so it costs nothing in this
process's budget (estimate 0) and is never evicted for room.

Config::

    [models.big]
    backend = "openai"
    url = "http://gpu-box:8000/v1"       # the server's OpenAI base URL
    options = { model = "meta-llama/Llama-3.2-3B-Instruct", api_key_env = "BIG_API_KEY", timeout_s = 120 }

``timeout_s`` bounds each read and the connection; ``deadline_s`` (default 300) bounds a
whole generation, and no more than ``max_tokens`` streamed pieces are read, whatever the
server does.

``score_choices`` asks the server for the log-probabilities of the first answer token
(``logprobs`` + ``top_logprobs``; see :func:`~mimir.models.base.scores_from_top_logprobs` for
a choice the server does not list); a server that does not return them raises a clear error
(use the ``rules`` decider with such a server). Token counts are estimated locally
(about 3.5 characters a token) since the chat API has no tokenizer endpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence

from mimir.errors import ConfigError, GenerationError, ModelLoadError, TurnTimeoutError
from mimir.models.base import Backend, ChatMessage, Delta, GenerationParams, LoadedModel, scores_from_top_logprobs
from mimir.models.spec import MemoryEstimate, ModelSpec

CHARS_PER_TOKEN = 3.5
#: A whole generation, however the server paces it (``options.deadline_s``).
DEFAULT_DEADLINE_S = 300.0
#: Longest line an event stream may send (a server streaming one endless line is broken).
MAX_LINE_CHARS = 1024 * 1024


def _sse_lines(texts: Iterator[str], url: str, model_id: str) -> Iterator[str]:
    """Lines of an event stream, each at most ``MAX_LINE_CHARS`` (longer: GenerationError)."""
    buffer = ""
    for text in texts:
        buffer += text
        while True:
            cut = buffer.find("\n")
            if cut < 0:
                break
            yield buffer[:cut].rstrip("\r")
            buffer = buffer[cut + 1 :]
        if len(buffer) > MAX_LINE_CHARS:
            raise GenerationError(model_id, f"{url} sent a line longer than {MAX_LINE_CHARS:,} characters")
    if buffer:
        yield buffer.rstrip("\r")


def _httpx():
    import httpx  # a core dependency, imported on use to keep ``import mimir`` light

    return httpx


class RemoteModel(LoadedModel):
    def __init__(self, spec: ModelSpec, client, model_name: str):
        super().__init__(spec)
        self._client = client
        self.model_name = model_name
        self.base_url = spec.source.value.rstrip("/")
        self.deadline_s = float(spec.options.get("deadline_s", DEFAULT_DEADLINE_S))

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0

    def _body(self, messages: Sequence[ChatMessage], params: GenerationParams, **extra) -> dict:
        body = {
            "model": self.model_name,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        body.update(extra)
        return body

    def _error(self, response) -> GenerationError:
        try:
            detail = response.json().get("error", {})
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
        except (ValueError, AttributeError):
            message = response.text[:300]
        return GenerationError(self.id, f"{self.base_url} answered HTTP {response.status_code}: {message}")

    def _generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[Delta]:
        """Stream from the server, trusting nothing: a 200 that is not an event stream, a line
        that is not SSE, an event that is not a chunk, a stream that ends without ``[DONE]``,
        one longer than ``deadline_s`` or one that goes past ``max_tokens`` (a server that
        ignores it) each end the generation with an error naming the server, or at the cap."""
        httpx = _httpx()
        url = f"{self.base_url}/chat/completions"
        deadline = time.monotonic() + self.deadline_s
        pieces = 0
        try:
            with self._client.stream("POST", url, json=self._body(messages, params, stream=True)) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._error(response)
                kind = response.headers.get("content-type", "")
                if not kind.startswith("text/event-stream"):
                    sample = next(response.iter_text(), "")[:200]
                    raise GenerationError(self.id, f"{url} answered 200 with {kind or 'no content type'}, not a stream "
                                                   f"of server-sent events: {sample!r}")
                finished = False
                for line in _sse_lines(response.iter_text(), url, self.id):
                    if time.monotonic() > deadline:
                        raise TurnTimeoutError(f"the model server {self.base_url}", self.deadline_s)
                    if not line or line.startswith((":", "event:", "id:", "retry:")):
                        continue
                    if not line.startswith("data:"):
                        raise GenerationError(self.id, f"{url} sent a line that is not a server-sent event: {line[:120]!r}")
                    data = line[5:].strip()
                    if data == "[DONE]":
                        finished = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise GenerationError(self.id, f"{url} sent a malformed stream event: {data[:120]}") from None
                    if not isinstance(chunk, dict):
                        raise GenerationError(self.id, f"{url} sent an event that is not a chunk object: {data[:120]}")
                    if "error" in chunk:
                        raise GenerationError(self.id, f"{url}: {chunk['error']}")
                    choices = chunk.get("choices")
                    if not choices:
                        continue
                    choice = choices[0] if isinstance(choices, list) and isinstance(choices[0], dict) else None
                    if choice is None:
                        raise GenerationError(self.id, f"{url} sent a chunk without a choice object: {data[:120]}")
                    text = (choice.get("delta") or {}).get("content") or ""
                    if not isinstance(text, str):
                        raise GenerationError(self.id, f"{url} sent content that is not text: {data[:120]}")
                    if choice.get("finish_reason"):
                        finished = True
                    if text:
                        pieces += 1
                        if pieces > params.max_tokens:  # the server ignores max_tokens: stop reading
                            yield Delta("", "length")
                            return
                    yield Delta(text, choice.get("finish_reason"))
                if not finished:
                    raise GenerationError(self.id, f"the stream from {url} ended early (no [DONE] and no finish reason)")
        except httpx.HTTPError as exc:
            raise GenerationError(self.id, f"cannot reach {url}: {type(exc).__name__}: {exc}") from None

    def score_choices(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        httpx = _httpx()
        url = f"{self.base_url}/chat/completions"
        params = GenerationParams(max_tokens=1, temperature=0.0)
        body = self._body(messages, params, logprobs=True, top_logprobs=20)
        try:
            response = self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise GenerationError(self.id, f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise self._error(response)
        try:
            content = response.json()["choices"][0]["logprobs"]["content"]
            top = content[0]["top_logprobs"]
        except (KeyError, IndexError, TypeError, ValueError):
            raise GenerationError(
                self.id,
                f"{url} returned no token log-probabilities; this server cannot answer model "
                "decisions (use the rules decider for this role)",
            ) from None
        return scores_from_top_logprobs(top, choices)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RemoteBackend(Backend):
    name = "openai"

    def validate(self, spec: ModelSpec) -> None:
        if spec.source.kind != "url":
            raise ConfigError(f"models.{spec.id}", "the openai backend needs url = 'http://host:port/v1'")

    def estimate(self, spec: ModelSpec) -> MemoryEstimate:
        self.validate(spec)
        return MemoryEstimate(weights_bytes=0, kv_cache_bytes=0, overhead_bytes=0, device="ram")

    def load(self, spec: ModelSpec) -> LoadedModel:
        """Connect and check that the server lists the model (when it lists models at all)."""
        httpx = _httpx()
        self.validate(spec)
        base = spec.source.value.rstrip("/")
        headers = {}
        key_env = spec.options.get("api_key_env")
        if key_env:
            key = os.environ.get(str(key_env))
            if not key:
                raise ModelLoadError(spec.id, base, f"environment variable {key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        client = httpx.Client(headers=headers, timeout=float(spec.options.get("timeout_s", 120)))
        model_name = str(spec.options.get("model", spec.id))
        try:
            response = client.get(f"{base}/models")
        except httpx.HTTPError as exc:
            client.close()
            raise ModelLoadError(spec.id, base, f"server unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code == 200:
            try:
                served = [m["id"] for m in response.json().get("data", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                served = []
            if served and model_name not in served:
                client.close()
                raise ModelLoadError(
                    spec.id, base, f"the server does not serve '{model_name}' (it serves: {', '.join(served)})"
                )
        elif response.status_code in (401, 403):
            client.close()
            raise ModelLoadError(spec.id, base, f"the server refused the credentials (HTTP {response.status_code})")
        return RemoteModel(spec, client, model_name)
