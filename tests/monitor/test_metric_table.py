"""The metric table is the one list of a bench run's metrics: a metric added to `METRICS` reaches the
per-run record, the report's summaries and paired ratios, the printed tables and the plot, and
`RequestMetrics` produces every per-run key the table names."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pytest

from slimvl.bench import printers
from slimvl.bench.driver import RowResult
from slimvl.bench.plot import bench_figure
from slimvl.bench.report import build_report
from slimvl.bench.rows import RowSpec
from slimvl.monitor import RequestMetrics, metric_table
from slimvl.monitor.metric_table import Metric, run_keys, run_record

EXTRA = Metric(
    "extra_ms", "extra ms", "ms", "lower", summarized=True, paired=True, column=True, panel=3, label="extra"
)


@pytest.fixture
def extra_metric(monkeypatch: pytest.MonkeyPatch) -> Metric:
    monkeypatch.setattr(metric_table, "METRICS", (*metric_table.METRICS, EXTRA))
    return EXTRA


def _runs(scale: float) -> list[dict[str, Any]]:
    return [
        {
            "run": run,
            "wave": 1,
            **run_record({"e2e_s": scale * run, "decode_tok_s": 10.0, "extra_ms": scale * run}),
        }
        for run in (1, 2)
    ]


def _report() -> dict[str, Any]:
    results = [
        RowResult(RowSpec(name, "slimvl", "builtin:tiny"), ready={"weight_bytes": 1000}, runs=_runs(scale))
        for name, scale in (("a", 1.0), ("b", 2.0))
    ]
    return build_report(
        model="builtin:tiny",
        scenario={"max_new_tokens": 4},
        runs=2,
        threads=1,
        profile={"name": "native", "notes": []},
        machine={
            "read_bandwidth_gbps": 10.0,
            "cpu_model": "cpu",
            "physical_cores": 2,
            "logical_cores": 2,
            "isa_flags": [],
        },
        energy_note="none",
        results=results,
        run_order=[],
        notes=[],
    )


def test_a_new_metric_reaches_the_run_record_and_the_report(extra_metric: Metric) -> None:
    assert run_record({"extra_ms": 1.5})["extra_ms"] == 1.5
    assert run_record({})["extra_ms"] is None  # a worker that cannot measure it reports null
    report = _report()
    row = report["rows"][0]
    assert (row["extra_ms"], row["extra_ms_min"], row["extra_ms_max"]) == (1.5, 1.0, 2.0)
    b_over_a = next(entry for entry in report["paired"] if (entry["row"], entry["baseline"]) == ("b", "a"))
    assert (b_over_a["extra_ms"], b_over_a["extra_ms_rounds"]) == (2.0, 2)


def test_a_new_metric_is_a_column_of_every_printed_table(extra_metric: Metric) -> None:
    report = _report()
    assert printers.row_titles()[-1] == "extra ms"
    assert printers.row_cells(report["rows"][0])[-1] == "1.50 (1.00–2.00)"
    assert printers.paired_titles()[-1] == "extra ms ÷"
    text = printers.markdown(report)
    assert "| extra ms |" in text and "| extra ms ÷ |" in text


def test_a_new_metric_is_a_panel_of_the_plot(extra_metric: Metric) -> None:
    figure = bench_figure(_report())
    try:
        titles = [axis.get_title() for axis in figure.axes]
    finally:
        plt.close(figure)
    assert titles == [metric_table.panel_title(metric) for metric in metric_table.panels()]
    assert titles[-1] == "extra (lower is better)"


def test_request_metrics_produce_every_per_run_key() -> None:
    produced = RequestMetrics(
        stages_ms={"vision": 1.0, "prefill": 2.0, "decode": 3.0}, new_tokens=2
    ).to_dict()
    assert set(run_keys()) <= set(produced)
