"""GPU facts through NVML (``nvidia-ml-py``), without a subprocess. All optional.

Every function returns ``None`` (or an empty list) when there is no GPU, no driver or no
``pynvml``; none of them raises for that, except :func:`read_gpu_memory`, which raises
:class:`NvmlError` when NVML was working and then failed (so a per-step probe can warn once).

``nvidia-smi`` is the last resort, for when NVML is unavailable: :func:`gpu_memory_via_smi`
spawns one subprocess (10-20 ms), so nothing calls it per step unless asked to.
"""

from __future__ import annotations

import shutil
import subprocess
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


class NvmlError(RuntimeError):
    """NVML was initialised but a query failed (driver gone, device lost...)."""


def nvml_available() -> bool:
    """True when ``pynvml`` imports and ``nvmlInit()`` succeeded."""
    return _nvml() is not None


def read_gpu_memory() -> list[GpuMemory] | None:
    """Used/total memory per device through NVML; ``None`` when NVML is unavailable.

    Raises :class:`NvmlError` when NVML is available but the query fails.
    """
    nvml = _nvml()
    if nvml is None:
        return None
    out = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i))
            out.append(GpuMemory(i, int(info.used), int(info.total)))
    except Exception as exc:
        raise NvmlError(f"{type(exc).__name__}: {exc}") from exc
    return out


def gpu_memory(*, allow_smi: bool = False) -> list[GpuMemory]:
    """Used/total memory per device; ``[]`` without a GPU. Never raises.

    With ``allow_smi``, falls back to one ``nvidia-smi`` call when NVML is unavailable.
    """
    try:
        devices = read_gpu_memory()
    except NvmlError:
        return []
    if devices is None and allow_smi:
        return gpu_memory_via_smi() or []
    return devices or []


def gpu_memory_via_smi(timeout_s: float = 10.0) -> list[GpuMemory] | None:
    """Used/total per device from one ``nvidia-smi`` subprocess; ``None`` if it is missing.

    The last resort: a subprocess costs 10-20 ms, so this is never called per step unless
    the user asked for it (``[telemetry] nvidia_smi = true``).
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return parse_smi_memory(proc.stdout)


def parse_smi_memory(text: str) -> list[GpuMemory]:
    """Parse ``index, used MiB, total MiB`` lines as ``nvidia-smi`` prints them."""
    mib = 1024 * 1024
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            out.append(GpuMemory(int(parts[0]), int(float(parts[1]) * mib), int(float(parts[2]) * mib)))
        except ValueError:
            continue
    return out


def total_gpu_bytes() -> int | None:
    """Total memory of the first GPU, or None without one."""
    devices = gpu_memory()
    return devices[0].total_bytes if devices else None
