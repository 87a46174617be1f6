"""The recorder: turns and steps as context managers, measured by probes, sent to sinks.

Use::

    telemetry = Telemetry(sinks=[LogSink(), SqliteSink(TelemetryStore(db))])
    telemetry.attach(manager)              # the manager's events go to the current step
    with telemetry.turn(session_id="s1", turn_id="t1") as turn:
        with telemetry.step("routing", agent="agent_2", model="default") as step:
            step.add_tokens(tokens_in=12, tokens_out=3)
    turn.record                            # frozen TurnRecord with its StepRecords in order

The current turn and step live in context variables, so turns running in different threads
never mix their steps or events (a thread pool that should count as part of a turn must run
its work in ``contextvars.copy_context()``). Steps opened outside a turn still record, with
``turn_id`` None. Telemetry never calls the model manager: it only listens to its events,
which the manager delivers in the thread that caused them.

Cost: a step takes two readings of every probe, one sampler window and one record; the RSS
peak sampler is a single shared thread (:mod:`mimir.telemetry.sampler`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from mimir.errors import MimirError
from mimir.telemetry.probes import Probe, ProcessProbe, default_probes
from mimir.core.records import StepRecord, TurnRecord
from mimir.telemetry.sampler import PeakSampler

if TYPE_CHECKING:
    from mimir.core.events import ModelEvent
    from mimir.runtime.manager import ModelManager
    from mimir.telemetry.sinks import Sink

log = logging.getLogger("mimir.telemetry")

DEFAULT_SAMPLE_INTERVAL_S = 0.01


def _max(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


class Telemetry:
    """Measures steps and turns and hands their records to sinks. Thread-safe."""

    def __init__(
        self,
        probes: Sequence[Probe] | None = None,
        sinks: Iterable[Sink] = (),
        *,
        sample_interval_s: float | None = DEFAULT_SAMPLE_INTERVAL_S,
    ):
        self.probes: list[Probe] = list(default_probes() if probes is None else probes)
        self.sinks: list[Sink] = list(sinks)
        process = next((p for p in self.probes if isinstance(p, ProcessProbe)), None)
        self.sampler: PeakSampler | None = None
        if process is not None and sample_interval_s:
            self.sampler = PeakSampler(process.rss, sample_interval_s)
        self._step_var: ContextVar[StepRecorder | None] = ContextVar(f"mimir_step_{id(self):x}", default=None)
        self._turn_var: ContextVar[TurnRecorder | None] = ContextVar(f"mimir_turn_{id(self):x}", default=None)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._open_lock = threading.Lock()
        self._open_steps = 0
        self._unsubscribe: list[Any] = []
        self._closed = False

    # -- public API ----------------------------------------------------------------------
    def attach(self, manager: ModelManager) -> None:
        """Receive the manager's load/evict/unload events (the manager is never called)."""
        self._unsubscribe.append(manager.subscribe(self._on_event))

    def add_sink(self, sink: Sink) -> None:
        """Send records to one more sink from now on (the server adds its metrics this way)."""
        if self._closed:
            raise MimirError("telemetry is closed")
        self.sinks = [*self.sinks, sink]  # a new list: a concurrent _emit keeps iterating the old one

    def step(self, name: str, *, agent: str | None = None, model: str | None = None) -> StepRecorder:
        """A context manager that measures one step; yields a :class:`StepRecorder`."""
        return StepRecorder(self, name, agent=agent, model=model)

    def turn(self, *, session_id: str | None = None, turn_id: str | None = None) -> TurnRecorder:
        """A context manager that groups the steps opened inside it (in this context)."""
        return TurnRecorder(self, session_id=session_id, turn_id=turn_id)

    @property
    def current_step(self) -> StepRecorder | None:
        return self._step_var.get()

    @property
    def current_turn(self) -> TurnRecorder | None:
        return self._turn_var.get()

    def flush(self) -> None:
        """Wait until every sink has written what it was given."""
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        """Stop listening, stop the sampler, flush and close the sinks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.sampler is not None:
            self.sampler.shutdown()
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing telemetry sink %s failed", type(sink).__name__)
        for probe in self.probes:
            probe.close()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _read(self, phase: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for probe in self.probes:
            out.update(probe.read(phase))  # type: ignore[arg-type]
        return out

    def _open_window(self) -> tuple[Mapping[str, Any], Any]:
        """Readings at the start of a step or turn, and a sampler window for its peak."""
        before = self._read("before")
        rss = before.get("rss_bytes")
        window = self.sampler.open(rss) if self.sampler is not None and rss is not None else None
        return before, window

    def _close_window(
        self, before: Mapping[str, Any], window: Any, *peaks: int | None
    ) -> tuple[dict[str, Any], int | None]:
        """Readings at the end, and the peak RSS: the highest of the readings, the sampled
        peak, ``peaks``, and the kernel's high-water mark when it rose inside the window."""
        after = self._read("after")
        sampled = None
        if window is not None and self.sampler is not None:
            closed = self.sampler.close(window)
            sampled = closed.peak_bytes if closed is not None else None
        peak = _max(before.get("rss_bytes"), after.get("rss_bytes"), sampled, *peaks)
        hwm_before, hwm_after = before.get("maxrss_bytes"), after.get("maxrss_bytes")
        if hwm_before is not None and hwm_after is not None and hwm_after > hwm_before:
            # The process set a new all-time high during the window: that high is the peak.
            peak = _max(peak, hwm_after)
        return after, peak

    def _on_event(self, event: ModelEvent) -> None:
        step = self._step_var.get()
        if step is not None:
            step._events.append(event)
        else:
            self._emit("on_event", event)

    def _emit(self, method: str, item: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(item)
            except Exception:
                log.exception("telemetry sink %s failed", type(sink).__name__)


class StepRecorder:
    """An open step. ``add_tokens`` and ``set_model`` while open; ``record`` after."""

    __slots__ = (
        "_telemetry",
        "name",
        "agent",
        "model",
        "_turn",
        "_seq",
        "_events",
        "_tokens_in",
        "_tokens_out",
        "_tokens_evaluated",
        "_before",
        "_started_at",
        "_t0",
        "_window",
        "_token",
        "record",
    )

    def __init__(self, telemetry: Telemetry, name: str, *, agent: str | None, model: str | None):
        if not name:
            raise MimirError("a telemetry step needs a name")
        self._telemetry = telemetry
        self.name = name
        self.agent = agent
        self.model = model
        self._events: list[ModelEvent] = []
        self._tokens_in: int | None = None
        self._tokens_out: int | None = None
        self._tokens_evaluated: int | None = None
        self._window: int | None = None
        self.record: StepRecord | None = None

    def add_tokens(self, tokens_in: int = 0, tokens_out: int = 0, tokens_evaluated: int | None = None) -> None:
        """Add a model call's tokens; ``tokens_evaluated`` (prompt tokens the engine really
        evaluated) only when the backend reports it."""
        self._tokens_in = (self._tokens_in or 0) + int(tokens_in)
        self._tokens_out = (self._tokens_out or 0) + int(tokens_out)
        if tokens_evaluated is not None:
            self._tokens_evaluated = (self._tokens_evaluated or 0) + int(tokens_evaluated)

    def set_model(self, model: str | None) -> None:
        self.model = model

    @property
    def events(self) -> tuple[ModelEvent, ...]:
        return tuple(self._events)

    @property
    def rss_peak_bytes(self) -> int | None:
        """The highest RSS seen so far in this open step (sampled)."""
        before = getattr(self, "_before", None)
        if before is None:
            return None
        sampler = self._telemetry.sampler
        live = sampler.peak(self._window) if sampler is not None and self._window is not None else None
        return _max(live, before.get("rss_bytes"))

    def __enter__(self) -> StepRecorder:
        tel = self._telemetry
        self._turn = tel._turn_var.get()
        self._seq = self._turn._next_seq() if self._turn is not None else 0
        with tel._open_lock:
            tel._open_steps += 1
            first_open = tel._open_steps == 1
        for probe in tel.probes:
            probe.begin(first_open=first_open)
        self._before, self._window = tel._open_window()
        self._token = tel._step_var.set(self)
        self._started_at = time.time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        wall_s = time.perf_counter() - self._t0
        tel = self._telemetry
        before = self._before
        after, peak = tel._close_window(before, self._window)
        tel._step_var.reset(self._token)
        with tel._open_lock:
            tel._open_steps -= 1
        rss_before = before.get("rss_bytes")
        rss_after = after.get("rss_bytes")
        self.record = record = StepRecord(
            step_id=tel._new_id(),
            name=self.name,
            agent=self.agent,
            model=self.model,
            session_id=self._turn.session_id if self._turn is not None else None,
            turn_id=self._turn.turn_id if self._turn is not None else None,
            seq=self._seq,
            started_at=self._started_at,
            wall_s=wall_s,
            tokens_in=self._tokens_in,
            tokens_out=self._tokens_out,
            tokens_evaluated=self._tokens_evaluated,
            rss_before_bytes=rss_before,
            rss_after_bytes=rss_after,
            rss_peak_bytes=peak,
            system_available_bytes=after.get("system_available_bytes"),
            cuda_allocated_before_bytes=before.get("cuda_allocated_bytes"),
            cuda_allocated_after_bytes=after.get("cuda_allocated_bytes"),
            cuda_reserved_after_bytes=after.get("cuda_reserved_bytes"),
            cuda_peak_allocated_bytes=after.get("cuda_peak_allocated_bytes"),
            gpu_used_before_bytes=before.get("gpu_used_bytes"),
            gpu_used_after_bytes=after.get("gpu_used_bytes"),
            gpu_total_bytes=after.get("gpu_total_bytes"),
            gpu_devices=after.get("gpu_devices", ()),
            events=tuple(self._events),
            error=None if exc_type is None else f"{exc_type.__name__}: {exc}",
        )
        if self._turn is not None:
            self._turn._add(record)
        tel._emit("on_step", record)


class TurnRecorder:
    """An open turn. ``steps`` while open; ``record`` (a frozen TurnRecord) after."""

    def __init__(self, telemetry: Telemetry, *, session_id: str | None, turn_id: str | None):
        self._telemetry = telemetry
        self.session_id = session_id
        self.turn_id = turn_id or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._steps: list[StepRecord] = []
        self._seq = itertools.count()
        self._window: int | None = None
        self.record: TurnRecord | None = None

    @property
    def steps(self) -> tuple[StepRecord, ...]:
        """The finished steps so far, in the order they were opened."""
        with self._lock:
            return tuple(sorted(self._steps, key=lambda s: s.seq))

    def _next_seq(self) -> int:
        return next(self._seq)

    def _add(self, record: StepRecord) -> None:
        with self._lock:
            self._steps.append(record)

    def __enter__(self) -> TurnRecorder:
        tel = self._telemetry
        if tel._turn_var.get() is not None:
            raise MimirError("a telemetry turn is already open in this context; turns do not nest")
        self._before, self._window = tel._open_window()
        self._token = tel._turn_var.set(self)
        self._started_at = time.time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        wall_s = time.perf_counter() - self._t0
        tel = self._telemetry
        tel._turn_var.reset(self._token)
        steps = self.steps
        _, peak = tel._close_window(self._before, self._window, *(s.rss_peak_bytes for s in steps))
        self.record = record = TurnRecord(
            session_id=self.session_id,
            turn_id=self.turn_id,
            started_at=self._started_at,
            wall_s=wall_s,
            steps=steps,
            peak_rss_bytes=peak,
            cuda_peak_allocated_bytes=_max(*(s.cuda_peak_allocated_bytes for s in steps)),
            error=None if exc_type is None else f"{exc_type.__name__}: {exc}",
        )
        tel._emit("on_turn", record)
