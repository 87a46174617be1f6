"""The math worker: sympy runs in its own process with a time limit and a memory cap.

One persistent child process (``python -m mimir.mathcheck.worker``: a fresh interpreter,
no copy of the server's threads or models) imports sympy once, caps its own address space with ``RLIMIT_AS`` and then answers
requests as JSON lines over its stdin and stdout. :meth:`MathWorker.call` waits at most ``timeout_s``; a request that
runs longer (``9**9**9**9``, ``100000!``) gets the child killed and restarted on the next
call, and a child that dies (memory cap, crash) is restarted the same way. Either way the
caller gets :class:`CouldNotCheck` and the turn goes on without the check.

This module imports no sympy: the server process stays light.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024
#: How long the first call may wait for the child to import sympy.
START_TIMEOUT_S = 60.0


class CouldNotCheck(Exception):
    """The engine gave no answer in time or within its memory; the reason is the message."""


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def serve(memory_bytes: int) -> None:  # pragma: no cover - runs in the child
    """The child's loop: one JSON request per line on stdin, one JSON reply per line on stdout."""
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from mimir.mathcheck import engine  # imports sympy

    engine.warm_up()
    if memory_bytes > 0:
        limit = _vm_bytes() + memory_bytes
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):
            pass
    out = sys.stdout
    out.write(json.dumps(["ready", None]) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            name, request = json.loads(line)
            reply = ["ok", engine.FUNCTIONS[name](request)]
        except MemoryError:
            reply = ["error", "the expression needs more memory than the math engine may use"]
        except RecursionError:
            reply = ["error", "the expression is nested too deeply"]
        except Exception as exc:  # noqa: BLE001 - any engine failure is "could not check"
            reply = ["error", f"{type(exc).__name__}: {str(exc)[:200]}"]
        out.write(json.dumps(reply) + "\n")
        out.flush()


class MathWorker:
    """A persistent sympy process. Thread-safe: one request at a time."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._ready = False
        #: Children killed (timeouts, crashes) and replaced since this worker was made.
        self.restarts = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child now (it imports sympy in the background); idempotent."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._kill()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mimir.mathcheck.worker", str(self.memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._buffer = b""
        self._ready = False

    def _read_line(self, timeout_s: float) -> list | None:
        """One reply line, or ``None`` after ``timeout_s``. Raises EOFError if the child died."""
        deadline = time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            line = self._read_line(START_TIMEOUT_S)
        except (EOFError, OSError, ValueError):
            line = None
        if line is None:
            self._kill()
            raise CouldNotCheck("the math engine did not start")
        self._ready = True

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                self.restarts += 1
            proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        self._ready = False
        self._buffer = b""

    def close(self) -> None:
        with self._lock:
            self._kill()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- requests ---------------------------------------------------------------------------
    def call(self, name: str, request: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Run ``engine.FUNCTIONS[name](request)`` in the child. Raises :class:`CouldNotCheck`
        on a timeout, a memory or engine error, or a dead child."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self._ensure_started()
            self._wait_ready()
            try:
                self._proc.stdin.write((json.dumps([name, request]) + "\n").encode("utf-8"))
                self._proc.stdin.flush()
            except (OSError, ValueError):
                self._kill()
                raise CouldNotCheck("the math engine stopped") from None
            started = time.monotonic()
            try:
                reply = self._read_line(limit)
            except (EOFError, OSError, ValueError):
                self._kill()
                raise CouldNotCheck("the math engine stopped (memory cap or crash)") from None
            if reply is None:
                log.info("math worker: '%s' ran over %.1fs; restarting it", name, limit)
                self._kill()
                raise CouldNotCheck(f"the check took longer than {limit:g}s")
            status, payload = reply
            log.debug("math worker: '%s' in %.1f ms", name, (time.monotonic() - started) * 1000)
        if status != "ok":
            raise CouldNotCheck(str(payload))
        return payload


if __name__ == "__main__":  # pragma: no cover - the child process
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MEMORY_BYTES)
