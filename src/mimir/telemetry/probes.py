"""Memory probes: cheap readings taken at the start and end of every step.

Each probe returns a mapping of known keys (see :data:`READING_KEYS`); a key it cannot fill is
left out and ends up ``None`` in the step record. No probe spawns a subprocess per step
unless the user opted into ``nvidia-smi`` as a last resort.

- :class:`ProcessProbe`: this process's RSS, the kernel's RSS high-water mark and the memory
  the system still has available, through :mod:`mimir.core.memory` (the reader the model
  manager and the web app use too);
- :class:`CudaProbe`: allocated / reserved / peak-allocated CUDA memory through torch, only
  when torch is *already imported* and has initialised CUDA (it never imports torch);
- :class:`NvmlProbe`: used / total memory per GPU through NVML (:mod:`mimir.core.gpu`).

A probe that raises mid-run logs one warning and reads nothing from then on: a broken probe
never breaks the pipeline.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

from mimir.core import gpu
from mimir.core.memory import AvailableMemoryReader, RssReader, max_rss_bytes, torch_cuda

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


class CudaProbe(Probe):
    """CUDA memory summed over devices. The peak counter resets when the first step opens;
    with overlapping steps a step's peak may include memory of the other steps."""

    name = "cuda"

    def _begin(self, *, first_open: bool) -> None:
        cuda = torch_cuda()
        if cuda is not None and first_open:
            for i in range(cuda.device_count()):
                cuda.reset_peak_memory_stats(i)

    def _read(self, phase: Phase) -> Mapping[str, Any]:
        cuda = torch_cuda()
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
