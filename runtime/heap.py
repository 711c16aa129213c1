"""Opt-in: keeping freed memory in the process heap, so that big transforms do not page-fault
anew on every call.

glibc serves allocations above its mmap threshold (128 KB, rising to at most 32 MB) with
fresh pages from the kernel and unmaps them on free, so every g_a or g_s call touches its
hundreds of MB of activations for the first time again: on this project's VM a decode of a
1024^2 image took ~141 000 page faults, several microseconds each. With the threshold raised
and trimming off, freed blocks stay in the heap and the next layer, block or image reuses
them: encode 1.10-1.16x and later decodes 1.07-1.23x faster at 1024^2, but peak memory
+17-21 % there and up to +42 % on a 4096^2 scene (heap fragmentation; ``benchmarks/heap_retention.py``,
docs/performance.md). Handing the free pages back after each transform pass
(``malloc_trim``) kept the peak and lost the speed, so this stays a choice for
throughput-bound processes with memory to spare, not the default.

Process-wide (it configures the C library's allocator): ``STCM_RETAIN_HEAP=1`` in the
environment applies it when the first ``Codec`` is made. A no-op where the C library is not
glibc.
"""
from __future__ import annotations

import ctypes
import os
import platform

ENV = "STCM_RETAIN_HEAP"
# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Allocations up to 1 GiB come from the heap (g_s' widest activation of a 64-position block
# is ~0.4 GB); larger ones still map their own pages and return them on free.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2 ** 31 - 1  # never trim the top of the heap

_applied: bool | None = None


def retain_freed_memory(enable: bool | None = None) -> bool:
    """Configures glibc's allocator to keep freed memory, once per process, when ``enable``
    (None: when ``STCM_RETAIN_HEAP=1``); True when it is in force."""
    global _applied
    if _applied is None:
        wanted = os.environ.get(ENV, "0") == "1" if enable is None else enable
        _applied = _configure() if wanted else None
    return bool(_applied)


def _configure() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
