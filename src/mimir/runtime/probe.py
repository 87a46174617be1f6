"""The manager's default memory probe: what this process holds right now.

Cheap (no subprocess): RSS from psutil, and CUDA memory allocated by torch when torch is
already imported and CUDA is available (the probe never imports torch itself).
"""

from __future__ import annotations

import sys

import psutil

from mimir.runtime.policy import Footprint

_PROCESS = psutil.Process()


def process_rss_bytes() -> int:
    return int(_PROCESS.memory_info().rss)


def cuda_allocated_bytes() -> int:
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return 0
        return int(sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())))
    except Exception:  # a broken CUDA runtime must not break loading on the CPU
        return 0


def process_footprint() -> Footprint:
    return Footprint(ram_bytes=process_rss_bytes(), gpu_bytes=cuda_allocated_bytes())


def release_freed_memory() -> None:
    """Hand memory that closed models freed back to the OS, so RSS shows what is held.

    glibc keeps freed heap pages (``malloc_trim`` returns them) and torch keeps freed CUDA
    blocks cached (``empty_cache`` returns them). Without this, a load that reuses memory an
    earlier unload freed measures almost nothing. Cheap (well under a millisecond): it does
    not run the garbage collector; closing a model is where its references are dropped.
    Never imports torch.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()
        except Exception:  # a broken CUDA runtime must not break loading
            pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
