"""The one door to a model: every generation and every choice scoring goes through a Runner.

Tutor steps (decisions, thinking, response, the graph tool's data), the API's plain chat
completions and evaluations all call :meth:`Runner.generate` / :meth:`Runner.score` (or
open a :meth:`Runner.session` for several calls under one lease). The runner owns:

- **the lease**: ``manager.use(model_id)`` around the work, released as soon as the work
  ends, is cancelled or fails;
- **the "load starting" event**: when this call is the one that loads the model, the
  ``on_load`` callback gets a :class:`LoadStarting` (model id and estimate) just before the
  weights are read. It comes from the manager at the moment it takes the load, not from a
  guess on a status snapshot;
- **the out-of-memory policy**: a :class:`~mimir.errors.DeviceOutOfMemoryError` evicts the
  idle models on that device and retries once, but only while no token has reached the
  caller; after the first token it fails (a retry would repeat text the caller already has);
- **token accounting**: ``tokens_in``, ``tokens_out`` and ``tokens_evaluated`` (the prompt
  tokens the engine really evaluated; the rest came from its prompt cache) go into the
  telemetry step, when one is given;
- **the context guard**: the model fits the messages to its window
  (:func:`~mimir.models.context.fit_messages`); the runner logs what it dropped;
- **cancellation**: ``cancel`` (a callable returning True, or a ``threading.Event``) is
  checked before the lease and at every token; when set, generation stops within one token,
  the engine frees its slot, the lease is released and :class:`~mimir.errors.TurnCancelledError`
  is raised. ``cancel`` may also raise its own error to stop (a turn's
  :meth:`~mimir.runtime.admission.TurnControl.check`: cancelled, or past its deadline).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from mimir.errors import DeviceOutOfMemoryError, TurnCancelledError
from mimir.models.base import ChatMessage, ChoiceScores, Completion, GenerationParams, LoadedModel
from mimir.runtime.manager import ModelManager

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadStarting:
    """This call is about to load ``model_id`` (the weights are not read yet)."""

    model_id: str
    estimate_bytes: int
    device: str


class _Step(Protocol):  # the part of telemetry's StepRecorder the runner uses
    def set_model(self, model_id: str | None) -> None: ...

    def add_tokens(self, tokens_in: int = 0, tokens_out: int = 0, tokens_evaluated: int | None = None) -> None: ...


Cancel = Callable[[], bool] | threading.Event | None


def _cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class RunnerSession:
    """A model under one lease; from :meth:`Runner.session`."""

    def __init__(self, runner: Runner, model: LoadedModel, step: _Step | None):
        self._runner = runner
        self.model = model
        self._step = step

    @property
    def model_id(self) -> str:
        return self.model.id

    def generate(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_token: Callable[[str], None] | None = None,
        cancel: Cancel = None,
    ) -> Completion:
        params = params or GenerationParams()
        delivered = [0]
        try:
            completion = self._stream(messages, params, on_token, cancel, delivered)
        except DeviceOutOfMemoryError as exc:
            if delivered[0]:
                raise  # the caller already has text: a retry would repeat it
            evicted = self._runner.manager.evict_idle(
                f"out of {exc.device} memory while '{self.model_id}' generated", device=exc.device
            )
            log.warning("out of %s memory in %s; evicted %s and retrying once", exc.device, self.model_id, evicted)
            completion = self._stream(messages, params, on_token, cancel, delivered)
        if completion.truncated_input or completion.dropped_messages:
            log.info(
                "context guard on %s: dropped %d message(s), truncated=%s",
                self.model_id,
                completion.dropped_messages,
                completion.truncated_input,
            )
        if self._step is not None:
            self._step.add_tokens(
                tokens_in=completion.tokens_in,
                tokens_out=completion.tokens_out,
                tokens_evaluated=completion.tokens_evaluated,
            )
        return completion

    def _stream(self, messages, params, on_token, cancel, delivered: list[int]) -> Completion:
        if _cancelled(cancel):
            raise TurnCancelledError(f"generation on model '{self.model_id}' was cancelled before it started")
        stream = self.model.stream(messages, params)
        try:
            for piece in stream:
                if _cancelled(cancel):
                    stream.close()
                    raise TurnCancelledError(
                        f"generation on model '{self.model_id}' was cancelled after {delivered[0]} token(s)"
                    )
                delivered[0] += 1
                if on_token is not None:
                    on_token(piece)
        finally:
            stream.close()  # a no-op after a finished stream; frees the slot after an error
        return stream.completion

    def score(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        try:
            scored: ChoiceScores = self.model.score(messages, choices)
        except DeviceOutOfMemoryError as exc:
            self._runner.manager.evict_idle(f"out of {exc.device} memory while '{self.model_id}' scored",
                                            device=exc.device)
            scored = self.model.score(messages, choices)
        if self._step is not None and scored.tokens_in is not None:
            self._step.add_tokens(tokens_in=scored.tokens_in, tokens_out=0, tokens_evaluated=scored.tokens_evaluated)
        return scored.scores


class Runner:
    """Generate and score through the manager: leases, load events, OOM policy, accounting."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    @contextmanager
    def session(
        self,
        model_id: str,
        *,
        step: _Step | None = None,
        on_load: Callable[[LoadStarting], None] | None = None,
        cancel: Cancel = None,
    ) -> Iterator[RunnerSession]:
        """Lease ``model_id`` (loading it if needed) for several calls."""
        if step is not None:
            step.set_model(model_id)
        if _cancelled(cancel):
            raise TurnCancelledError(f"generation on model '{model_id}' was cancelled before it started")

        def load_starting(estimate) -> None:
            if on_load is not None:
                on_load(LoadStarting(model_id, estimate.total_bytes, estimate.device))

        with self.manager.use(model_id, on_load_start=load_starting) as model:
            yield RunnerSession(self, model, step)

    def generate(
        self,
        model_id: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_token: Callable[[str], None] | None = None,
        step: _Step | None = None,
        cancel: Cancel = None,
        on_load: Callable[[LoadStarting], None] | None = None,
    ) -> Completion:
        """Stream a reply from ``model_id`` to ``on_token`` and return the totals."""
        with self.session(model_id, step=step, on_load=on_load, cancel=cancel) as session:
            return session.generate(messages, params, on_token=on_token, cancel=cancel)

    def score(
        self,
        model_id: str,
        messages: Sequence[ChatMessage],
        choices: Sequence[str],
        *,
        step: _Step | None = None,
        on_load: Callable[[LoadStarting], None] | None = None,
    ) -> dict[str, float]:
        """Log-probability of each choice as ``model_id``'s reply to ``messages``."""
        with self.session(model_id, step=step, on_load=on_load) as session:
            return session.score(messages, choices)
