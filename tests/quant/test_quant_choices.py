from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimvl.quant import select
from slimvl.quant.choices import FILE, store_path
from slimvl.quant.kernels import ActQuant


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLIMVL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(select, "_CACHE", {})
    return tmp_path / FILE


def test_a_second_race_on_the_machine_reuses_the_first_choice(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = select.select_kernel((64, 128), ActQuant(127), batch_sizes=(1, 8), repeats=1)
    assert store.is_file()
    monkeypatch.setattr(select, "_CACHE", {})

    def no_timing(*_args, **_kwargs) -> float:
        raise AssertionError("timed again")

    monkeypatch.setattr(select, "time_kernel", no_timing)
    again = select.select_kernel((64, 128), ActQuant(127), batch_sizes=(1, 8), repeats=1)
    assert again == first
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # another thread count is another race
    monkeypatch.setattr(select, "_CACHE", {})
    try:
        with pytest.raises(AssertionError, match="timed again"):
            select.select_kernel((64, 128), ActQuant(127), batch_sizes=(1, 8), repeats=1)
    finally:
        torch.set_num_threads(threads)


def test_an_empty_directory_setting_turns_the_store_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMVL_CACHE_DIR", "")
    assert store_path() is None
    monkeypatch.delenv("SLIMVL_CACHE_DIR")
    assert store_path() == Path.home() / ".cache" / "slimvl" / FILE


def test_an_unreadable_store_is_raced_again(store: Path) -> None:
    store.write_text("not json")
    choice = select.select_kernel((64, 128), ActQuant(127), batch_sizes=(1,), repeats=1)
    assert choice.timings_ms and store.read_text().startswith("{")
