"""The model manager: lazy, shared, sequential, budgeted model loading.

Use::

    manager = ModelManager.from_settings(settings)
    with manager.use("default") as model:       # loads on first use, then shares
        print(model.chat([ChatMessage("user", "hi")]).text)

Rules it keeps:

- **lazy**: nothing loads until a ``use()``; **shared**: one instance per model id, whatever
  number of roles or threads use it;
- **sequential**: at most one load at a time; a thread asking for a model that is loading
  waits for that load (never a second copy); a failed load fails its waiters too;
- **estimate before load**: the backend's estimate is checked against the budget before any
  memory is spent; a model that cannot fit even alone raises ``BudgetExceededError``;
- **eviction**: idle (not in use, not pinned) models go least-recently-used first until the
  new model fits; models in use are waited for (up to ``load_timeout_s``), never evicted;
  when every lease in the way belongs to threads that wait for memory themselves (A holds a
  and wants d while B holds c and wants e), the thread that closes that circle fails at once
  instead of everyone waiting out the timeout; its leases end and the others go on;
- **no fallback**: a failed load raises ``ModelLoadError`` naming the source and the cause;
- **out of memory**: a ``DeviceOutOfMemoryError`` during a load evicts the idle models on
  that device and retries once, then fails with a ``ModelLoadError`` that says so;
  ``evict_idle()`` does the same for callers that run out of memory while generating;
- **keep-alive**: with ``keep_alive_s`` set, a reaper thread unloads models idle that long;
- **deadlines**: every wait (for another load, for memory held by leases, for a model that
  is closing) ends by ``load_timeout_s``; past it the request fails with a clear error.

States of a model (:class:`ModelState`)::

    (not resident) --use()--> LOADING --load ok--> READY --unload/evict/keep-alive/shutdown--> CLOSING --> CLOSED
                                 |                  ^  |                                        (close() returned)
                                 +--load failed-----+  +-- leases come and go; READY only
                                   (back to not resident; waiters get the error)

- ``LOADING``: holds the one load ticket; its estimate is what the budget checked.
- ``READY``: resident, leasable, charged the larger of estimate and measured bytes.
- ``CLOSING``: taken off the resident table (no new leases) but its memory is not given back
  yet, so it **still counts against the budget**; a load that needs that room waits for it.
- ``CLOSED``: ``close()`` returned; the memory is released and the model is forgotten. A
  later ``use()`` loads it afresh.

Locking: ``_cond`` (a Condition over one lock) protects ``_resident``, ``_closing``,
``_loading``, ``_estimates`` and the counters; ``_subscribers_lock`` protects the subscriber
list. Backends' ``load()`` and models' ``close()`` run *outside*
the lock; the ``_loading`` ticket is what keeps loads sequential. Event callbacks run outside
the lock. ``status()`` returns a frozen snapshot that is safe to read without locks.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mimir.core.events import EventKind, ModelEvent
from mimir.core.memory import release_freed_memory
from mimir.errors import (
    BudgetExceededError,
    DeviceOutOfMemoryError,
    InvalidInputError,
    MimirError,
    ModelLoadError,
    UnknownModelError,
)
from mimir.models.base import LoadedModel
from mimir.models.registry import BackendRegistry, default_registry
from mimir.models.spec import MemoryEstimate, ModelSpec
from mimir.runtime.policy import (
    Candidate,
    Footprint,
    Limits,
    exceeded_device,
    expired,
    fits_alone,
    next_expiry,
    pick_victims,
)
from mimir.runtime.probe import process_footprint
from mimir.units import format_bytes

if TYPE_CHECKING:
    from mimir.config import Settings

log = logging.getLogger(__name__)

class ModelState(str, enum.Enum):
    """Where a model is in its life; see the module docstring for the transitions."""

    LOADING = "loading"
    READY = "ready"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True)
class ResidentModel:
    model_id: str
    backend: str
    device: str
    estimate_bytes: int
    #: Memory the load actually added (RSS delta on CPU, CUDA allocated delta on GPU).
    measured_bytes: int
    #: What the budget counts for this model: the larger of estimate and measured.
    charged_bytes: int
    load_s: float
    loaded_at: float
    last_used: float
    in_use: int
    pinned: bool
    state: ModelState = ModelState.READY


@dataclass(frozen=True)
class ManagerStatus:
    budget_ram_bytes: int
    budget_gpu_bytes: int | None
    resident: tuple[ResidentModel, ...]
    loading: str | None
    loads: int
    evictions: int
    unloads: int
    load_failures: int
    #: Models being closed: no longer leasable, still charged against the budget.
    closing: tuple[ResidentModel, ...] = ()

    @property
    def used_ram_bytes(self) -> int:
        return sum(m.charged_bytes for m in self.resident + self.closing if m.device == "ram")

    @property
    def used_gpu_bytes(self) -> int:
        return sum(m.charged_bytes for m in self.resident + self.closing if m.device == "gpu")

    def get(self, model_id: str) -> ResidentModel | None:
        return next((m for m in self.resident if m.model_id == model_id), None)


@dataclass
class _Entry:
    spec: ModelSpec
    model: LoadedModel
    estimate: MemoryEstimate
    measured_bytes: int
    load_s: float
    loaded_at: float
    last_used: float
    in_use: int = 0
    holders: Counter = field(default_factory=Counter)
    state: ModelState = ModelState.READY

    @property
    def charged(self) -> Footprint:
        size = max(self.estimate.total_bytes, self.measured_bytes)
        if self.estimate.device == "gpu":
            return Footprint(gpu_bytes=size)
        return Footprint(ram_bytes=size)


@dataclass
class _LoadTicket:
    model_id: str
    done: bool = False
    error: BaseException | None = None


class _ManagerCondition(threading.Condition):
    """The manager's condition, plus who is waiting for memory.

    ``memory_waiters`` maps each thread that found no room and is waiting for leases to end
    to its deadline. Every ``notify_all`` clears it: a woken thread is no longer known to be
    stuck until it has looked at the new state and found no room again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.memory_waiters: dict[int, float] = {}

    def notify_all(self) -> None:
        self.memory_waiters.clear()
        super().notify_all()


def _footprint(estimate: MemoryEstimate) -> Footprint:
    """What admitting a load needs free: the estimate, or the load's own peak if higher."""
    if estimate.device == "gpu":
        return Footprint(gpu_bytes=estimate.admission_bytes)
    return Footprint(ram_bytes=estimate.admission_bytes)


class ModelManager:
    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        *,
        budget_ram_bytes: int,
        budget_gpu_bytes: int | None = None,
        roles: Mapping[str, str] | None = None,
        registry: BackendRegistry | None = None,
        probe: Callable[[], Footprint] = process_footprint,
        clock: Callable[[], float] = time.monotonic,
        keep_alive_s: float | None = None,
        load_timeout_s: float = 120.0,
    ):
        self._specs = dict(specs)
        self._roles = dict(roles or {})
        self._limits = Limits(budget_ram_bytes, budget_gpu_bytes)
        self._registry = registry or default_registry()
        self._probe = probe
        self._clock = clock
        self._keep_alive_s = keep_alive_s
        self._load_timeout_s = load_timeout_s
        self._subscribers: list[Callable[[ModelEvent], None]] = []
        self._subscribers_lock = threading.Lock()

        self._cond = _ManagerCondition()
        # -- protected by _cond (and _cond.memory_waiters) --------------------------------
        self._resident: dict[str, _Entry] = {}
        self._closing: dict[str, _Entry] = {}
        self._loading: _LoadTicket | None = None
        self._estimates: dict[str, MemoryEstimate] = {}
        self._loads = self._evictions = self._unloads = self._load_failures = 0
        self._loads_by_model: Counter = Counter()
        self._closed = False
        # --------------------------------------------------------------------------------
        self._reaper: threading.Thread | None = None
        if keep_alive_s is not None:
            self._reaper = threading.Thread(target=self._reap_loop, name="mimir-keep-alive", daemon=True)
            self._reaper.start()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> ModelManager:
        return cls(
            settings.models,
            budget_ram_bytes=settings.budget.ram_bytes,
            budget_gpu_bytes=settings.budget.gpu_bytes,
            roles=settings.roles,
            keep_alive_s=settings.keep_alive_s,
            load_timeout_s=settings.load_timeout_s,
            **kwargs,
        )

    # -- public API ----------------------------------------------------------------------
    @property
    def specs(self) -> Mapping[str, ModelSpec]:
        return dict(self._specs)

    @property
    def roles(self) -> Mapping[str, str]:
        return dict(self._roles)

    def spec(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            raise UnknownModelError(model_id, self._specs) from None

    def model_for_role(self, role: str) -> str:
        from mimir.errors import UnknownRoleError

        if role not in self._roles:
            raise UnknownRoleError(role, self._roles)
        return self._roles[role]

    def subscribe(self, callback: Callable[[ModelEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every load, failed load, eviction and unload.

        Callbacks run in the thread that caused the event (the loading thread for loads and
        evictions), outside the manager's lock. Safe to call from any thread, also while
        events are being delivered (a delivery works on a snapshot of the list). Returns a
        function that unsubscribes (idempotent).
        """
        with self._subscribers_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def state(self, model_id: str) -> ModelState:
        """The model's state now; ``CLOSED`` for a model that is not loaded at all."""
        self.spec(model_id)
        with self._cond:
            if model_id in self._resident:
                return ModelState.READY
            if model_id in self._closing:
                return ModelState.CLOSING
            if self._loading is not None and self._loading.model_id == model_id:
                return ModelState.LOADING
            return ModelState.CLOSED

    def parallel(self, model_id: str) -> int:
        """Generations the model serves at once (its slots), without loading it. A caller that
        admits work (the API's queue) can run this many turns on the model side by side."""
        spec = self.spec(model_id)
        return self._registry.get(spec.backend).parallel(spec)

    def estimate(self, model_id: str) -> MemoryEstimate:
        """The backend's estimate for a model (computed once, without loading)."""
        spec = self.spec(model_id)
        with self._cond:
            cached = self._estimates.get(model_id)
        if cached is not None:
            return cached
        estimate = self._registry.get(spec.backend).estimate(spec)
        with self._cond:
            self._estimates[model_id] = estimate
        return estimate

    @contextmanager
    def use(
        self, model_id: str, *, on_load_start: Callable[[MemoryEstimate], None] | None = None
    ) -> Iterator[LoadedModel]:
        """Lease a model for the duration of the block (loading it first if needed).

        ``on_load_start(estimate)`` is called when this very call takes the load, just before
        the weights are read (not when the model was resident or another thread loads it).
        """
        entry = self._acquire(model_id, on_load_start)
        try:
            yield entry.model
        finally:
            self._release(model_id)

    @contextmanager
    def use_role(self, role: str) -> Iterator[LoadedModel]:
        with self.use(self.model_for_role(role)) as model:
            yield model

    def unload(self, model_id: str, reason: str = "manual") -> bool:
        """Unload an idle model now. Returns False if it was not resident.

        Raises InvalidInputError when the model is in use.
        """
        self.spec(model_id)
        with self._cond:
            entry = self._resident.get(model_id)
            if entry is None:
                return False
            if entry.in_use:
                raise InvalidInputError(f"model '{model_id}' is in use ({entry.in_use} lease(s)); try again when idle")
            self._begin_closing_locked(model_id)
            self._unloads += 1
        self._close_and_report([(model_id, entry)], kind="unload", reason=reason)
        return True

    def evict_idle(self, reason: str, device: str | None = None) -> list[str]:
        """Evict every idle, unpinned model now (only those on ``device`` when given).

        For a caller that met a :class:`~mimir.errors.DeviceOutOfMemoryError` while
        generating: evict, then retry once. Loads do this themselves. Returns the evicted ids.
        """
        with self._cond:
            victims = [
                (mid, e)
                for mid, e in self._resident.items()
                if not e.in_use and not e.spec.pinned and (device is None or e.estimate.device == device)
            ]
            for mid, _ in victims:
                self._begin_closing_locked(mid)
            self._evictions += len(victims)
        self._close_and_report(victims, kind="evict", reason=reason)
        return [mid for mid, _ in victims]

    def status(self) -> ManagerStatus:
        def row(mid: str, e: _Entry) -> ResidentModel:
            return ResidentModel(
                model_id=mid,
                backend=e.spec.backend,
                device=e.estimate.device,
                estimate_bytes=e.estimate.total_bytes,
                measured_bytes=e.measured_bytes,
                charged_bytes=max(e.estimate.total_bytes, e.measured_bytes),
                load_s=e.load_s,
                loaded_at=e.loaded_at,
                last_used=e.last_used,
                in_use=e.in_use,
                pinned=e.spec.pinned,
                state=e.state,
            )

        with self._cond:
            resident = tuple(row(mid, e) for mid, e in self._resident.items())
            closing = tuple(row(mid, e) for mid, e in self._closing.items())
            return ManagerStatus(
                budget_ram_bytes=self._limits.ram_bytes,
                budget_gpu_bytes=self._limits.gpu_bytes,
                resident=resident,
                loading=self._loading.model_id if self._loading else None,
                loads=self._loads,
                evictions=self._evictions,
                unloads=self._unloads,
                load_failures=self._load_failures,
                closing=closing,
            )

    def close(self) -> None:
        """Unload every model and stop the keep-alive thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            # Leased models are unloaded too: the process is shutting down.
            victims = list(self._resident.items())
            for mid, _ in victims:
                self._begin_closing_locked(mid)
            self._unloads += len(victims)
        self._close_and_report(victims, kind="unload", reason="shutdown")
        if self._reaper is not None:
            self._reaper.join(timeout=5)

    def __enter__(self) -> ModelManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _candidates_locked(self) -> list[Candidate]:
        """Resident models, and closing ones as busy (they hold memory but cannot be evicted)."""
        ready = [Candidate(mid, e.charged, e.last_used, e.in_use, e.spec.pinned) for mid, e in self._resident.items()]
        closing = [Candidate(mid, e.charged, e.last_used, in_use=1) for mid, e in self._closing.items()]
        return ready + closing

    def _begin_closing_locked(self, model_id: str) -> None:
        """READY -> CLOSING: no new leases; the memory stays charged until ``close()`` returns."""
        entry = self._resident.pop(model_id)
        entry.state = ModelState.CLOSING
        # Two closings of one id cannot overlap: a reload waits for the first to finish.
        self._closing[model_id] = entry
        self._cond.notify_all()

    def _finish_closing(self, model_id: str, entry: _Entry) -> None:
        """CLOSING -> CLOSED: the memory is back; waiters for room or for this id go on."""
        with self._cond:
            entry.state = ModelState.CLOSED
            if self._closing.get(model_id) is entry:
                del self._closing[model_id]
            self._cond.notify_all()

    def _wait_locked(self, deadline: float, model_id: str, waiting_for: str) -> None:
        """Wait on the condition until notified or the deadline; past it, fail clearly."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise ModelLoadError(
                model_id,
                self._specs[model_id].source.describe(),
                f"timed out after {self._load_timeout_s:g}s (load_timeout) waiting for {waiting_for}",
            )
        self._cond.wait(remaining)

    def _acquire(self, model_id: str, on_load_start: Callable[[MemoryEstimate], None] | None = None) -> _Entry:
        spec = self.spec(model_id)
        me = threading.get_ident()
        deadline = self._clock() + self._load_timeout_s
        with self._cond:
            resident_now = model_id in self._resident
        # Estimating may read file headers: do it before taking the lock for long.
        estimate = None if resident_now else self.estimate(model_id)
        with self._cond:
            while True:
                if self._closed:
                    raise MimirError("the model manager is closed")
                entry = self._resident.get(model_id)
                if entry is not None:
                    entry.in_use += 1
                    entry.holders[me] += 1
                    entry.last_used = self._clock()
                    return entry
                ticket = self._loading
                if ticket is not None:
                    # One load at a time. If it is our model, its outcome is ours too. The
                    # wait is bounded by load_timeout like every other wait for memory.
                    while not ticket.done:
                        remaining = deadline - self._clock()
                        if remaining <= 0:
                            raise ModelLoadError(
                                model_id, spec.source.describe(),
                                f"waited {self._load_timeout_s:g} s (load_timeout) for the load of "
                                f"'{ticket.model_id}' by another request to finish",
                            )
                        self._cond.wait(remaining)
                    if ticket.model_id == model_id and ticket.error is not None:
                        raise ticket.error
                    continue
                if model_id in self._closing:  # closing right now: load it again once it is gone
                    self._wait_locked(deadline, model_id, f"'{model_id}' to finish closing")
                    continue
                if estimate is None:  # it was resident, then got evicted meanwhile
                    self._cond.release()
                    try:
                        estimate = self.estimate(model_id)
                    finally:
                        self._cond.acquire()
                    continue
                need = _footprint(estimate)
                if not fits_alone(need, self._limits):
                    device = exceeded_device(need, Footprint(), self._limits)
                    budget = self._limits.ram_bytes if device == "ram" else self._limits.gpu_bytes
                    raise BudgetExceededError(model_id, estimate.admission_bytes, budget or 0, device=device)
                victims = pick_victims(need, self._candidates_locked(), self._limits)
                if victims is None:
                    busy = {mid: e for mid, e in self._resident.items() if e.in_use or e.spec.pinned}
                    now = self._clock()
                    remaining = deadline - now
                    holders = {h for e in busy.values() if e.in_use for h in e.holders}
                    only_mine = holders <= {me}
                    no_leases = not any(e.in_use for e in busy.values())
                    if self._closing and remaining > 0:  # memory is on its way back
                        self._cond.wait(remaining)
                        continue
                    # Threads that hold leases but are themselves waiting for memory (and
                    # will go on waiting): if every other holder is one, nobody will release
                    # anything before a timeout, so the last thread to join the wait fails now
                    # and its leases end, which lets the others go on.
                    waiters = self._cond.memory_waiters
                    crossed = not only_mine and all(h == me or waiters.get(h, now) > now for h in holders)
                    if remaining <= 0 or only_mine or no_leases or crossed:
                        # Waiting cannot help: the blockers are pinned, or leased by this
                        # very thread or by threads waiting for memory too, or we ran out of time.
                        resident = Footprint()
                        for c in self._candidates_locked():
                            resident = resident + c.footprint
                        device = exceeded_device(need, resident, self._limits)
                        budget = self._limits.ram_bytes if device == "ram" else self._limits.gpu_bytes
                        if crossed:
                            detail = "their holders are waiting for memory themselves, so waiting cannot help"
                        elif remaining <= 0 and not (only_mine or no_leases):
                            detail = f"waited {self._load_timeout_s:g}s for them (budget.load_timeout)"
                        else:
                            detail = ""
                        raise BudgetExceededError(
                            model_id, estimate.admission_bytes, budget or 0, device=device, blocked_by=busy,
                            detail=detail,
                        )
                    waiters[me] = deadline
                    try:
                        self._cond.wait(remaining)
                    finally:
                        waiters.pop(me, None)
                    continue
                evicted = [(v, self._resident[v]) for v in victims]
                for v in victims:
                    self._begin_closing_locked(v)
                self._evictions += len(evicted)
                ticket = _LoadTicket(model_id)
                self._loading = ticket
                break

        # We hold the load ticket (LOADING): free the victims, then load, all outside the lock.
        try:
            if on_load_start is not None:
                on_load_start(estimate)
            self._close_and_report(evicted, kind="evict", reason=f"make room for '{model_id}'")
            entry = self._load_retrying_oom(spec, estimate, me)
        except BaseException as exc:
            with self._cond:
                ticket.done = True
                ticket.error = exc
                self._loading = None
                self._load_failures += 1
                self._cond.notify_all()
            self._emit(ModelEvent("load_failed", model_id, str(exc), estimate.total_bytes, device=estimate.device))
            raise
        with self._cond:
            self._resident[model_id] = entry
            self._loads += 1
            self._loads_by_model[model_id] += 1
            reason = "first use" if self._loads_by_model[model_id] == 1 else "reload after unload"
            ticket.done = True
            self._loading = None
            self._cond.notify_all()
        self._emit(
            ModelEvent(
                "load",
                model_id,
                reason,
                estimate.total_bytes,
                measured_bytes=entry.measured_bytes,
                wall_s=entry.load_s,
                device=estimate.device,
            )
        )
        log.info(
            "loaded model=%s in %.2fs estimate=%s measured=%s",
            model_id,
            entry.load_s,
            format_bytes(estimate.total_bytes),
            format_bytes(entry.measured_bytes),
        )
        return entry

    def _load(self, spec: ModelSpec, estimate: MemoryEstimate, owner: int) -> _Entry:
        backend = self._registry.get(spec.backend)
        # Memory freed by earlier unloads goes back to the OS first; otherwise this load could
        # reuse it without RSS moving, and would measure almost nothing.
        release_freed_memory()
        before = self._probe()
        t0 = time.perf_counter()
        try:
            model = backend.load(spec)
        except MimirError:
            raise
        except Exception as exc:  # a backend bug or library error: name the source and cause
            raise ModelLoadError(spec.id, spec.source.describe(), f"{type(exc).__name__}: {exc}") from exc
        load_s = time.perf_counter() - t0
        after = self._probe()
        delta = after - before
        measured = delta.gpu_bytes if estimate.device == "gpu" else delta.ram_bytes
        now = self._clock()
        return _Entry(
            spec=spec,
            model=model,
            estimate=estimate,
            measured_bytes=max(0, measured),
            load_s=load_s,
            loaded_at=now,
            last_used=now,
            in_use=1,
            holders=Counter({owner: 1}),
        )

    def _load_retrying_oom(self, spec: ModelSpec, estimate: MemoryEstimate, owner: int) -> _Entry:
        """``_load``; on a device out-of-memory error, evict idle models on that device and retry once."""
        try:
            return self._load(spec, estimate, owner)
        except DeviceOutOfMemoryError as exc:
            device = exc.device
        evicted = self.evict_idle(f"out of {device} memory while loading '{spec.id}'", device=device)
        try:
            return self._load(spec, estimate, owner)
        except DeviceOutOfMemoryError as exc:
            raise ModelLoadError(
                spec.id,
                spec.source.describe(),
                f"out of {exc.device} memory even after evicting idle models "
                f"({', '.join(evicted) or 'none were idle'}) and retrying once: {exc.cause}",
            ) from exc

    def _release(self, model_id: str) -> None:
        me = threading.get_ident()
        with self._cond:
            entry = self._resident.get(model_id)
            if entry is None:  # unloaded at shutdown while leased
                return
            entry.in_use -= 1
            entry.holders[me] -= 1
            if entry.holders[me] <= 0:
                del entry.holders[me]
            entry.last_used = self._clock()
            self._cond.notify_all()

    def _close_and_report(self, entries: list[tuple[str, _Entry]], *, kind: EventKind, reason: str) -> None:
        """Close CLOSING entries (outside the lock), mark them CLOSED and report each."""
        for model_id, entry in entries:
            before = self._probe()
            try:
                entry.model.close()
            except Exception as exc:  # closing must not stop the others from being freed
                log.warning("closing model %s failed: %s", model_id, exc)
            finally:
                self._finish_closing(model_id, entry)
            after = self._probe()
            delta = before - after
            freed = delta.gpu_bytes if entry.estimate.device == "gpu" else delta.ram_bytes
            self._emit(
                ModelEvent(
                    kind,
                    model_id,
                    reason,
                    entry.estimate.total_bytes,
                    measured_bytes=max(0, freed),
                    device=entry.estimate.device,
                )
            )
            log.info("%s model=%s reason=%s freed=%s", kind, model_id, reason, format_bytes(max(0, freed)))

    def _emit(self, event: ModelEvent) -> None:
        with self._subscribers_lock:
            callbacks = list(self._subscribers)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("model event subscriber failed")

    def _reap_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = self._clock()
                victims = expired(self._candidates_locked(), now, self._keep_alive_s)
                if not victims:
                    due = next_expiry(self._candidates_locked(), self._keep_alive_s)
                    self._cond.wait(None if due is None else max(0.01, due - now))
                    continue
                entries = [(v, self._resident[v]) for v in victims]
                for v in victims:
                    self._begin_closing_locked(v)
                self._unloads += len(entries)
            self._close_and_report(entries, kind="unload", reason=f"idle for {self._keep_alive_s:g}s (keep_alive)")
