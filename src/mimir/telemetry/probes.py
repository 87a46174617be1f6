"""Memory probes: cheap readings taken at the start and end of every step.

Each probe returns a mapping of known keys (see :data:`READING_KEYS`); a key it cannot fill is
left out and ends up ``None`` in the step record. No probe spawns a subprocess per step
unless the user opted into ``nvidia-smi`` as a last resort.

- :class:`ProcessProbe`: this process's RSS (``/proc/self/statm`` through one open file
  descriptor, psutil elsewhere), the kernel's RSS high-water mark (``getrusage``), and the
  memory the system still has available (``/proc/meminfo``, psutil elsewhere);
- :class:`CudaProbe`: allocated / reserved / peak-allocated CUDA memory through torch, only
  when torch is *already imported* and has initialised CUDA (it never imports torch);
- :class:`NvmlProbe`: used / total memory per GPU through NVML (:mod:`mimir.telemetry.gpu`).

A probe that raises mid-run logs one warning and reads nothing from then on: a broken probe
never breaks the pipeline.
"""

from __future__ import annotations

import logging
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

from mimir.telemetry import gpu

log = logging.getLogger("mimir.telemetry")

Phase = Literal["before", "after"]

READING_KEYS: tuple[str, ...] = (
    "rss_bytes",
    "maxrss_bytes",
    "system_available_bytes",
    "cuda_allocated_bytes",
    "cuda_reserved_bytes",
    "cuda_peak_allocated_bytes",
    "gpu_used_bytes",
    "gpu_total_bytes",
    "gpu_devices",
)

_EMPTY: Mapping[str, Any] = {}


class Probe(ABC):
    """One source of memory readings. Subclasses implement :meth:`_read`."""

    name: str = "probe"

    def __init__(self) -> None:
        self.failed: str | None = None

    def begin(self, *, first_open: bool) -> None:
        """Called when a step opens; ``first_open`` when no other step is open."""
        if self.failed is None:
            try:
                self._begin(first_open=first_open)
            except Exception as exc:
                self._fail(exc)

    def read(self, phase: Phase) -> Mapping[str, Any]:
        """This probe's readings now; empty once the probe has failed."""
        if self.failed is not None:
            return _EMPTY
        try:
            return self._read(phase)
        except Exception as exc:
            self._fail(exc)
            return _EMPTY

    def _begin(self, *, first_open: bool) -> None:
        return None

    @abstractmethod
    def _read(self, phase: Phase) -> Mapping[str, Any]:
        """Readings keyed by :data:`READING_KEYS` names; may raise."""

    def _fail(self, exc: BaseException) -> None:
        self.failed = f"{type(exc).__name__}: {exc}"
        log.warning("telemetry probe '%s' failed and is now off (its fields will be null): %s", self.name, self.failed)

    def close(self) -> None:
        return None


# -- process memory --------------------------------------------------------------------------

try:  # not on Windows
    import resource as _resource
except ImportError:  # pragma: no cover - Windows
    _resource = None

#: ru_maxrss is in KiB on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def max_rss_bytes() -> int | None:
    """The kernel's high-water mark of this process's RSS, or None where unknown."""
    if _resource is None:
        return None
    return int(_resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT


class RssReader:
    """Reads this process's RSS in about a microsecond (``/proc/self/statm``), else psutil."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._fd: int | None = None
        self._pid = os.getpid()
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            import psutil

            self._process = psutil.Process()

    def __call__(self) -> int:
        if self._fd is not None:
            if os.getpid() != self._pid:  # forked: the descriptor still reads the parent
                os.close(self._fd)
                self._fd = os.open("/proc/self/statm", os.O_RDONLY)
                self._pid = os.getpid()
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        return int(self._process.memory_info().rss)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
            import psutil

            self._process = psutil.Process()


class AvailableMemoryReader:
    """System available memory (``MemAvailable``), else psutil."""

    def __init__(self) -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open("/proc/meminfo", os.O_RDONLY)
        except OSError:
            pass

    def __call__(self) -> int:
        if self._fd is not None:
            data = os.pread(self._fd, 8192, 0)
            i = data.find(b"MemAvailable:")
            if i >= 0:
                return int(data[i + 13 : data.index(b"kB", i)]) * 1024
        import psutil

        return int(psutil.virtual_memory().available)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class ProcessProbe(Probe):
    name = "process"

    def __init__(self) -> None:
        super().__init__()
        self.rss = RssReader()
        self._available = AvailableMemoryReader()

    def _read(self, phase: Phase) -> Mapping[str, Any]:
        out: dict[str, Any] = {"rss_bytes": self.rss(), "maxrss_bytes": max_rss_bytes()}
        if phase == "after":
            out["system_available_bytes"] = self._available()
        return out

    def close(self) -> None:
        self.rss.close()
        self._available.close()


# -- CUDA through torch ------------------------------------------------------------------------


def _torch_cuda():
    """``torch.cuda`` when torch is already imported and CUDA is initialised, else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_initialized() or not cuda.is_available():
        return None
    return cuda


class CudaProbe(Probe):
    """CUDA memory summed over devices. The peak counter resets when the first step opens;
    with overlapping steps a step's peak may include memory of the other steps."""

    name = "cuda"

    def _begin(self, *, first_open: bool) -> None:
        cuda = _torch_cuda()
        if cuda is not None and first_open:
            for i in range(cuda.device_count()):
                cuda.reset_peak_memory_stats(i)

    def _read(self, phase: Phase) -> Mapping[str, Any]:
        cuda = _torch_cuda()
        if cuda is None:
            return _EMPTY
        devices = range(cuda.device_count())
        out = {
            "cuda_allocated_bytes": sum(int(cuda.memory_allocated(i)) for i in devices),
            "cuda_reserved_bytes": sum(int(cuda.memory_reserved(i)) for i in devices),
        }
        if phase == "after":
            out["cuda_peak_allocated_bytes"] = sum(int(cuda.max_memory_allocated(i)) for i in devices)
        return out


# -- GPU devices through NVML --------------------------------------------------------------


class NvmlProbe(Probe):
    """Used/total memory per GPU through NVML. With ``allow_smi`` and no NVML, one
    ``nvidia-smi`` call per reading (slow: only when the user asked for it)."""

    name = "nvml"

    def __init__(self, *, allow_smi: bool = False) -> None:
        super().__init__()
        self.allow_smi = allow_smi

    def _read(self, phase: Phase) -> Mapping[str, Any]:
        devices = gpu.read_gpu_memory()
        if devices is None and self.allow_smi:
            devices = gpu.gpu_memory_via_smi()
        if not devices:
            return _EMPTY
        return {
            "gpu_used_bytes": sum(d.used_bytes for d in devices),
            "gpu_total_bytes": sum(d.total_bytes for d in devices),
            "gpu_devices": tuple(devices),
        }


def default_probes(*, nvidia_smi: bool = False) -> list[Probe]:
    """Every probe that can run here; the GPU ones read nothing on a machine without a GPU."""
    return [ProcessProbe(), CudaProbe(), NvmlProbe(allow_smi=nvidia_smi)]
