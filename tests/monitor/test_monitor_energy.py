import sys
import types
from pathlib import Path

import pytest

from slimvl.monitor import EnergyMeter

MAX_RANGE_UJ = 262_143_328_850


def _domain(root: Path, dirname: str, name: str, energy_uj: int, max_range: int = MAX_RANGE_UJ) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(f"{name}\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d / "energy_uj"


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError


def test_rapl_package_domains_only(tmp_path: Path, no_nvml: None) -> None:
    pkg0 = _domain(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    pkg1 = _domain(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    core = _domain(tmp_path, "intel-rapl:0:0", "core", 0)
    psys = _domain(tmp_path, "intel-rapl:2", "psys", 0)
    meter = EnergyMeter(powercap_root=tmp_path)
    assert meter.available and meter.reason == ""
    assert meter.sources == ["RAPL package-0", "RAPL package-1"]
    meter.start()
    pkg0.write_text("4000000")
    pkg1.write_text("6500000")
    core.write_text("99000000")
    psys.write_text("99000000")
    assert meter.stop() == pytest.approx(4.5)
    assert meter.by_source == pytest.approx({"RAPL package-0": 3.0, "RAPL package-1": 1.5})
    assert "package-0" in meter.note and "NVML: not installed" in meter.note


def test_rapl_wraparound(tmp_path: Path, no_nvml: None) -> None:
    pkg = _domain(tmp_path, "intel-rapl:0", "package-0", 999_000_000, max_range=1_000_000_000)
    meter = EnergyMeter(powercap_root=tmp_path)
    meter.start()
    pkg.write_text("1000000")
    assert meter.stop() == pytest.approx(2.0)


def test_not_measurable(tmp_path: Path, no_nvml: None) -> None:
    meter = EnergyMeter(powercap_root=tmp_path / "powercap")
    assert not meter.available
    assert meter.reason.startswith("RAPL not readable here: ")
    assert meter.reason.endswith("; NVML: not installed")
    meter.start()
    assert meter.stop() is None
    assert meter.note == meter.reason


def test_unreadable_package_disables_rapl(tmp_path: Path, no_nvml: None) -> None:
    _domain(tmp_path, "intel-rapl:0", "package-0", 1)
    (tmp_path / "intel-rapl:1").mkdir()
    (tmp_path / "intel-rapl:1" / "name").write_text("package-1\n")  # no counters
    meter = EnergyMeter(powercap_root=tmp_path)
    assert not meter.available
    assert "intel-rapl:1" in meter.reason


def test_counter_lost_mid_span_gives_none(tmp_path: Path, no_nvml: None) -> None:
    pkg = _domain(tmp_path, "intel-rapl:0", "package-0", 1)
    meter = EnergyMeter(powercap_root=tmp_path)
    meter.start()
    pkg.unlink()
    assert meter.stop() is None
    assert "read failed" in meter.note


def test_nvml_energy_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter_mj = {0: 10_000}

    class NVMLError(Exception):
        pass

    fake = types.ModuleType("pynvml")
    fake.NVMLError = NVMLError
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetCount = lambda: 1
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetTotalEnergyConsumption = lambda h: counter_mj[h]
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    pkg = _domain(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = EnergyMeter(powercap_root=tmp_path)
    assert meter.sources == ["RAPL package-0", "NVML GPU0"]
    meter.start()
    pkg.write_text("2000000")
    counter_mj[0] = 13_500
    assert meter.stop() == pytest.approx(5.5)

    gpu_only = EnergyMeter(powercap_root=tmp_path / "absent")
    assert gpu_only.available and gpu_only.sources == ["NVML GPU0"]
