from __future__ import annotations

from typing import Any

import pytest

from slimvl.bench.report import paired_ratios
from slimvl.monitor.metric_table import paired_metrics


def _row(name: str, wave: int, ttft: list[float], status: str = "ok") -> dict[str, Any]:
    runs = [{"wave": wave, "run": i + 1, "ttft_ms": value} for i, value in enumerate(ttft)]
    return {"name": name, "status": status, "per_run": runs if status == "ok" else []}


def test_pairs_only_rows_that_ran_in_one_wave() -> None:
    rows = [
        _row("a", 1, [100.0, 200.0]),
        _row("b", 1, [50.0, 150.0]),
        _row("c", 2, [10.0, 10.0]),
        _row("d", 1, [], status="failed"),
    ]
    entries = {(e["row"], e["baseline"]): e for e in paired_ratios(rows)}
    assert set(entries) == {("a", "b"), ("b", "a")}
    b_over_a = entries[("b", "a")]
    assert (b_over_a["ttft_ms"], b_over_a["ttft_ms_min"], b_over_a["ttft_ms_max"]) == pytest.approx(
        (0.625, 0.5, 0.75)
    )
    assert b_over_a["ttft_ms_rounds"] == 2
    for key in (metric.key for metric in paired_metrics() if metric.key != "ttft_ms"):  # not in these rows
        assert b_over_a[key] is None and b_over_a[f"{key}_rounds"] == 0
