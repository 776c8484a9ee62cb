"""Per-stage wall-clock timing plus process CPU time over the monitored span."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Clock = Callable[[], float]


class StageTimer:
    """Accumulates wall time per named stage; repeated names add up and are counted.

    Stages nest: a stage timed inside another (scoring visual tokens inside the vision encoder) is
    counted in its own total only, not in the enclosing one's, so the totals of a request's stages add
    up to the time they spanned.

    ``start()``/``stop()`` (or ``with timer:``) bound the span over which total wall time
    and process CPU time (all threads, user + system) are taken. Stages may be timed
    inside that span; a stage whose body raises is still recorded, since the time was spent.
    Both clocks are injectable so tests can drive them.
    """

    def __init__(self, clock: Clock = time.perf_counter, cpu_clock: Clock = time.process_time) -> None:
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._totals_s: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._open: list[float] = []  # per open stage: seconds its nested stages took so far
        self._wall0: float | None = None
        self._cpu0: float | None = None
        self._wall1: float | None = None
        self._cpu1: float | None = None

    def start(self) -> None:
        self._wall0, self._cpu0 = self._clock(), self._cpu_clock()
        self._wall1 = self._cpu1 = None

    def stop(self) -> None:
        if self._wall0 is None:
            raise RuntimeError("StageTimer.stop() called before start()")
        self._wall1, self._cpu1 = self._clock(), self._cpu_clock()

    def __enter__(self) -> StageTimer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = self._clock()
        self._open.append(0.0)
        try:
            yield
        finally:
            spanned = self._clock() - t0
            nested = self._open.pop()
            if self._open:
                self._open[-1] += spanned
            self._totals_s[name] = self._totals_s.get(name, 0.0) + (spanned - nested)
            self._counts[name] = self._counts.get(name, 0) + 1

    @property
    def stages_ms(self) -> dict[str, float]:
        """Total milliseconds per stage, in order of first use."""
        return {name: s * 1e3 for name, s in self._totals_s.items()}

    @property
    def stage_counts(self) -> dict[str, int]:
        return dict(self._counts)

    @property
    def wall_s(self) -> float:
        """Wall seconds from start() to stop() (or to now while running)."""
        if self._wall0 is None:
            raise RuntimeError("StageTimer was never started")
        end = self._wall1 if self._wall1 is not None else self._clock()
        return end - self._wall0

    @property
    def cpu_s(self) -> float:
        """Process CPU seconds from start() to stop() (or to now while running)."""
        if self._cpu0 is None:
            raise RuntimeError("StageTimer was never started")
        end = self._cpu1 if self._cpu1 is not None else self._cpu_clock()
        return end - self._cpu0
