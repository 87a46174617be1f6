"""Where step records go: a log line, the SQLite store, and (optionally) trackio.

A sink gets ``on_step`` for every finished step, ``on_turn`` for every finished turn, and
``on_event`` for model-manager events that happened outside any step (a keep-alive unload, a
``mimir models --load``). Sinks that do I/O (:class:`SqliteSink`, :class:`TrackioSink`) hand
the work to their own writer thread through a queue, so the generating thread only pays for
a ``queue.put``; ``flush()`` waits for the queue, and ``close()`` (also registered with
``atexit``) drains it, so a normal shutdown loses nothing.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from mimir.errors import MissingExtraError
from mimir.core.records import StepRecord, TurnRecord
from mimir.units import format_bytes, format_delta_bytes

if TYPE_CHECKING:
    from mimir.core.events import ModelEvent
    from mimir.storage.spool import Spool
    from mimir.storage.telemetry_store import TelemetryStore

log = logging.getLogger("mimir.telemetry")


class Sink:
    """Base sink: every hook does nothing."""

    def on_step(self, record: StepRecord) -> None:
        return None

    def on_turn(self, record: TurnRecord) -> None:
        return None

    def on_event(self, event: ModelEvent) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def format_step_line(record: StepRecord) -> str:
    """``step=routing agent=agent_2 model=default 0.21s rss=212.0MiB (+3.0MiB) peak=230.0MiB gpu=- loads=0 evictions=0``"""
    parts = [f"step={record.name}"]
    if record.agent:
        parts.append(f"agent={record.agent}")
    parts.append(f"model={record.model or '-'}")
    parts.append(f"{record.wall_s:.2f}s")
    parts.append(f"rss={format_bytes(record.rss_after_bytes)} ({format_delta_bytes(record.rss_delta_bytes)})")
    parts.append(f"peak={format_bytes(record.rss_peak_bytes)}")
    parts.append(f"gpu={record.gpu_str}")
    if record.tokens_in is not None or record.tokens_out is not None:
        parts.append(f"tokens={record.tokens_in or 0}/{record.tokens_out or 0}")
    if record.tokens_evaluated is not None:
        parts.append(f"evaluated={record.tokens_evaluated}")
    parts.append(f"loads={record.loads} evictions={record.evictions}")
    if record.unloads:
        parts.append(f"unloads={record.unloads}")
    if record.turn_id:
        parts.append(f"turn={record.turn_id}")
    if record.error:
        parts.append(f"error={record.error!r}")
    return " ".join(parts)


class LogSink(Sink):
    """One INFO line per step on the ``mimir.telemetry`` logger."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO):
        self.logger = logger or log
        self.level = level

    def on_step(self, record: StepRecord) -> None:
        if self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, "%s", format_step_line(record))


_STOP = object()


class QueuedSink(Sink):
    """A sink whose writes run on one writer thread, in the order they were given."""

    thread_name = "mimir-telemetry-writer"
    #: Most queued items the writer takes at once.
    max_batch = 256

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._state_lock = threading.Lock()
        self._closed = False
        self._warned_closed = False
        #: Items whose write raised (each one logged).
        self.failed_writes = 0
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _put(self, item: Any) -> None:
        with self._state_lock:
            if self._closed:
                if not self._warned_closed:
                    self._warned_closed = True
                    log.warning("%s is closed; telemetry records after close are not written", type(self).__name__)
                return
            self._queue.put(item)

    def on_step(self, record: StepRecord) -> None:
        self._put(("step", record))

    def on_turn(self, record: TurnRecord) -> None:
        self._put(("turn", record))

    def on_event(self, event: ModelEvent) -> None:
        self._put(("event", event))

    def _write(self, kind: str, item: Any) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Called on the writer thread after the last item (release resources)."""

    def _write_batch(self, items: list[tuple[str, Any]]) -> None:
        """Write items that were waiting together; by default one by one."""
        for item in items:
            self._write_one(item)

    def _write_one(self, item: tuple[str, Any]) -> None:
        try:
            self._write(*item)
        except Exception:
            self.failed_writes += 1
            log.exception("%s could not write a telemetry %s record", type(self).__name__, item[0])

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            try:
                items = [item for item in batch if item is not _STOP]
                if items:
                    self._write_batch(items)
                if stop:
                    self._finish()
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def flush(self) -> None:
        if self._thread.is_alive():
            self._queue.join()

    def close(self) -> None:
        """Write everything queued, then stop the writer thread. Idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not threading.current_thread():
            self._thread.join()
        atexit.unregister(self.close)


class SqliteSink(QueuedSink):
    """Stores records in the SQLite database (see :mod:`mimir.storage.telemetry_store`).

    A step inside a turn is written with its turn, in one transaction, when the turn ends,
    so concurrent turns never interleave; a step outside any turn is written on its own.
    Records that queued up while the writer was busy share one transaction.
    """

    thread_name = "mimir-telemetry-sqlite"

    def __init__(self, store: TelemetryStore, spool: Spool | None = None):
        self.store = store
        #: Where a turn or step goes when the database refuses it (replayed at the next start).
        self.spool = spool
        super().__init__()

    def _write_one(self, item: tuple[str, Any]) -> None:
        kind, record = item
        try:
            self._write(kind, record)
        except Exception as exc:
            self.failed_writes += 1
            if self.spool is None or kind == "event":
                log.exception("%s could not write a telemetry %s record", type(self).__name__, kind)
                return
            log.warning("telemetry %s record not stored (%s); it goes to the spool", kind, exc)
            try:
                self.spool.add_telemetry(record, error=str(exc))
            except OSError:
                log.exception("the spool cannot keep a telemetry %s record either", kind)

    def on_step(self, record: StepRecord) -> None:
        if record.turn_id is None:
            self._put(("step", record))

    def _write_batch(self, items: list[tuple[str, Any]]) -> None:
        """Items that queued up together go in one transaction; if it fails, one by one."""
        if len(items) > 1:
            try:
                with self.store.db.write():
                    for item in items:
                        self._write(*item)
                return
            except Exception:
                log.warning("a batch of %d telemetry records failed; writing them one by one", len(items))
        super()._write_batch(items)

    def _write(self, kind: str, item: Any) -> None:
        if kind == "step":
            self.store.save_step(item)
        elif kind == "turn":
            self.store.save_turn(item)
        elif kind == "event":
            self.store.save_event(item)


class TrackioSink(QueuedSink):
    """Logs per-step metrics to a trackio project (``pip install 'mimir-tutor[trackio]'``).

    Metric names are ``<step name>/<metric>``; sizes are in MiB (``*_mib``).
    """

    thread_name = "mimir-telemetry-trackio"

    def __init__(self, project: str, *, run_name: str | None = None, config: dict[str, Any] | None = None):
        try:
            import trackio
        except ImportError:
            raise MissingExtraError("trackio", "trackio", "exporting telemetry to trackio") from None
        self.project = project
        self._trackio = trackio
        self._trackio_run = trackio.init(project=project, name=run_name, config=dict(config or {}))
        super().__init__()

    def on_turn(self, record: TurnRecord) -> None:
        self._put(("turn", record))

    def _write(self, kind: str, item: Any) -> None:
        if kind == "step":
            self._trackio_run.log(step_metrics(item))
        elif kind == "turn":
            self._trackio_run.log(turn_metrics(item))

    def _finish(self) -> None:
        try:
            self._trackio_run.finish()
        except Exception:
            log.exception("trackio finish failed")


_MIB = 1024 * 1024


def _mib(n: int | None) -> float | None:
    return None if n is None else n / _MIB


def step_metrics(record: StepRecord) -> dict[str, float]:
    """The numbers of one step, keyed ``<step>/<metric>``, Nones left out."""
    values = {
        "wall_s": record.wall_s,
        "rss_after_mib": _mib(record.rss_after_bytes),
        "rss_peak_mib": _mib(record.rss_peak_bytes),
        "rss_delta_mib": _mib(record.rss_delta_bytes),
        "cuda_peak_allocated_mib": _mib(record.cuda_peak_allocated_bytes),
        "gpu_used_mib": _mib(record.gpu_used_after_bytes),
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "tokens_evaluated": record.tokens_evaluated,
        "loads": record.loads,
        "evictions": record.evictions,
    }
    return {f"{record.name}/{k}": float(v) for k, v in values.items() if v is not None}


def turn_metrics(record: TurnRecord) -> dict[str, float]:
    values = {
        "turn/wall_s": record.wall_s,
        "turn/peak_rss_mib": _mib(record.peak_rss_bytes),
        "turn/cuda_peak_allocated_mib": _mib(record.cuda_peak_allocated_bytes),
        "turn/steps": len(record.steps),
    }
    return {k: float(v) for k, v in values.items() if v is not None}
