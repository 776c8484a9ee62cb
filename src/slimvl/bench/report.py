"""One record schema for a bench run (documented in SCHEMA.md); the printers all read this record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slimvl.bench.driver import RowResult
from slimvl.bench.stats import Summary, paired_ratio, ratio, summarize_runs
from slimvl.monitor.metric_table import paired_metrics, summary_keys

SCHEMA_VERSION = 1


def _with_bandwidth_pct(run: dict[str, Any], read_bandwidth_gbps: float) -> dict[str, Any]:
    """The run's achieved GB/s against the read bandwidth sampled before its round (the run's own
    `read_bandwidth_gbps`), or against `read_bandwidth_gbps` (all samples' median) if none was."""
    pct = ratio(run.get("achieved_gbps"), run.get("read_bandwidth_gbps") or read_bandwidth_gbps)
    return {**run, "bandwidth_pct": None if pct is None else 100 * pct}


def _put_summary(record: dict[str, Any], key: str, summary: Summary | None) -> None:
    """`key` (the median), `<key>_min` and `<key>_max`; nulls where nothing was measured."""
    record[key] = None if summary is None else summary.median
    record[f"{key}_min"] = None if summary is None else summary.min
    record[f"{key}_max"] = None if summary is None else summary.max


def row_record(result: RowResult, read_bandwidth_gbps: float, threads: int) -> dict[str, Any]:
    spec, ready = result.spec, result.ready
    runs = [_with_bandwidth_pct(run, read_bandwidth_gbps) for run in result.runs]
    record: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "model": spec.model,
        "recipe": None if spec.recipe is None else spec.recipe.get("name"),
        "dtype": spec.dtype,
        "status": result.status,
        "error": result.error,
        "runs": len(runs),
        "threads": threads,
        "weight_bytes": ready.get("weight_bytes"),
        "decode_weight_bytes": ready.get("decode_weight_bytes"),
        "load_s": ready.get("load_s"),
        "load_peak_rss_mb": ready.get("load_peak_rss_mb"),
        "export_s": ready.get("export_s"),
        "cpu_capability": ready.get("cpu_capability"),
        "huge_page_mb": ready.get("huge_page_mb"),
        "notes": list(spec.notes),
    }
    for key, summary in summarize_runs(runs, summary_keys()).items():
        _put_summary(record, key, summary)
    record["per_run"] = runs
    record["warmup"] = ready.get("warmup")
    return record


def _waves(row: dict[str, Any]) -> set[Any]:
    return {run.get("wave") for run in row["per_run"]}


def paired_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every ordered pair of rows that ran in one wave: each paired metric of the table as the
    median (min, max) over rounds of row / baseline in the same round (`stats.paired_ratio`)."""
    measured = [row for row in rows if row["status"] == "ok" and row["per_run"]]
    entries = []
    for row in measured:
        for baseline in measured:
            if baseline is row or not _waves(row) & _waves(baseline):
                continue
            entry: dict[str, Any] = {"row": row["name"], "baseline": baseline["name"]}
            for metric in paired_metrics():
                summary = paired_ratio(row["per_run"], baseline["per_run"], metric.key)
                _put_summary(entry, metric.key, summary)
                entry[f"{metric.key}_rounds"] = 0 if summary is None else summary.n
            entries.append(entry)
    return entries


def build_report(
    *,
    model: str,
    scenario: dict[str, Any],
    runs: int,
    threads: int,
    profile: dict[str, Any],
    machine: dict[str, Any],
    energy_note: str,
    results: Sequence[RowResult],
    run_order: list[dict[str, Any]],
    notes: list[str],
) -> dict[str, Any]:
    bandwidth = machine["read_bandwidth_gbps"]
    rows = [row_record(result, bandwidth, threads) for result in results]
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "runs": runs,
        "threads": threads,
        "profile": profile,
        "scenario": scenario,
        "machine": machine,
        "energy_note": energy_note,
        "notes": notes,
        "rows": rows,
        "paired": paired_ratios(rows),
        "run_order": run_order,
    }


def succeeded(report: dict[str, Any]) -> list[str]:
    return [row["name"] for row in report["rows"] if row["status"] == "ok"]
