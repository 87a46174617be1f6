"""Slowing down password guessing: per address and per user name.

The first :data:`FREE_FAILURES` failures for a user name (:data:`FREE_ADDRESS_FAILURES` from
an address: a class behind one school NAT shares it) cost nothing. After that each further
attempt must wait ``2 ** (failures - free)`` seconds after the last failure (at most
:data:`MAX_WAIT_S`), whether the name exists or not; an attempt made earlier is refused
with :class:`~mimir.errors.TooManyAttemptsError` (HTTP 429 with ``Retry-After``) without
checking the password. A success clears the user's and the address's record; records
older than :data:`FORGET_AFTER_S` are forgotten. Nothing sleeps: a refused attempt costs
the server nothing, so guessing cannot tie up its threads.

Kept in memory (one process serves the class); a restart forgets. Locking: ``_lock``
guards ``_records``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from mimir.errors import TooManyAttemptsError

FREE_FAILURES = 5
FREE_ADDRESS_FAILURES = 20
MAX_WAIT_S = 900.0
FORGET_AFTER_S = 3600.0
#: Most records kept; the oldest go first (an attacker cycling addresses cannot grow memory).
MAX_RECORDS = 10_000


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def _keys(self, address: str | None, name: str | None) -> list[tuple[str, str]]:
        keys = []
        if address:
            keys.append(("address", address[:64]))
        if name:
            keys.append(("user", name.strip().casefold()[:64]))
        return keys

    def wait_s(self, address: str | None, name: str | None) -> float:
        """Seconds before another attempt for this address and name is heard (0: now)."""
        now = self._clock()
        worst = 0.0
        with self._lock:
            for key in self._keys(address, name):
                record = self._records.get(key)
                if record is None:
                    continue
                failures, last = record
                if now - last > FORGET_AFTER_S:
                    del self._records[key]
                    continue
                free = FREE_ADDRESS_FAILURES if key[0] == "address" else FREE_FAILURES
                if failures >= free:
                    wait = min(2.0 ** (failures - free), MAX_WAIT_S)
                    worst = max(worst, last + wait - now)
        return max(0.0, worst)

    def check(self, address: str | None, name: str | None) -> None:
        """Raise TooManyAttemptsError when this attempt comes too soon."""
        wait = self.wait_s(address, name)
        if wait > 0:
            raise TooManyAttemptsError(wait)

    def failed(self, address: str | None, name: str | None) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(address, name):
                failures, last = self._records.pop(key, (0, now))
                if now - last > FORGET_AFTER_S:
                    failures = 0
                self._records[key] = (failures + 1, now)
            while len(self._records) > MAX_RECORDS:
                self._records.popitem(last=False)

    def succeeded(self, address: str | None, name: str | None) -> None:
        with self._lock:
            for key in self._keys(address, name):
                self._records.pop(key, None)
