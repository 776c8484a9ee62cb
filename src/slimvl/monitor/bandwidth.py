"""Achievable memory read bandwidth, the ceiling for memory-bound decode.

Each method streams the whole buffer once through a torch reduction using torch's
intra-op thread pool; the reported figure is the best method. A single-threaded
``numpy.sum`` underestimates badly (about 29 vs 56 GB/s on the dev machine), because
one core cannot saturate the memory controllers. Use a buffer much larger than the
last-level cache (the 2 GiB default), or the figure measures cache, not DRAM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BandwidthResult:
    gbps: float  # best method, 1e9 bytes/s
    method: str  # name of the best method
    per_method: dict[str, float]  # GB/s of each method
    size_bytes: int  # bytes read per pass
    threads: int  # torch intra-op threads used


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: thread pool spin-up, first-touch effects
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_read_bandwidth(
    size_bytes: int = 2 * 1024**3, repeats: int = 3, threads: int | None = None
) -> BandwidthResult:
    """Best of a few reductions over a touched buffer of ``size_bytes`` (rounded down to 4 bytes).

    ``threads`` temporarily sets torch's intra-op threads (restored afterwards); None keeps
    the current setting.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    numel = size_bytes // 4
    if numel < 1:
        raise ValueError("size_bytes must be at least 4")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        buf = torch.empty(numel, dtype=torch.float32).fill_(1.0)
        as_bf16 = buf.view(torch.bfloat16)  # same bytes; float32 1.0 reads as bf16 {0, 1}, no NaN
        nbytes = buf.numel() * buf.element_size()
        methods: dict[str, Callable[[], object]] = {
            "torch.sum(float32)": buf.sum,
            "torch.amax(float32)": buf.amax,
            "torch.amax(bfloat16)": as_bf16.amax,
        }
        per_method = {name: nbytes / _best_seconds(fn, repeats) / 1e9 for name, fn in methods.items()}
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    best = max(per_method, key=per_method.__getitem__)
    return BandwidthResult(
        gbps=per_method[best], method=best, per_method=per_method, size_bytes=nbytes, threads=used_threads
    )
