"""One record schema for a bench run (documented in SCHEMA.md); the printers all read this record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slimvl.bench.driver import RowResult
from slimvl.bench.stats import Summary, paired_ratio, ratio, summarize_runs

SCHEMA_VERSION = 1

# Per-run values summarized per row as median, `*_min` and `*_max`.
SUMMARY_KEYS = (
    "vision_ms",
    "prefill_ms",
    "ttft_ms",
    "decode_tok_s",
    "e2e_s",
    "peak_rss_mb",
    "cpu_s_per_token",
    "achieved_gbps",
    "bandwidth_pct",
    "energy_j_per_token",
)
# Per-run values also divided round by round between rows that ran side by side (`paired`).
PAIRED_KEYS = ("vision_ms", "prefill_ms", "ttft_ms", "decode_tok_s", "e2e_s")


def _with_bandwidth_pct(run: dict[str, Any], read_bandwidth_gbps: float) -> dict[str, Any]:
    """The run's achieved GB/s against the read bandwidth sampled before its round (the run's own
    `read_bandwidth_gbps`), or against `read_bandwidth_gbps` (all samples' median) if none was."""
    pct = ratio(run.get("achieved_gbps"), run.get("read_bandwidth_gbps") or read_bandwidth_gbps)
    return {**run, "bandwidth_pct": None if pct is None else 100 * pct}


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
    summaries: dict[str, Summary | None] = summarize_runs(runs, SUMMARY_KEYS)
    for key, summary in summaries.items():
        record[key] = None if summary is None else summary.median
        record[f"{key}_min"] = None if summary is None else summary.min
        record[f"{key}_max"] = None if summary is None else summary.max
    record["per_run"] = runs
    record["warmup"] = ready.get("warmup")
    return record


def _waves(row: dict[str, Any]) -> set[Any]:
    return {run.get("wave") for run in row["per_run"]}


def paired_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every ordered pair of rows that ran in one wave: each `PAIRED_KEYS` metric as the median
    (min, max) over rounds of row / baseline in the same round (`stats.paired_ratio`)."""
    measured = [row for row in rows if row["status"] == "ok" and row["per_run"]]
    entries = []
    for row in measured:
        for baseline in measured:
            if baseline is row or not _waves(row) & _waves(baseline):
                continue
            entry: dict[str, Any] = {"row": row["name"], "baseline": baseline["name"]}
            for key in PAIRED_KEYS:
                summary = paired_ratio(row["per_run"], baseline["per_run"], key)
                entry[key] = None if summary is None else summary.median
                entry[f"{key}_min"] = None if summary is None else summary.min
                entry[f"{key}_max"] = None if summary is None else summary.max
                entry[f"{key}_rounds"] = 0 if summary is None else summary.n
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


def not_ok(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in report["rows"] if row["status"] != "ok"]
