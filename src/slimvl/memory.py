"""Give the C allocator's free memory back to the operating system after a large load."""

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
