"""The time one call takes: best of a few after a warm-up (what the precision kernel races compare)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_ms(call: Callable[[], object], repeats: int = 3) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, (time.perf_counter() - start) * 1e3)
    return round(best, 4)
