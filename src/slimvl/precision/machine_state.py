"""A cheap snapshot of the machine state that the adaptive-precision controller decides on: free memory,
battery, CPU temperature, load and clock. Laptops differ in which sensors they expose, so every reading
goes through psutil defensively: a sensor that is absent, empty or raising gives None (or a safe value
for the ints), and a request is never refused because a machine lacks a thermometer."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from slimvl.procfs import procs_running

CPU_SENSOR_NAMES = ("coretemp", "k10temp", "zenpower", "cpu", "acpitz", "soc")  # substrings, lower case


@dataclass(frozen=True)
class MachineState:
    """What the machine looks like at one moment.

    available_memory_bytes: memory the OS can give without swapping (0 when unreadable).
    on_battery: None where there is no battery or its state is unknown.
    battery_percent: charge 0..100, None when unknown.
    temperature_c: hottest readable CPU/package sensor, None when none is readable.
    critical_temperature_c: that sensor's `high` (else `critical`) threshold, None when it gives none.
    cpu_load: the share 0..1 of the machine's CPU time other processes used since the previous reading
        (`OtherLoad`: this process's own work left out; the first reading in a process is 0).
    cpu_freq_ratio: current / max clock, None when unreadable or the max is not reported.
    logical_cpus: logical CPUs of the machine (at least 1).
    """

    available_memory_bytes: int
    on_battery: bool | None
    battery_percent: float | None
    temperature_c: float | None
    critical_temperature_c: float | None
    cpu_load: float
    cpu_freq_ratio: float | None
    logical_cpus: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


StateSource = Callable[[], MachineState]


def _call(name: str, **kwargs: Any) -> Any:
    """`psutil.<name>(**kwargs)`, or None where this platform lacks it or reading it fails."""
    function = getattr(psutil, name, None)
    if function is None:
        return None
    try:
        return function(**kwargs)
    except Exception:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _positive(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _available_memory() -> int:
    available = _number(getattr(_call("virtual_memory"), "available", None))
    return int(available) if available is not None and available >= 0 else 0


def _battery() -> tuple[bool | None, float | None]:
    battery = _call("sensors_battery")
    plugged = getattr(battery, "power_plugged", None)
    on_battery = not plugged if isinstance(plugged, bool) else None
    return on_battery, _number(getattr(battery, "percent", None))


def _temperature() -> tuple[float | None, float | None]:
    """The hottest CPU-like sensor's reading and its threshold."""
    sensors = _call("sensors_temperatures")
    hottest: float | None = None
    threshold: float | None = None
    if not isinstance(sensors, dict):
        return hottest, threshold
    for name, entries in sensors.items():
        if not isinstance(entries, list | tuple) or not any(
            part in str(name).lower() for part in CPU_SENSOR_NAMES
        ):
            continue
        for entry in entries:
            current = _number(getattr(entry, "current", None))
            if current is not None and (hottest is None or current > hottest):
                hottest = current
                high = _positive(getattr(entry, "high", None))
                threshold = high if high is not None else _positive(getattr(entry, "critical", None))
    return hottest, threshold


class OtherLoad:
    """The share of the machine's CPU time that other processes used in a recent window.

    System-wide utilisation alone counts this process's own work: right after a request that kept
    every core busy it reads ~1.0, and a controller would take the machine for busy before every
    request but the first. So this process's CPU time is taken out of the system's busy time. The
    window is the time since the previous reading, or, once `sample_every` runs, the last
    completed sampling period (at most `period` seconds old): what happened between two requests
    long ago says little about now. And where nothing but the reading thread becomes runnable within
    `CONFIRM_S` (Linux's ``procs_running``), the load that was is over: it reads 0. (An idle PyTorch
    process's OpenMP threads spin for ~0.1-0.3 s after its last work: a neighbour that has just
    finished still looks busy for that long.)"""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=2)  # busy s, total s, own s
        self._lock = threading.Lock()
        self._sampler: threading.Thread | None = None

    def sample_every(self, period: float) -> None:
        """Sample in a daemon thread every `period` seconds from now on (once per process)."""
        with self._lock:
            if self._sampler is not None:
                return
            self._sampler = threading.Thread(target=self._sample_forever, args=(period,), daemon=True)
            self._sampler.start()

    def read(self) -> float:
        """0..1 over the window (0 at the first reading, and where the counters are unreadable)."""
        with self._lock:
            if self._sampler is None:
                self._sample()
            if len(self._samples) < 2:
                return 0.0
            (busy0, total0, own0), (busy1, total1, own1) = self._samples
        if total1 <= total0:
            return 0.0
        load = min(max(((busy1 - busy0) - (own1 - own0)) / (total1 - total0), 0.0), 1.0)
        if load > 0 and _load_is_over():
            return 0.0
        return load

    def _sample_forever(self, period: float) -> None:
        while True:
            with self._lock:
                self._sample()
            time.sleep(period)

    def _sample(self) -> None:
        system, own = _call("cpu_times"), _own_cpu_seconds()
        if system is None or own is None:
            self._samples.clear()
            return
        fields = system._asdict() if hasattr(system, "_asdict") else {}
        total = sum(
            v for k, v in fields.items() if k not in ("guest", "guest_nice") and _number(v) is not None
        )
        idle = sum(fields.get(k, 0.0) for k in ("idle", "iowait", "steal"))
        self._samples.append((total - idle, total, own))


CONFIRM_S = 0.3  # how long a load may take to show it is over (see `OtherLoad`)
_CONFIRM_POLL_S = 0.01


def _load_is_over() -> bool:
    """True once nothing but the reading thread is runnable, polled for up to `CONFIRM_S`; False where
    it stays busy or cannot be read."""
    deadline = time.monotonic() + CONFIRM_S
    while True:
        running = procs_running()
        if running is None:
            return False
        if running <= 1:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_CONFIRM_POLL_S)


def _own_cpu_seconds() -> float | None:
    process = _call("Process")
    times = getattr(process, "cpu_times", None)
    try:
        used = times() if times is not None else None
    except Exception:
        return None
    return None if used is None else float(used.user + used.system)


_OTHER_LOAD = OtherLoad()


def sample_load_every(period: float) -> None:
    """Keep `read_machine_state`'s cpu_load over the last `period` seconds (a daemon sampler)."""
    _OTHER_LOAD.sample_every(period)


def _cpu_freq_ratio() -> float | None:
    freq = _call("cpu_freq")
    current = _positive(getattr(freq, "current", None))
    maximum = _positive(getattr(freq, "max", None))
    return current / maximum if current is not None and maximum is not None else None


def _logical_cpus() -> int:
    count = _call("cpu_count", logical=True)
    return count if isinstance(count, int) and count > 0 else os.cpu_count() or 1


def read_machine_state() -> MachineState:
    """Read the machine's state now; never raises for an unreadable sensor and never blocks."""
    on_battery, battery_percent = _battery()
    temperature, critical = _temperature()
    return MachineState(
        available_memory_bytes=_available_memory(),
        on_battery=on_battery,
        battery_percent=battery_percent,
        temperature_c=temperature,
        critical_temperature_c=critical,
        cpu_load=_OTHER_LOAD.read(),
        cpu_freq_ratio=_cpu_freq_ratio(),
        logical_cpus=_logical_cpus(),
    )
