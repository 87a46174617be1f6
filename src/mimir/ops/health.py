"""Readiness: can this process answer a student right now?

``/readyz`` runs three checks, in order, and names the first part that fails:

- ``database``: a write transaction can start on a fresh connection, within a short timeout
  (SQLite: ``BEGIN IMMEDIATE``, so a file another process holds locked fails it; PostgreSQL:
  the primary answers and the schema reads; see ``Database.check_writable``);
- ``model``: the response role's model file is still on disk (for file sources);
- ``generation``: a 1-token generation on the response role's model succeeds through the
  model manager (the same lease, budget and load path a turn uses), within a deadline.

A check that hangs does not hang the probe: the generation runs in its own thread, and the
probe reports a failure when the deadline passes. While that thread is still stuck, later
probes report it as stuck rather than piling up more threads (a deadlocked generation path
stays visible, which is the point). Results are cached for ``cache_s`` so probes cost nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mimir.models.base import ChatMessage, GenerationParams

if TYPE_CHECKING:
    from mimir.app import MimirApp

#: Role whose model /readyz exercises (the one that writes the student's answer).
READY_ROLE = "response"
#: Backends whose ``path``/``package`` source is a model file (or folder) on disk.
FILE_BACKENDS = frozenset({"llama_cpp", "transformers"})
#: Busy timeout of the database check, seconds (at most the readiness deadline).
DB_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    wall_s: float


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]
    checked_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks if not c.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ok else "not ready",
            "failing": list(self.failing),
            "checked_at": self.checked_at,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail, "wall_s": round(c.wall_s, 4)} for c in self.checks},
        }


def _timed(name: str, fn: Callable[[], str]) -> Check:
    t0 = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except Exception as exc:  # a check's failure is data, reported by name
        detail = str(exc) or type(exc).__name__
        ok = False
    return Check(name, ok, detail, time.perf_counter() - t0)


class ReadinessProbe:
    """Runs the checks for ``app``; :meth:`check` returns a cached :class:`Readiness`."""

    def __init__(self, app: MimirApp, *, timeout_s: float = 10.0, cache_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self._app = app
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()  # one probe at a time; concurrent callers share its result
        self._cached: tuple[float, Readiness] | None = None
        self._generation: threading.Thread | None = None
        self._generation_started = 0.0

    def check(self) -> Readiness:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self.cache_s:
                return self._cached[1]
            result = self._run()
            self._cached = (self._clock(), result)
            return result

    def _run(self) -> Readiness:
        checks = [_timed("database", self._database)]
        checks.append(_timed("model", self._model_file))
        if checks[-1].ok:
            checks.append(self._generation_check())
        return Readiness(tuple(checks))

    # -- the checks ----------------------------------------------------------------------
    def _database(self) -> str:
        from mimir.errors import StorageError

        db = self._app.db  # opened and migrated once; a broken home fails here with its reason
        try:
            return db.check_writable(min(DB_TIMEOUT_S, self.timeout_s))
        except StorageError as exc:
            raise RuntimeError(f"{exc.path}: {exc.cause}") from None

    def _model_id(self) -> str:
        return self._app.settings.model_for_role(READY_ROLE)

    def _model_file(self) -> str:
        spec = self._app.settings.models[self._model_id()]
        path = spec.source.local_path() if spec.backend in FILE_BACKENDS else None
        if path is None:
            return f"{spec.source.describe()} (checked by the generation)"
        if not path.exists():
            raise RuntimeError(f"model '{spec.id}': {path} is missing")
        return str(path)

    def _generation_check(self) -> Check:
        running = self._generation
        if running is not None and running.is_alive():
            stuck = time.monotonic() - self._generation_started
            return Check("generation", False, f"the previous 1-token generation is still running after {stuck:.1f}s",
                         0.0)
        model_id = self._model_id()
        box: dict[str, Check] = {}
        thread = threading.Thread(
            target=lambda: box.setdefault("check", _timed("generation", lambda: self._generate_one(model_id))),
            name="mimir-readyz", daemon=True,
        )
        self._generation, self._generation_started = thread, time.monotonic()
        thread.start()
        thread.join(self.timeout_s)
        if "check" in box:
            return box["check"]
        return Check("generation", False, f"model '{model_id}' gave no token within {self.timeout_s:g}s",
                     self.timeout_s)

    def _generate_one(self, model_id: str) -> str:
        params = GenerationParams(max_tokens=1, temperature=0.0, seed=0)
        completion = self._app.runner.generate(model_id, [ChatMessage("user", "Say OK.")], params)
        if completion.tokens_out < 1 and completion.finish_reason != "stop":
            raise RuntimeError(f"model '{model_id}' produced no token ({completion.finish_reason})")
        return f"model '{model_id}' generated {completion.tokens_out} token(s)"
