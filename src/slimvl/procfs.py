"""Fields of Linux's per-process ``/proc`` files."""

from __future__ import annotations

from pathlib import Path


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
