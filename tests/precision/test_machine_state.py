"""read_machine_state: plausible psutil readings become the right fields; absent, empty, None-returning
or raising sensors become None (or safe ints) instead of an exception."""

from __future__ import annotations

import os
import time
from collections import namedtuple

import psutil
import pytest

from slimvl.precision import machine_state
from slimvl.precision.machine_state import MachineState, read_machine_state

Memory = namedtuple("Memory", "total available")
Battery = namedtuple("Battery", "percent secsleft power_plugged")
Temp = namedtuple("Temp", "label current high critical")
Freq = namedtuple("Freq", "current min max")
CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
OwnTimes = namedtuple("OwnTimes", "user system children_user children_system")

SENSORS = (
    "virtual_memory",
    "sensors_battery",
    "sensors_temperatures",
    "cpu_times",
    "cpu_freq",
    "cpu_count",
)


def fake_psutil(monkeypatch: pytest.MonkeyPatch, **readings: object) -> dict[str, dict]:
    """Replace psutil's sensor functions by ones returning `readings` (and start a new load window);
    returns the kwargs each got."""
    monkeypatch.setattr(machine_state, "_OTHER_LOAD", machine_state.OtherLoad())
    monkeypatch.setattr(machine_state, "procs_running", lambda: None)  # as off Linux, unless a test says
    calls: dict[str, dict] = {}

    def reader(name: str, value: object):
        def read(**kwargs: object) -> object:
            calls[name] = kwargs
            return value

        return read

    for name, value in readings.items():
        monkeypatch.setattr(psutil, name, reader(name, value))
    return calls


PLAUSIBLE = {
    "virtual_memory": Memory(total=16 * 2**30, available=6 * 2**30),
    "sensors_battery": Battery(percent=42.0, secsleft=3600, power_plugged=False),
    "sensors_temperatures": {
        "coretemp": [Temp("Package id 0", 71.0, 90.0, 100.0), Temp("Core 0", 75.0, None, 100.0)],
        "nvme": [Temp("Composite", 99.0, 80.0, 85.0)],
    },
    "cpu_times": None,  # set per test: the load needs two readings (test_other_processes_load...)
    "cpu_freq": Freq(current=1200.0, min=400.0, max=2400.0),
    "cpu_count": 8,
}


def test_plausible_readings_give_the_right_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_psutil(monkeypatch, **PLAUSIBLE)
    state = read_machine_state()
    assert state == MachineState(
        available_memory_bytes=6 * 2**30,
        on_battery=True,
        battery_percent=42.0,
        temperature_c=75.0,  # hottest CPU sensor; the hotter nvme is not a CPU sensor
        critical_temperature_c=100.0,  # that sensor has no `high`, so its `critical`
        cpu_load=0.0,  # no counters: no load known
        cpu_freq_ratio=0.5,
        logical_cpus=8,
    )
    assert state.to_dict()["temperature_c"] == 75.0


def test_plugged_in_is_not_on_battery(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_psutil(monkeypatch, **{**PLAUSIBLE, "sensors_battery": Battery(97.0, -2, True)})
    state = read_machine_state()
    assert state.on_battery is False
    assert state.battery_percent == 97.0


def test_unknown_plug_state_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_psutil(monkeypatch, **{**PLAUSIBLE, "sensors_battery": Battery(50.0, -1, None)})
    assert read_machine_state().on_battery is None


def test_the_hottest_sensor_brings_its_own_high_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    temperatures = {
        "k10temp": [Temp("Tctl", 60.0, 70.0, 80.0)],
        "acpitz": [Temp("", 88.0, 95.0, 105.0)],
    }
    fake_psutil(monkeypatch, **{**PLAUSIBLE, "sensors_temperatures": temperatures})
    state = read_machine_state()
    assert (state.temperature_c, state.critical_temperature_c) == (88.0, 95.0)


@pytest.mark.parametrize("name", ["coretemp", "k10temp", "cpu_thermal", "acpitz", "zenpower"])
def test_cpu_like_sensor_names_are_read(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    fake_psutil(monkeypatch, **{**PLAUSIBLE, "sensors_temperatures": {name: [Temp("", 55.0, None, None)]}})
    state = read_machine_state()
    assert (state.temperature_c, state.critical_temperature_c) == (55.0, None)


@pytest.mark.parametrize(
    "temperatures", [{}, {"nvme": [Temp("Composite", 40.0, 80.0, 85.0)]}, {"coretemp": []}]
)
def test_no_cpu_temperature_is_none(monkeypatch: pytest.MonkeyPatch, temperatures: dict) -> None:
    fake_psutil(monkeypatch, **{**PLAUSIBLE, "sensors_temperatures": temperatures})
    state = read_machine_state()
    assert state.temperature_c is None
    assert state.critical_temperature_c is None


def test_unreported_max_frequency_gives_no_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_psutil(monkeypatch, **{**PLAUSIBLE, "cpu_freq": Freq(current=2596.1, min=0.0, max=0.0)})
    assert read_machine_state().cpu_freq_ratio is None


def assert_all_unknown(state: MachineState) -> None:
    assert state.available_memory_bytes == 0
    assert state.on_battery is None
    assert state.battery_percent is None
    assert state.temperature_c is None
    assert state.critical_temperature_c is None
    assert state.cpu_load == 0.0
    assert state.cpu_freq_ratio is None
    assert state.logical_cpus == (os.cpu_count() or 1)


def test_raising_sensors_give_none(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = [OSError("sysfs"), NotImplementedError(), RuntimeError("x"), AttributeError("y"), ValueError()]
    for name, error in zip(SENSORS, errors + [PermissionError()], strict=True):

        def fail(_error: Exception = error, **kwargs: object) -> object:
            raise _error

        monkeypatch.setattr(psutil, name, fail)
    assert_all_unknown(read_machine_state())


def test_sensors_returning_none_give_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_psutil(monkeypatch, **dict.fromkeys(SENSORS))
    assert_all_unknown(read_machine_state())


def test_absent_sensors_give_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SENSORS:
        monkeypatch.delattr(psutil, name)
    assert_all_unknown(read_machine_state())


def test_this_machine_reads_without_error() -> None:
    state = read_machine_state()
    assert state.available_memory_bytes > 0
    assert 0.0 <= state.cpu_load <= 1.0
    assert state.logical_cpus >= 1


def test_other_processes_load_leaves_this_process_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """50 s of CPU time pass (2 CPUs x 25 s): 25 s busy, 12 s of them this process's own: others 26%.
    Steal (the hypervisor's) and guest time (already in user) are not other processes' work."""
    system = iter(
        [
            CpuTimes(10.0, 0.0, 5.0, 85.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0),
            CpuTimes(30.0, 0.0, 10.0, 105.0, 0.0, 0.0, 0.0, 5.0, 9.0, 0.0),
        ]
    )
    own = iter([OwnTimes(2.0, 1.0, 0.0, 0.0), OwnTimes(12.0, 3.0, 0.0, 0.0)])

    class Process:
        def cpu_times(self) -> OwnTimes:
            return next(own)

    fake_psutil(monkeypatch, **PLAUSIBLE)
    monkeypatch.setattr(psutil, "cpu_times", lambda **_: next(system))
    monkeypatch.setattr(psutil, "Process", Process)
    assert read_machine_state().cpu_load == 0.0  # the first reading opens the window
    assert read_machine_state().cpu_load == pytest.approx(13 / 50)


def _busy_and_total() -> tuple[float, float]:
    times = psutil.cpu_times()
    total = sum(v for k, v in times._asdict().items() if k not in ("guest", "guest_nice"))
    return total - sum(getattr(times, k, 0.0) for k in ("idle", "iowait", "steal")), total


def test_this_process_alone_is_no_load() -> None:
    """Our own busy spell is left out: the reading is the system's utilisation less our share (other
    processes on a shared test machine may add load of their own, which both see)."""
    window = machine_state.OtherLoad()
    window.read()
    busy0, total0 = _busy_and_total()
    own0 = sum(psutil.Process().cpu_times()[:2])
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:  # keep one CPU busy ourselves
        pass
    reading = window.read()
    busy1, total1 = _busy_and_total()
    own_share = (sum(psutil.Process().cpu_times()[:2]) - own0) / (total1 - total0)
    system = (busy1 - busy0) / (total1 - total0)
    assert own_share > 0.2  # the busy loop did count in the system's time
    assert reading <= max(system - own_share, 0.0) + 0.15


def test_a_sampling_window_sees_the_recent_load_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a sampler the window runs from the previous reading, and a busy spell since then counts;
    with one, only the last period counts."""
    clock = {"busy": 0.0, "idle": 1.0}

    def cpu_times(**_: object) -> CpuTimes:
        return CpuTimes(clock["busy"], 0.0, 0.0, clock["idle"], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    class Process:
        def cpu_times(self) -> OwnTimes:
            return OwnTimes(0.0, 0.0, 0.0, 0.0)

    fake_psutil(monkeypatch, **PLAUSIBLE)
    monkeypatch.setattr(psutil, "cpu_times", cpu_times)
    monkeypatch.setattr(psutil, "Process", Process)
    unsampled, sampled = machine_state.OtherLoad(), machine_state.OtherLoad()
    unsampled.read()
    clock["busy"] += 100.0  # other processes kept the machine busy for a while
    sampled.sample_every(0.02)
    time.sleep(0.1)
    for _ in range(20):  # then the machine idles
        clock["idle"] += 1.0
        time.sleep(0.01)
    time.sleep(0.1)
    assert sampled.read() == 0.0
    assert unsampled.read() > 0.8


def test_a_load_that_is_over_reads_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """The window saw others busy, but at the instant of reading only the reading thread runs."""
    system = iter(
        [
            CpuTimes(0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            CpuTimes(40.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            CpuTimes(80.0, 0.0, 0.0, 30.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        ]
    )

    class Process:
        def cpu_times(self) -> OwnTimes:
            return OwnTimes(0.0, 0.0, 0.0, 0.0)

    fake_psutil(monkeypatch, **PLAUSIBLE)
    monkeypatch.setattr(psutil, "cpu_times", lambda **_: next(system))
    monkeypatch.setattr(psutil, "Process", Process)
    window = machine_state.OtherLoad()
    window.read()
    monkeypatch.setattr(machine_state, "procs_running", lambda: 3)
    assert window.read() == pytest.approx(0.8)
    monkeypatch.setattr(machine_state, "procs_running", lambda: 1)
    assert window.read() == 0.0
