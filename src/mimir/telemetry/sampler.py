"""The RSS peak sampler: one light background thread shared by every open step.

A step opens a :class:`PeakWindow`; while at least one window is open the thread reads RSS
every ``interval_s`` and raises the peak of every window that was open when the reading was
taken. With no window open the thread waits on a condition variable (no polling), and the
first window to open wakes it. A peak allocated and freed inside a step therefore shows in
the step's peak as long as it lasted about one interval; the recorder adds the kernel's
high-water mark on top, which catches shorter peaks whenever they set a new process high.

Locking: ``_cond`` protects ``_windows``, ``_thread`` and ``_closed``. The RSS read happens
outside the lock.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mimir.telemetry")


@dataclass
class PeakWindow:
    """The highest RSS the sampler saw while one step was open. Mutable; owned by the sampler."""

    opened_at: float
    peak_bytes: int
    samples: int = 0


class PeakSampler:
    def __init__(self, read_rss: Callable[[], int], interval_s: float = 0.01):
        if interval_s <= 0:
            raise ValueError("the sampling interval must be more than zero")
        self.interval_s = interval_s
        self._read_rss = read_rss
        self._cond = threading.Condition()
        self._ids = itertools.count()
        # -- protected by _cond ----------------------------------------------------------
        self._windows: dict[int, PeakWindow] = {}
        self._thread: threading.Thread | None = None
        self._parked = False  # the thread waits, untimed, for a window to open
        self._closed = False
        #: Readings taken since start (for tests and the benchmark's cost accounting).
        self.samples_taken = 0

    def open(self, start_rss_bytes: int) -> int:
        """Start a window at ``start_rss_bytes``; returns its key for :meth:`close`."""
        key = next(self._ids)
        window = PeakWindow(time.monotonic(), start_rss_bytes)
        with self._cond:
            self._windows[key] = window
            if self._closed:
                return key
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mimir-rss-sampler", daemon=True)
                self._thread.start()
            elif self._parked:
                # Only a parked thread needs waking; one between ticks samples at its next tick.
                self._parked = False
                self._cond.notify()
        return key

    def peak(self, key: int) -> int | None:
        """The peak seen so far in an open window (None once closed)."""
        with self._cond:
            window = self._windows.get(key)
            return window.peak_bytes if window else None

    def close(self, key: int) -> PeakWindow | None:
        """End a window and return it (its ``peak_bytes`` is the highest sample seen)."""
        with self._cond:
            return self._windows.pop(key, None)

    def shutdown(self) -> None:
        """Stop the thread. Open windows stop being sampled. Idempotent."""
        with self._cond:
            self._closed = True
            self._parked = False
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._windows:
                    self._parked = True
                    self._cond.wait()
                    self._parked = False
                    continue
                self._cond.release()
                try:
                    taken_at = time.monotonic()
                    try:
                        rss = self._read_rss()
                    except Exception as exc:  # a broken reader must not kill the process
                        log.warning("RSS sampler stopped: %s", exc)
                        rss = None
                finally:
                    self._cond.acquire()
                if rss is None:
                    self._closed = True
                    return
                self.samples_taken += 1
                for window in self._windows.values():
                    if window.opened_at <= taken_at:
                        window.samples += 1
                        if rss > window.peak_bytes:
                            window.peak_bytes = rss
                self._cond.wait(self.interval_s)
