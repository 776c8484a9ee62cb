"""Background sampling of process RSS and CPU frequency over a span."""

from __future__ import annotations

import math
import os
import threading
import time

import psutil

from slimvl.procfs import read_vm_hwm_bytes, reset_vm_hwm


def usable_cpus() -> int:
    """CPUs this process may run on (affinity mask where the OS exposes it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return psutil.cpu_count() or 1


def _read_freq_mhz() -> float | None:
    cpu_freq = getattr(psutil, "cpu_freq", None)
    if cpu_freq is None:
        return None
    try:
        freq = cpu_freq()
    except (OSError, NotImplementedError):
        return None
    if freq is None or freq.current <= 0:
        return None
    return float(freq.current)


class ResourceSampler:
    """Samples RSS and CPU frequency every ``interval_s`` on a daemon thread.

    ``peak_rss_bytes`` is the larger of the sampled maximum and the kernel's ``VmHWM``,
    which catches spikes shorter than the interval. With ``reset_peak`` (default) the
    sampler resets ``VmHWM`` at start via ``/proc/self/clear_refs``; when that is not
    possible (``hwm_reset`` is False) ``VmHWM`` is the lifetime peak of the process and
    may predate the span. Frequency is psutil's all-CPU average; None where unreadable.
    """

    def __init__(self, interval_s: float = 0.05, reset_peak: bool = True) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self.reset_peak = reset_peak
        self.hwm_reset = False
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss: list[int] = []
        self._freq: list[float] = []
        self._hwm: int | None = None
        self._wall0: float | None = None
        self._cpu0 = 0.0
        self._wall1: float | None = None
        self._cpu1 = 0.0

    def start(self) -> None:
        if self.is_running:
            raise RuntimeError("ResourceSampler is already running")
        self._rss, self._freq, self._hwm = [], [], None
        self.hwm_reset = self.reset_peak and reset_vm_hwm()
        self._stop.clear()
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._wall1 = None
        self._sample()
        self._thread = threading.Thread(target=self._run, name="slimvl-resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._wall1, self._cpu1 = time.perf_counter(), time.process_time()
        self._sample()
        self._hwm = read_vm_hwm_bytes()

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        self._rss.append(self._process.memory_info().rss)
        freq = _read_freq_mhz()
        if freq is not None:
            self._freq.append(freq)

    @property
    def n_samples(self) -> int:
        return len(self._rss)

    @property
    def peak_rss_bytes(self) -> int:
        hwm = self._hwm if self._thread is None else read_vm_hwm_bytes()
        return max(max(self._rss, default=0), hwm or 0)

    @property
    def mean_rss_bytes(self) -> int:
        rss = list(self._rss)
        return int(math.fsum(rss) / len(rss)) if rss else 0

    @property
    def freq_mhz_min(self) -> float | None:
        return min(self._freq, default=None)

    @property
    def freq_mhz_max(self) -> float | None:
        return max(self._freq, default=None)

    @property
    def freq_mhz_mean(self) -> float | None:
        freq = list(self._freq)
        return math.fsum(freq) / len(freq) if freq else None

    @property
    def wall_s(self) -> float:
        if self._wall0 is None:
            raise RuntimeError("ResourceSampler was never started")
        return (self._wall1 if self._wall1 is not None else time.perf_counter()) - self._wall0

    @property
    def cpu_s(self) -> float:
        if self._wall0 is None:
            raise RuntimeError("ResourceSampler was never started")
        return (self._cpu1 if self._wall1 is not None else time.process_time()) - self._cpu0

    @property
    def cpu_percent(self) -> float:
        """Mean process CPU use over the span, as a percentage of all usable CPUs (0-100)."""
        wall = self.wall_s
        return 100.0 * self.cpu_s / wall / usable_cpus() if wall > 0 else 0.0
