"""Pure budget policy: does a model fit, and which idle models go to make room.

No locks, no I/O: the manager calls these with snapshots of its state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Footprint:
    """Bytes a model holds (or would hold) in host RAM and in GPU memory."""

    ram_bytes: int = 0
    gpu_bytes: int = 0

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(self.ram_bytes + other.ram_bytes, self.gpu_bytes + other.gpu_bytes)

    def __sub__(self, other: Footprint) -> Footprint:
        return Footprint(self.ram_bytes - other.ram_bytes, self.gpu_bytes - other.gpu_bytes)


@dataclass(frozen=True)
class Limits:
    ram_bytes: int
    gpu_bytes: int | None = None  # None: GPU memory is not budgeted


@dataclass(frozen=True)
class Candidate:
    """A resident model as the victim picker sees it."""

    model_id: str
    footprint: Footprint
    last_used: float
    in_use: int = 0
    pinned: bool = False

    @property
    def evictable(self) -> bool:
        return self.in_use == 0 and not self.pinned


def fits(need: Footprint, resident: Footprint, limits: Limits) -> bool:
    """True when ``need`` on top of ``resident`` stays within ``limits``."""
    if resident.ram_bytes + need.ram_bytes > limits.ram_bytes:
        return False
    if limits.gpu_bytes is not None and resident.gpu_bytes + need.gpu_bytes > limits.gpu_bytes:
        return False
    return True


def fits_alone(need: Footprint, limits: Limits) -> bool:
    return fits(need, Footprint(), limits)


def exceeded_device(need: Footprint, resident: Footprint, limits: Limits) -> str:
    """Which memory ("ram" or "gpu") ``need`` overflows first; for error messages."""
    if resident.ram_bytes + need.ram_bytes > limits.ram_bytes:
        return "ram"
    return "gpu"


def pick_victims(need: Footprint, residents: Sequence[Candidate], limits: Limits) -> list[str] | None:
    """Idle models to evict, least recently used first, until ``need`` fits.

    Returns ``[]`` when it already fits, and ``None`` when evicting every evictable model
    would still not make room (the caller then waits for in-use models or fails).
    Only models that free memory in an overflowing dimension are taken, so an idle CPU model
    is not evicted to make GPU room.
    """
    resident = Footprint()
    for c in residents:
        resident = resident + c.footprint
    if fits(need, resident, limits):
        return []
    victims: list[str] = []
    for c in sorted((c for c in residents if c.evictable), key=lambda c: c.last_used):
        ram_short = resident.ram_bytes + need.ram_bytes > limits.ram_bytes
        gpu_short = limits.gpu_bytes is not None and resident.gpu_bytes + need.gpu_bytes > limits.gpu_bytes
        helps = (ram_short and c.footprint.ram_bytes > 0) or (gpu_short and c.footprint.gpu_bytes > 0)
        if not helps:
            continue
        victims.append(c.model_id)
        resident = resident - c.footprint
        if fits(need, resident, limits):
            return victims
    return None


def expired(residents: Sequence[Candidate], now: float, keep_alive_s: float | None) -> list[str]:
    """Idle, unpinned models unused for longer than ``keep_alive_s``."""
    if keep_alive_s is None:
        return []
    return [c.model_id for c in residents if c.evictable and now - c.last_used >= keep_alive_s]


def next_expiry(residents: Sequence[Candidate], keep_alive_s: float | None) -> float | None:
    """Clock time at which the next idle model expires, or None."""
    if keep_alive_s is None:
        return None
    times = [c.last_used + keep_alive_s for c in residents if c.evictable]
    return min(times) if times else None
