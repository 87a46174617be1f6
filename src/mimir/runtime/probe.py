"""The manager's default memory probe: what this process holds right now.

A :class:`~mimir.runtime.policy.Footprint` built from :mod:`mimir.core.memory` (the reader the
telemetry probes and the web app use too): RSS, and CUDA memory allocated by torch when torch
is already imported and CUDA is initialised (the probe never imports torch itself).
"""

from __future__ import annotations

from mimir.core.memory import cuda_allocated_bytes, process_rss_bytes
from mimir.runtime.policy import Footprint


def process_footprint() -> Footprint:
    return Footprint(ram_bytes=process_rss_bytes(), gpu_bytes=cuda_allocated_bytes())
