from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimvl.hugepages import TUNABLE, huge_page_bytes, huge_page_env, thp_mode, with_huge_pages

SUPPORTED = huge_page_env({}) != {}


def test_adds_the_tunable_only_where_it_changes_something() -> None:
    assert with_huge_pages({"A": "1"}, "madvise", True) == {"A": "1", "GLIBC_TUNABLES": TUNABLE}
    assert with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", True) == {
        "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}"
    }
    for env, mode, glibc_ok in [
        ({}, "always", True),  # huge pages already
        ({}, "never", True),
        ({}, None, True),
        ({}, "madvise", False),  # musl, or glibc < 2.35
        ({"SLIMVL_HUGE_PAGES": "0"}, "madvise", True),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", True),  # the user's own choice stays
    ]:
        assert with_huge_pages(env, mode, glibc_ok) == env


def test_thp_mode_reads_the_bracketed_word(tmp_path: Path) -> None:
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert thp_mode(path) == "madvise"
    assert thp_mode(tmp_path / "missing") is None


def _child(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not SUPPORTED, reason="THP not in madvise mode or glibc < 2.35 here")
def test_reexec_starts_the_process_again_with_huge_pages() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    code = (
        "import os, torch\n"
        "from slimvl.hugepages import reexec_with_huge_pages, huge_page_bytes\n"
        "reexec_with_huge_pages()\n"
        "x = torch.ones(64 << 20, dtype=torch.int8)\n"
        "print(os.environ.get('GLIBC_TUNABLES'), huge_page_bytes())"
    )
    tunables, huge = _child(code, env).split()
    assert tunables == TUNABLE
    assert int(huge) >= 32 << 20  # the 64 MB tensor lies (mostly) in 2 MB pages
    tunables, huge = _child(code, {**env, "SLIMVL_HUGE_PAGES": "0"}).split()
    assert tunables == "None"
    assert int(huge) < 32 << 20


def test_huge_page_bytes_reads_smaps(tmp_path: Path) -> None:
    path = tmp_path / "smaps_rollup"
    path.write_text("Rss:  100 kB\nAnonHugePages:    4096 kB\n")
    assert huge_page_bytes(path) == 4096 * 1024
    assert huge_page_bytes(tmp_path / "missing") is None
