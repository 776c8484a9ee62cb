"""Kernel choices kept per machine, so that a recipe quantized twice on one machine gets the same kernels.

The kernel race (`select.select_kernel`) times sub-millisecond calls on a machine whose speed drifts;
where two kernels are close, two races can pick differently, and with them the numerics of the last bits
and the speed of each phase. The first race's result for a layer shape is stored under a key that names
everything the race depends on (the CPU, its ISA flags, the thread count, the versions of torch, the
kernel environment, the shape, the activation kind, the candidates and the batch sizes) in
`$SLIMVL_CACHE_DIR/kernel_choices.json` (default `~/.cache/slimvl/`); later races with the same key
reuse it. `SLIMVL_CACHE_DIR=""` (empty) turns the store off. Delete the file to race again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from slimvl.atomic import write_text_atomic
from slimvl.monitor.machine import machine_info

FILE = "kernel_choices.json"


def store_path() -> Path | None:
    """The file, or None where the store is turned off."""
    directory = os.environ.get("SLIMVL_CACHE_DIR")
    if directory == "":
        return None
    return Path(directory) / FILE if directory else Path.home() / ".cache" / "slimvl" / FILE


def machine_key() -> list[Any]:
    info = machine_info()
    env = [os.environ.get(k, "") for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")]
    return [
        info["cpu_model"],
        info["isa_flags"],
        torch.get_num_threads(),
        torch.__version__,
        torch.backends.quantized.engine,
        env,
    ]


def _read(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def stored_choice(key: list[Any]) -> tuple[str, dict[str, dict[int, float]]] | None:
    """(kernel, timings by kernel and batch size) stored under `key`, if any."""
    path = store_path()
    if path is None:
        return None
    record = _read(path).get(json.dumps([machine_key(), key]))
    if not isinstance(record, dict) or "kernel" not in record:
        return None
    timings = {k: {int(m): ms for m, ms in per_m.items()} for k, per_m in record["timings"].items()}
    return record["kernel"], timings


def store_choice(key: list[Any], kernel: str, timings: dict[str, dict[int, float]]) -> None:
    path = store_path()
    if path is None:
        return
    stored = _read(path)
    stored[json.dumps([machine_key(), key])] = {"kernel": kernel, "timings": timings}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(stored, indent=0) + "\n")
    except OSError:
        pass  # a read-only home: races simply repeat
