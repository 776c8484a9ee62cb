"""The interleaving driver against fake workers (plain Python, no model): order and failure reporting."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from slimvl.bench import driver
from slimvl.bench.driver import RowResult, run_interleaved
from slimvl.bench.rows import RowSpec

FAKE_WORKER = """
import json, sys
mode = json.loads(sys.argv[1])["mode"]
if mode == "error_at_load":
    print(json.dumps({"event": "error", "error": "RuntimeError: cannot load the weights"}), flush=True)
    sys.exit(1)
if mode == "crash_at_load":
    sys.stderr.write("Segmentation fault\\n")
    sys.exit(139)
print("a library printing on stdout", flush=True)
print(json.dumps({"event": "ready", "load_s": 0.5, "weight_bytes": 10, "warmup": {"e2e_s": 9.0}}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command["cmd"] == "quit":
        break
    if mode == "crash_at_run_2" and command["index"] == 2:
        sys.stderr.write("Killed: out of memory\\n")
        sys.exit(137)
    result = {"event": "result", "index": command["index"], "metrics": {"e2e_s": float(command["index"])}}
    print(json.dumps(result), flush=True)
"""


@pytest.fixture
def launch(tmp_path: Path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)

    def launch(row: RowSpec) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, str(script), json.dumps({"mode": row.description})], dict(os.environ)

    return launch


def _results(*modes: str) -> list[RowResult]:
    return [
        RowResult(RowSpec(name=f"row{i}", kind="fake", model="m", description=m)) for i, m in enumerate(modes)
    ]


def test_runs_are_interleaved_round_by_round(launch, tmp_path: Path) -> None:
    results = _results("ok", "ok", "ok")
    images = [tmp_path / f"{i}.png" for i in range(4)]  # warm-up + 3 runs
    order, notes = run_interleaved(results, launch, images, progress=lambda _: None, log_dir=tmp_path)
    # each round starts one row further: no row always runs first
    assert [(o["row"], o["run"]) for o in order] == [
        ("row0", 1), ("row1", 1), ("row2", 1),
        ("row1", 2), ("row2", 2), ("row0", 2),
        ("row2", 3), ("row0", 3), ("row1", 3),
    ]  # fmt: skip
    assert [o["seq"] for o in order] == list(range(9))
    for result in results:
        assert result.status == "ok" and result.error is None
        assert [r["run"] for r in result.runs] == [1, 2, 3]
        assert [r["e2e_s"] for r in result.runs] == [1.0, 2.0, 3.0]  # the warm-up is not a run
        assert result.ready["load_s"] == 0.5
    assert notes[0].startswith("wave 1: row0, row1, row2 resident together")


def test_what_before_round_returns_goes_into_every_run_of_its_round(launch, tmp_path: Path) -> None:
    results = _results("ok", "ok")
    images = [tmp_path / f"{i}.png" for i in range(4)]
    samples = iter([30.0, 40.0, 50.0])
    run_interleaved(
        results, launch, images, lambda _: None, tmp_path,
        before_round=lambda: {"read_bandwidth_gbps": next(samples)},
    )  # fmt: skip
    for result in results:
        assert [(r["run"], r["read_bandwidth_gbps"]) for r in result.runs] == [
            (1, 30.0),
            (2, 40.0),
            (3, 50.0),
        ]


def test_failing_workers_are_reported_and_the_others_go_on(launch, tmp_path: Path) -> None:
    results = _results("ok", "error_at_load", "crash_at_load", "crash_at_run_2")
    images = [tmp_path / f"{i}.png" for i in range(4)]
    messages: list[str] = []
    order, _ = run_interleaved(results, launch, images, progress=messages.append, log_dir=tmp_path)
    ok, error_at_load, crash_at_load, crash_at_run = results
    assert ok.status == "ok" and len(ok.runs) == 3
    assert error_at_load.status == "failed"
    assert error_at_load.error == "RuntimeError: cannot load the weights"
    assert crash_at_load.status == "failed"
    assert "code 139" in crash_at_load.error and "Segmentation fault" in crash_at_load.error
    assert crash_at_run.status == "failed" and [r["run"] for r in crash_at_run.runs] == [1]
    assert "code 137" in crash_at_run.error and "out of memory" in crash_at_run.error
    assert [(o["row"], o["run"]) for o in order] == [
        ("row0", 1), ("row3", 1), ("row3", 2), ("row0", 2), ("row0", 3)
    ]  # fmt: skip
    assert any("row1: failed" in m for m in messages)


def test_rows_that_do_not_fit_beside_the_others_run_in_a_later_wave(launch, tmp_path: Path) -> None:
    """Memory for 10 units: row1 (8) cannot start beside row0 (6), row2 (3) can; row1 runs alone after."""
    results = _results("ok", "ok", "ok")
    need = {"row0": 6, "row1": 8, "row2": 3}
    resident: list[str] = []

    def tracking_launch(row: RowSpec):
        resident.append(row.name)
        return launch(row)

    def available() -> int:  # what the workers started so far in this wave leave free
        return 10 - sum(need[name] for name in resident) + driver.MEMORY_MARGIN_BYTES

    def progress(message: str) -> None:
        if "later wave" in message:
            resident.clear()  # the wave's workers exit before the next wave starts

    images = [tmp_path / f"{i}.png" for i in range(3)]
    order, notes = run_interleaved(
        results, tracking_launch, images, progress, tmp_path, need=lambda row: need[row.name],
        available=available,
    )  # fmt: skip
    assert [(o["row"], o["run"]) for o in order] == [
        ("row0", 1), ("row2", 1), ("row2", 2), ("row0", 2), ("row1", 1), ("row1", 2)
    ]  # fmt: skip
    assert all(result.status == "ok" and len(result.runs) == 2 for result in results)
    assert notes[0].startswith("wave 1: row0, row2 resident together")
    assert notes[1].startswith("wave 2: row1 resident together")


def test_a_row_too_big_for_the_machine_still_starts_alone(launch, tmp_path: Path) -> None:
    results = _results("ok")
    order, _ = run_interleaved(
        results, launch, [tmp_path / "0.png", tmp_path / "1.png"], lambda _: None, tmp_path,
        need=lambda _row: 10**15, available=lambda: 0,
    )  # fmt: skip
    assert [(o["row"], o["run"]) for o in order] == [("row0", 1)]
