"""GPU facts through NVML (``nvidia-ml-py``), without a subprocess. All optional.

Every function returns ``None`` (or an empty list) when there is no GPU, no driver or no
``pynvml``; none of them raises for that.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

_lock = threading.Lock()
_state: dict[str, object] = {"initialised": None}


@dataclass(frozen=True)
class GpuMemory:
    index: int
    used_bytes: int
    total_bytes: int


def _nvml():
    """The initialised pynvml module, or None."""
    with _lock:
        if _state["initialised"] is False:
            return None
        try:
            import pynvml
        except ImportError:
            _state["initialised"] = False
            return None
        if _state["initialised"] is None:
            try:
                pynvml.nvmlInit()
            except Exception:
                _state["initialised"] = False
                return None
            _state["initialised"] = True
        return pynvml


def gpu_memory() -> list[GpuMemory]:
    nvml = _nvml()
    if nvml is None:
        return []
    out = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i))
            out.append(GpuMemory(i, int(info.used), int(info.total)))
    except Exception:
        return []
    return out


def total_gpu_bytes() -> int | None:
    """Total memory of the first GPU, or None without one."""
    devices = gpu_memory()
    return devices[0].total_bytes if devices else None
