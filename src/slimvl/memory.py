"""Keep the C allocator from holding freed weight-sized blocks: lower peak and steady RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
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


M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default starting values
TRIM_THRESHOLD_BYTES = 128 * 1024


def fix_mmap_threshold(
    threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES
) -> bool:
    """Serve every allocation above `threshold` bytes by its own mapping, returned to the OS on free,
    and keep up to `trim_threshold` bytes free at the top of the heap before handing them back.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MiB), so after the first
    weight is repacked, later weight-sized blocks come from the heap and, once freed, stay in RSS. At 2B
    int8 that cost ~1 GB while loading (plain int8 copies freed during packing). Setting the threshold
    explicitly turns that adjustment off (like `MALLOC_MMAP_THRESHOLD_`), and with it the adjustment of
    the trim threshold, which stays at its 128 KiB start unless set here: then each freed activation at
    the heap top is handed back and the next one faults its pages in again (2B int8 vision: 130-470 k
    page faults per image, ~20% of its time). `slimvl.load` sets a low mmap threshold while loading, and
    for running a high one (fast reuse of activation buffers) with a high trim threshold; the pipeline
    trims explicitly between stages (`release_free_memory`).
    Returns whether both were set (glibc only).
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    mmap_set = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    return bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)) and mmap_set


def freeze_loaded_objects() -> None:
    """Move every Python object alive now (modules, the loaded model) out of the garbage collector's
    reach (`gc.freeze`), after collecting what is already garbage. A full collection traverses every
    tracked object, hundreds of thousands once transformers is imported, and when it falls inside a
    request it adds its whole duration to that request; frozen, those objects are never traversed.
    For commands that load one model and keep it (`slimvl run`, `serve`, the bench workers): the
    frozen objects are never freed by the collector (reference counting still frees them)."""
    gc.collect()
    gc.freeze()
