"""Large buffers go back to the system as soon as they are freed (glibc).

The daemon reads files whole, up to 5 MB each, in worker threads. glibc's
malloc serves such a buffer with its own mapping at first, but once one is
freed it raises its mmap threshold above that size; from then on they come
from per-thread arenas, which keep the memory after a free. Sending 4.9 MB
files, RSS then settled near twice what the daemon held (measured 164 MB above
idle against 102 MB with a fixed threshold).

A fixed threshold keeps every buffer of `MMAP_THRESHOLD_BYTES` or more in a
mapping of its own, unmapped on free. It sits above the 1 MiB chunks that
hashing and copying loops read (mapping and faulting each of those made them
1.7 times slower), and the trim threshold is set to twice it, as glibc's own
adjustment would, so that a freed chunk at an arena's top is reused rather
than returned and faulted back in.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD_BYTES = 2 << 20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def return_large_buffers() -> bool:
    """Fix glibc's thresholds; False where they are not set: another C library, a
    32-bit glibc (whose mmap threshold cannot exceed 512 KiB), or an environment
    that already chose (the administrator's word wins)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (
        "MALLOC_MMAP_THRESHOLD_" in os.environ
        or "MALLOC_TRIM_THRESHOLD_" in os.environ
        or "mmap_threshold" in tunables
        or "trim_threshold" in tunables
        or ctypes.sizeof(ctypes.c_void_p) < 8
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
