"""What the model manager reports about the models it holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal["load", "load_failed", "evict", "unload"]


@dataclass(frozen=True)
class ModelEvent:
    """Something the manager did to a model. ``measured_bytes`` is the RSS (or CUDA) delta."""

    kind: EventKind
    model_id: str
    reason: str
    estimate_bytes: int
    measured_bytes: int | None = None
    wall_s: float | None = None
    device: str = "ram"
    at: float = field(default_factory=time.time)
