"""The one reader of this process's memory, shared by the model manager, the telemetry
probes and the web app.

Cheap and subprocess-free:

- :class:`RssReader`: this process's RSS in about a microsecond (``/proc/self/statm`` through
  one open file descriptor, psutil elsewhere); :func:`process_rss_bytes` reads it through one
  shared reader;
- :func:`max_rss_bytes`: the kernel's RSS high-water mark (``getrusage``);
- :class:`AvailableMemoryReader`: memory the system still has available (``/proc/meminfo``,
  psutil elsewhere);
- :func:`torch_cuda` / :func:`cuda_allocated_bytes`: CUDA memory through torch, only when torch
  is *already imported* and has initialised CUDA (nothing here imports torch);
- :func:`release_freed_memory`: hand freed heap pages and cached CUDA blocks back, so that the
  next RSS reading shows what is actually held.
"""

from __future__ import annotations

import os
import sys
import threading

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


_shared_lock = threading.Lock()
_shared_rss: RssReader | None = None


def process_rss_bytes() -> int:
    """This process's RSS now, through one reader shared by every caller in the process."""
    global _shared_rss
    reader = _shared_rss
    if reader is None:
        with _shared_lock:
            if _shared_rss is None:
                _shared_rss = RssReader()
            reader = _shared_rss
    return reader()


def torch_cuda():
    """``torch.cuda`` when torch is already imported and CUDA is initialised, else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_initialized() or not cuda.is_available():
            return None
    except Exception:  # a broken CUDA runtime reads as no CUDA
        return None
    return cuda


def cuda_allocated_bytes() -> int:
    """CUDA memory torch has allocated, summed over devices; 0 without initialised CUDA."""
    cuda = torch_cuda()
    if cuda is None:
        return 0
    try:
        return int(sum(cuda.memory_allocated(i) for i in range(cuda.device_count())))
    except Exception:  # a broken CUDA runtime must not break loading on the CPU
        return 0


def release_freed_memory() -> None:
    """Hand memory that closed models freed back to the OS, so RSS shows what is held.

    glibc keeps freed heap pages (``malloc_trim`` returns them) and torch keeps freed CUDA
    blocks cached (``empty_cache`` returns them). Without this, a load that reuses memory an
    earlier unload freed measures almost nothing. Cheap (well under a millisecond): it does
    not run the garbage collector; closing a model is where its references are dropped.
    Never imports torch.
    """
    cuda = torch_cuda()
    if cuda is not None:
        try:
            cuda.empty_cache()
        except Exception:  # a broken CUDA runtime must not break loading
            pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
