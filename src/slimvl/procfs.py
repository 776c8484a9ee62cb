"""Fields of Linux's per-process ``/proc`` files, and the reset of the kernel's peak RSS.

Standard library only: the OpenVINO bench worker, which runs without slimvl, loads this file by its path.
"""

from __future__ import annotations

from pathlib import Path

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def kb_field_bytes(path: Path, field: str) -> int | None:
    """Bytes of the ``field: N kB`` line of ``path`` (``/proc/self/status``, ``smaps_rollup``), None if
    the file cannot be read (off Linux) or lacks the field."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def procs_running() -> int | None:
    """Threads runnable on the whole machine at this instant (``procs_running`` of ``/proc/stat``,
    the reading thread included), or None off Linux."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("procs_running "):
            return int(line.split()[1])
    return None


def read_vm_hwm_bytes() -> int | None:
    """The kernel's peak RSS for this process (``VmHWM``), or None off Linux."""
    return kb_field_bytes(_PROC_STATUS, "VmHWM")


def reset_vm_hwm() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0), so the peak belongs to what follows; False where
    the kernel does not allow it (the peak then covers the process's lifetime)."""
    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
