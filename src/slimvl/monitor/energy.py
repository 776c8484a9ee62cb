"""Energy over a span from Intel RAPL package counters and, where present, NVML GPU counters.

Nothing here estimates: if a counter cannot be read the result is None with a reason.
RAPL package counters cover the whole CPU package (all processes, not just this one).
A RAPL counter that wraps more than once within one span cannot be detected (at ~50 W a
typical 2^38 uJ range wraps after about 90 minutes), so keep spans shorter than that.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_DIR = re.compile(r"intel-rapl:\d+")


@dataclass(frozen=True)
class _RaplPackage:
    label: str
    energy_path: Path
    max_range_uj: int

    def read_uj(self) -> int:
        return int(self.energy_path.read_text())


def _describe(err: Exception) -> str:
    if isinstance(err, PermissionError):
        return f"{err.filename}: permission denied (energy_uj is root-only since the 2020 PLATYPUS fix)"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def _find_rapl(root: Path) -> tuple[list[_RaplPackage], str]:
    """Package domains (``intel-rapl:N`` named ``package-*``), or none and why.

    Sub-domains (core, uncore, dram) lie inside a package and ``psys`` contains it, so only
    package domains are summed. If any package is unreadable none is used, since a partial
    sum would under-report.
    """
    if not root.is_dir():
        return [], f"{root} does not exist"
    packages: list[_RaplPackage] = []
    for domain in sorted(root.iterdir()):
        if not _PACKAGE_DIR.fullmatch(domain.name):
            continue
        try:
            name = (domain / "name").read_text().strip()
            if not name.startswith("package"):
                continue
            package = _RaplPackage(
                label=name,
                energy_path=domain / "energy_uj",
                max_range_uj=int((domain / "max_energy_range_uj").read_text()),
            )
            package.read_uj()
        except (OSError, ValueError) as err:
            return [], _describe(err)
        packages.append(package)
    if not packages:
        return [], f"no intel-rapl package domain under {root}"
    return packages, ""


def _open_nvml() -> tuple[Any, list[Any], str]:
    """(pynvml module, device handles, why-not) for GPUs that report total energy."""
    try:
        import pynvml
    except ImportError:
        return None, [], "not installed"
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        for handle in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as err:
        return None, [], f"unavailable ({err})"
    if not handles:
        return None, [], "no GPU"
    return pynvml, handles, ""


class EnergyMeter:
    """``start()`` then ``stop() -> joules | None`` summed over every readable source.

    Construct once and reuse across requests: probing NVML is not free.
    ``by_source`` holds the last span's joules per source.
    """

    def __init__(self, powercap_root: str | os.PathLike[str] = POWERCAP_ROOT, use_nvml: bool = True) -> None:
        self._rapl, self._rapl_why = _find_rapl(Path(powercap_root))
        if use_nvml:
            self._nvml, self._gpus, self._nvml_why = _open_nvml()
        else:
            self._nvml, self._gpus, self._nvml_why = None, [], "disabled"
        self._start: dict[str, int] | None = None
        self._failure = ""
        self.joules: float | None = None
        self.by_source: dict[str, float] = {}

    @property
    def sources(self) -> list[str]:
        return [f"RAPL {p.label}" for p in self._rapl] + [f"NVML GPU{i}" for i in range(len(self._gpus))]

    @property
    def available(self) -> bool:
        return bool(self.sources)

    @property
    def reason(self) -> str:
        """Why no energy can be measured here; empty when some source works."""
        if self.available:
            return ""
        return f"RAPL not readable here: {self._rapl_why}; NVML: {self._nvml_why}"

    @property
    def note(self) -> str:
        """What the measurement covers, or why there is none."""
        if self._failure:
            return self._failure
        if not self.available:
            return self.reason
        parts = []
        if self._rapl:
            parts.append(f"RAPL {', '.join(p.label for p in self._rapl)} (whole CPU package, all processes)")
        else:
            parts.append(f"RAPL: {self._rapl_why}")
        parts.append(f"NVML {len(self._gpus)} GPU(s)" if self._gpus else f"NVML: {self._nvml_why}")
        return "; ".join(parts)

    def _read(self) -> dict[str, int]:
        """Raw counters: RAPL in uJ, NVML in mJ."""
        counters = {f"RAPL {p.label}": p.read_uj() for p in self._rapl}
        for i, handle in enumerate(self._gpus):
            counters[f"NVML GPU{i}"] = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        return counters

    def _read_or_fail(self) -> dict[str, int] | None:
        nvml_error = self._nvml.NVMLError if self._nvml is not None else OSError
        try:
            return self._read()
        except (OSError, ValueError, nvml_error) as err:
            self._failure = f"energy counter read failed: {_describe(err)}"
            return None

    def start(self) -> None:
        self._failure, self.joules, self.by_source = "", None, {}
        self._start = self._read_or_fail() if self.available else None

    def stop(self) -> float | None:
        if self._start is None:
            return None
        start, self._start = self._start, None
        end = self._read_or_fail()
        if end is None:
            return None
        for package in self._rapl:
            key = f"RAPL {package.label}"
            delta_uj = end[key] - start[key]
            if delta_uj < 0:
                delta_uj += package.max_range_uj
            self.by_source[key] = delta_uj / 1e6
        for i in range(len(self._gpus)):
            key = f"NVML GPU{i}"
            self.by_source[key] = (end[key] - start[key]) / 1e3
        self.joules = sum(self.by_source.values())
        return self.joules
