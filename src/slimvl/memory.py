"""Keep the C allocator from holding freed weight-sized blocks: lower peak and steady RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool:
    """`malloc_trim(0)` where glibc has it: after packing int8 weights, the freed plain copies sit in
    the heap (counted in RSS, ~2 GB at 2B) until trimmed. Returns whether anything was called."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default starting value


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every allocation above `threshold` bytes by its own mapping, returned to the OS on free.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MiB), so after the first
    weight is repacked, later weight-sized blocks come from the heap and, once freed, stay in RSS. At 2B
    int8 that cost ~1 GB while loading (plain int8 copies freed during packing). Setting the threshold
    explicitly turns that adjustment off (like `MALLOC_MMAP_THRESHOLD_`); `slimvl.load` sets a low one
    while loading and a high one (fast reuse of activation buffers) for running.
    Returns whether it was set (glibc only).
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
