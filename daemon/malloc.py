"""Large buffers go back to the system as soon as they are freed (glibc).

The daemon reads files whole, up to 5 MB each, in worker threads. glibc's
malloc serves such a buffer with its own mapping at first, but once one is
freed it raises its mmap threshold above that size; from then on they come
from per-thread arenas, which keep the memory after a free. Sending 4.9 MB
files, RSS then settled near twice what the daemon held (measured 164 MB above
idle against 102 MB with a fixed threshold). A fixed threshold keeps every
buffer of `THRESHOLD_BYTES` or more in a mapping of its own, unmapped on free;
smaller allocations, nearly all of them, are not affected.
"""

from __future__ import annotations

import ctypes
import os

THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold; False where it cannot be (another C library),
    or where the environment already chose one (the administrator's word wins)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES))
