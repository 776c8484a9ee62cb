"""Cheap description of the machine a measurement ran on (no benchmarking here)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil
import torch

from .sampler import usable_cpus

ISA_FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def _read_cpuinfo(path: Path) -> tuple[str | None, set[str]]:
    """(model name, flags) of the first CPU listed; (None, empty) where unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return None, set()
    model: str | None = None
    flags: set[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
        if model is not None and flags is not None:
            break
    return model, flags or set()


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(cpuinfo_path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU, memory and software facts that a benchmark result depends on."""
    model, flags = _read_cpuinfo(Path(cpuinfo_path))
    return {
        "cpu_model": model or platform.processor() or None,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cpus": usable_cpus(),
        "isa_flags": [flag for flag in ISA_FLAGS_OF_INTEREST if flag in flags],
        "total_memory_bytes": psutil.virtual_memory().total,
        "torch_version": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "transformers_version": _package_version("transformers"),
        "os": platform.platform(),
    }
