"""Transparent huge pages for the process heap, where Linux hands them out only on request.

A decode step streams every int8 weight once (~1.7 GB at 2B). With 4 KB pages that is ~430,000 pages,
each a TLB miss whose page walk a VM pays twice; with 2 MB pages, 860. Most Linux distributions set
THP to ``madvise``: only memory marked with ``madvise(MADV_HUGEPAGE)`` gets huge pages, and neither
PyTorch's allocator nor fbgemm's packed weights (where the decode linears read) mark theirs. glibc
(2.35+) marks every heap and ``mmap`` chunk of ``malloc`` itself when started with the tunable
``glibc.malloc.hugetlb=1``, which it reads once, at process start: the ``slimvl`` command therefore
re-executes itself with it (`reexec_with_huge_pages`), and `slimvl bench` starts its workers with it.

Measured on this project's VM (`benchmarks/huge_pages_ab.py`: one process, the 2B-shape int8 weights
loaded twice, one copy collapsed into huge pages, single decode steps of the two alternating): the step
with huge pages takes 0.984 of the time (390 step pairs; every block of 50 between 0.978 and 0.990).
A small gain, but a steady one; it also puts slimvl on the footing OpenVINO is on, which asks for huge
pages for ~1 GB of its own buffers. ``SLIMVL_HUGE_PAGES=0`` turns it off.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

from slimvl.procfs import kb_field_bytes

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "SLIMVL_HUGE_PAGES"
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = _THP_MODE) -> str | None:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``: the bracketed word), None if unknown."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def glibc_supports_tunable() -> bool:
    """Whether this process runs on glibc 2.35 or later (the first with ``glibc.malloc.hugetlb``)."""
    library, version = platform.libc_ver()
    if library != "glibc" or not version:
        return False
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def with_huge_pages(env: Mapping[str, str], mode: str | None, glibc_ok: bool) -> dict[str, str]:
    """``env`` with ``glibc.malloc.hugetlb=1`` added to ``GLIBC_TUNABLES`` where it changes something:
    THP in ``madvise`` mode (``always`` gives huge pages already, ``never`` none at all), a glibc that
    knows the tunable, no ``glibc.malloc.hugetlb`` setting there already and no opt-out."""
    out = dict(env)
    tunables = out.get("GLIBC_TUNABLES", "")
    if mode != "madvise" or not glibc_ok or out.get(OPT_OUT) == "0" or "glibc.malloc.hugetlb" in tunables:
        return out
    out["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return out


def huge_page_env(env: Mapping[str, str]) -> dict[str, str]:
    """`with_huge_pages` for this machine."""
    return with_huge_pages(env, thp_mode(), glibc_supports_tunable())


def reexec_with_huge_pages() -> None:
    """Replace this process by itself started with `huge_page_env`, if that adds the tunable; else
    return. Call it first thing in an entry point, before anything is loaded: the arguments and the
    interpreter's own flags are passed on unchanged (``sys.orig_argv``)."""
    env = huge_page_env(os.environ)
    if not sys.executable or env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def huge_page_bytes(path: Path = Path("/proc/self/smaps_rollup")) -> int | None:
    """How much of this process's anonymous memory lies in huge pages (``AnonHugePages``), None off Linux."""
    return kb_field_bytes(path, "AnonHugePages")
