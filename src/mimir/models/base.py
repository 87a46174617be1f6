"""The backend interface every model implementation follows.

A :class:`Backend` knows how to *estimate* and *load* a :class:`~mimir.models.spec.ModelSpec`;
loading returns a :class:`LoadedModel`, which generates. The tutor only ever talks to
``LoadedModel``, so it does not care whether llama.cpp, transformers or a remote server
serves a role.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mimir.models.context import fit_messages
from mimir.models.spec import MemoryEstimate, ModelSpec

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: What to do when the input does not fit the context window: ``"trim"`` drops the
    #: oldest non-system messages (then truncates the last one, with a notice);
    #: ``"error"`` raises :class:`~mimir.errors.ContextOverflowError`.
    overflow: Literal["trim", "error"] = "trim"
    #: Repetition controls (llama.cpp semantics). ``repeat_penalty`` divides the logits of
    #: tokens seen in the last 64 tokens (1.0 = off); ``presence_penalty``
    #: and ``frequency_penalty`` subtract a flat and a per-occurrence amount (0.0 = off).
    #: The tutor's defaults were tuned on the bundled model (docs/math.md); backends without
    #: a control ignore it.
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: Generate ``max_tokens`` tokens even past the end-of-text token (benchmarks that need a
    #: fixed answer length; llama.cpp only, other backends ignore it).
    ignore_eos: bool = False


@dataclass(frozen=True)
class Delta:
    """One streamed piece of generated text (one token for local backends).

    A backend that knows the prompt's exact token count and how many of those tokens it
    really evaluated (the rest came from its prompt cache) sends them in a delta, usually
    the last one, with empty text.
    """

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    tokens_evaluated: int | None = None


@dataclass(frozen=True)
class ChoiceScores:
    """What :meth:`LoadedModel.score` returns: a log-probability per choice, and the prompt's
    token counts when the backend reports them."""

    scores: dict[str, float]
    tokens_in: int | None = None
    tokens_evaluated: int | None = None


@dataclass(frozen=True)
class Completion:
    model_id: str
    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str
    #: How many history messages the context guard dropped, and whether it cut a message.
    dropped_messages: int = 0
    truncated_input: bool = False
    #: Prompt tokens the engine actually evaluated (the others were reused from its prompt
    #: cache); None when the backend does not report it.
    tokens_evaluated: int | None = None


@dataclass
class GenerationStream:
    """Iterate for text pieces as they are generated; ``completion`` holds the totals after.

    ``tokens_in`` is known before the first piece arrives (the prompt is counted up front);
    a backend that reports the exact count replaces it in ``completion``. ``close()`` stops
    the generation early (the backend frees its slot); the completion then has the text so
    far and ``finish_reason == "cancelled"``. ``messages`` are the ones the model was given:
    what the context guard kept, a cut message ending with its notice.
    """

    model_id: str
    tokens_in: int
    dropped_messages: int
    truncated_input: bool
    _deltas: Iterator[Delta]
    messages: list[ChatMessage] = field(default_factory=list)
    _pieces: list[str] = field(default_factory=list)
    _finish_reason: str | None = None
    _done: bool = False
    _prompt_tokens: int | None = None
    _tokens_evaluated: int | None = None

    def __iter__(self) -> Iterator[str]:
        for delta in self._deltas:
            if delta.finish_reason:
                self._finish_reason = delta.finish_reason
            if delta.prompt_tokens is not None:
                self._prompt_tokens = delta.prompt_tokens
            if delta.tokens_evaluated is not None:
                self._tokens_evaluated = delta.tokens_evaluated
            if delta.text:
                self._pieces.append(delta.text)
                yield delta.text
        self._done = True

    def close(self) -> None:
        """Stop generating now (idempotent): the backend's generator is closed, releasing its
        locks or its slot; the completion keeps the text so far, finish reason ``cancelled``."""
        if not self._done:
            close = getattr(self._deltas, "close", None)
            if close is not None:
                close()
            self._done = True
            self._finish_reason = self._finish_reason or "cancelled"

    @property
    def tokens_evaluated(self) -> int | None:
        return self._tokens_evaluated

    @property
    def tokens_out(self) -> int:
        return len(self._pieces)

    @property
    def completion(self) -> Completion:
        if not self._done:
            for _ in self:
                pass
        return Completion(
            model_id=self.model_id,
            text="".join(self._pieces),
            tokens_in=self._prompt_tokens if self._prompt_tokens is not None else self.tokens_in,
            tokens_out=self.tokens_out,
            finish_reason=self._finish_reason or "stop",
            dropped_messages=self.dropped_messages,
            truncated_input=self.truncated_input,
            tokens_evaluated=self._tokens_evaluated,
        )


class LoadedModel(ABC):
    """A model in memory (or reachable), ready to generate."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def context_length(self) -> int:
        return self.spec.context_length

    @property
    def parallel(self) -> int:
        """Generations this model serves at once (slots); more wait inside the backend."""
        return 1

    # -- what each backend implements -------------------------------------------------
    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes for this model's tokenizer."""

    @abstractmethod
    def _generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[Delta]:
        """Stream the reply to messages that already fit the context window."""

    @abstractmethod
    def score_choices(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        """Log-probability of each choice as the assistant's reply to ``messages``.

        This is how decision agents get a constrained answer from a model without parsing
        free text: the choice with the highest score wins.
        """

    def score(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> ChoiceScores:
        """:meth:`score_choices` with the prompt's token counts, where the backend knows them."""
        return ChoiceScores(self.score_choices(messages, choices))

    def close(self) -> None:
        """Release the model's memory. Idempotent."""

    # -- shared behaviour ---------------------------------------------------------------
    def message_tokens(self, message: ChatMessage) -> int:
        """Tokens a message costs in a chat prompt, including its role markers (approx.)."""
        return self.count_tokens(message.content) + 6

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None) -> GenerationStream:
        params = params or GenerationParams()
        fitted = fit_messages(
            list(messages),
            context_length=self.context_length,
            reserve_tokens=params.max_tokens,
            count=self.message_tokens,
            model_id=self.id,
            overflow=params.overflow,
            truncate_text=self.truncate_text,
        )
        return GenerationStream(
            model_id=self.id,
            tokens_in=fitted.tokens,
            dropped_messages=fitted.dropped,
            truncated_input=fitted.truncated,
            _deltas=self._generate(fitted.messages, params),
            messages=list(fitted.messages),
        )

    def chat(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None) -> Completion:
        return self.stream(messages, params).completion

    def truncate_text(self, text: str, max_tokens: int) -> str:
        """Cut ``text`` to about ``max_tokens`` tokens (keeps the start)."""
        if max_tokens <= 0:
            return ""
        if self.count_tokens(text) <= max_tokens:
            return text
        lo, hi = 0, len(text)
        while lo < hi:  # binary search on characters; tokenizers are monotone enough
            mid = (lo + hi + 1) // 2
            if self.count_tokens(text[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo]


#: A choice absent from the top log-probabilities scores this many nats below the least
#: likely listed token.
ABSENT_MARGIN = 1.0


def scores_from_top_logprobs(top: Sequence[dict], choices: Sequence[str], margin: float = ABSENT_MARGIN) -> dict[str, float]:
    """Score each choice from the first answer token's top log-probabilities.

    A choice scores the best listed token that begins it (stripped of spaces); a choice no
    listed token begins scores the lowest listed log-probability minus ``margin``.
    """
    best: dict[str, float] = {}
    for item in top:
        token = str(item.get("token", "")).strip()
        logprob = float(item.get("logprob", -math.inf))
        if token:
            best[token] = max(best.get(token, -math.inf), logprob)
    floor = (min(best.values()) if best else 0.0) - margin
    scores: dict[str, float] = {}
    for choice in choices:
        matches = [lp for tok, lp in best.items() if choice.strip().startswith(tok)]
        scores[choice] = max(matches) if matches else floor
    return scores


class Backend(ABC):
    """Knows how to estimate and load one kind of model. Registered by name."""

    name: str = ""

    def validate(self, spec: ModelSpec) -> None:
        """Check a spec at config time (cheap; no loading). Raise ConfigError if invalid."""

    def parallel(self, spec: ModelSpec) -> int:
        """Generations a loaded ``spec`` serves at once (its slots), known without loading."""
        return 1

    @abstractmethod
    def estimate(self, spec: ModelSpec) -> MemoryEstimate:
        """Predict the memory a load would take, without reading the weights."""

    @abstractmethod
    def load(self, spec: ModelSpec) -> LoadedModel:
        """Load the weights. Raises ModelLoadError naming the file and the cause."""
