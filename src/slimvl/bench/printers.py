"""Printers of the bench record: a rich table for the terminal and Markdown for a file."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slimvl.monitor.metric_table import columns, paired_metrics

PAIRED_NOTE = (
    "Each cell: the row's value divided by the baseline's in the same round (same image, run one after "
    "the other), median (min–max) over the rounds; the baseline is the first row of each wave. Unlike "
    "the ratio of two medians above, it leaves out how the machine's speed drifted between rounds."
)
ABLATION_COLUMNS = (
    "row",
    "variant",
    "memory reduction (seed)",
    "e2e speedup vs base (seed)",
    "decode vs base",
    "TTFT vs base",
    "step e2e vs row above (seed)",
    "CPU-s/token (seed power)",
    "J/token",
    "accuracy",
    "Δ accuracy, 95% interval (seed)",
)
ABLATION_NOTE = (
    "Speedups: paired medians over rounds against base (or, for cumulative rows, the row they add one "
    "optimization to); † marks a ratio of medians between rows that ran in different waves (not side "
    "by side). Seed estimates are the specification's, never measured."
)


def number(value: float | None) -> str:
    if value is None:
        return "-"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if size >= 1 else f"{value:.3f}"


def median_cell(record: dict[str, Any], key: str, with_range: bool, separator: str = " ") -> str:
    """`key`'s median, and where `with_range` its `(min–max)` after `separator`."""
    text = number(record[key])
    if with_range and record[key] is not None:
        text += f"{separator}({number(record[f'{key}_min'])}–{number(record[f'{key}_max'])})"
    return text


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def row_titles() -> list[str]:
    """The per-row table's titles: the row's facts, then the metric table's columns (median (min–max))."""
    return ["row", "status", "weights MB", "threads", *(metric.title for metric in columns())]


def row_cells(row: dict[str, Any], separator: str = " ") -> list[str]:
    weights = row["weight_bytes"]
    return [
        row["name"],
        row["status"],
        "-" if weights is None else number(weights / 1e6),
        str(row["threads"]),
        *(median_cell(row, metric.key, row["runs"] > 1, separator) for metric in columns()),
    ]


def printed_pairs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The paired entries against the first row of each wave, in the order of the rows."""
    paired = report.get("paired") or []
    baselines: list[str] = []
    for row in report["rows"]:
        others = {entry["baseline"] for entry in paired if entry["row"] == row["name"]}
        if not others & set(baselines) and any(entry["baseline"] == row["name"] for entry in paired):
            baselines.append(row["name"])
    order = {row["name"]: i for i, row in enumerate(report["rows"])}
    chosen = [entry for entry in paired if entry["baseline"] in baselines and entry["row"] not in baselines]
    return sorted(chosen, key=lambda entry: (order[entry["baseline"]], order[entry["row"]]))


def paired_titles() -> list[str]:
    """The paired-ratio table's titles: each paired metric's row value ÷ its baseline's, round by round."""
    return ["row", "baseline", "rounds", *(f"{metric.title} ÷" for metric in paired_metrics())]


def paired_cells(entry: dict[str, Any]) -> list[str]:
    keys = [metric.key for metric in paired_metrics()]
    rounds = max(entry[f"{key}_rounds"] for key in keys)
    cells = [median_cell(entry, key, entry[f"{key}_rounds"] > 1) for key in keys]
    return [entry["row"], entry["baseline"], str(rounds), *cells]


def _seed_text(seed: dict[str, str] | None, key: str) -> str:
    return f" (seed {seed[key]})" if seed else ""


def _speedup_cell(value: float | None, paired: bool | None) -> str:
    return _ratio(value) + ("†" if paired is False and value is not None else "")


def _accuracy_delta_cell(entry: dict[str, Any]) -> str:
    delta, interval = entry["accuracy_delta"], entry["accuracy_delta_ci95"]
    if delta is None:
        return "-"
    return f"{100 * delta:+.1f} pt ({100 * interval[0]:+.1f}..{100 * interval[1]:+.1f})"


def ablation_cells(entry: dict[str, Any]) -> list[str]:
    seed, step_seed = entry["seed_estimate"], entry["seed_step_estimate"]
    name = entry["name"] if entry["status"] == "ok" else f"{entry['name']} ({entry['status']})"
    step = _speedup_cell(entry["step_speedup_e2e"], entry["step_paired"])
    return [
        name,
        entry["variant"],
        _percent(entry["memory_reduction"]) + _seed_text(seed, "memory_reduction"),
        _speedup_cell(entry["speedup_e2e"], entry["paired"]) + _seed_text(seed, "speedup"),
        _speedup_cell(entry["speedup_decode"], entry["paired"]),
        _speedup_cell(entry["speedup_ttft"], entry["paired"]),
        "-"
        if entry["previous"] is None
        else f"{step} vs {entry['previous']}" + _seed_text(step_seed, "speedup"),
        number(entry["cpu_s_per_token"]) + _seed_text(seed or step_seed, "power"),
        number(entry["energy_j_per_token"]),
        "-" if entry["accuracy"] is None else f"{entry['accuracy']:.1%}",
        _accuracy_delta_cell(entry) + _seed_text(seed or step_seed, "accuracy"),
    ]


def _bandwidth_text(machine: dict[str, Any]) -> str:
    samples = machine.get("read_bandwidth", {}).get("samples_gbps", [])
    text = f"{machine['read_bandwidth_gbps']:.1f} GB/s"
    if len(samples) > 1:
        text += f" (median of {len(samples)} samples, one before each round: {min(samples):.1f}–{max(samples):.1f})"
    return text


def header_lines(report: dict[str, Any]) -> list[str]:
    machine, profile = report["machine"], report["profile"]
    lines = [
        f"model {report['model']} · {report['runs']} runs after 1 warm-up, interleaved · "
        f"{report['threads']} threads · profile {profile['name']} · "
        f"{report['scenario']['max_new_tokens']} new tokens, EOS ignored",
        f"machine: {machine['cpu_model']} · {machine['physical_cores']} cores / {machine['logical_cores']} threads · "
        f"ISA {', '.join(machine['isa_flags']) or '-'} · read bandwidth {_bandwidth_text(machine)}",
        f"energy: {report['energy_note']}",
    ]
    placing = report.get("placing") or {}
    if machine.get("gpus") or placing.get("device", "cpu") != "cpu":
        gpus = ", ".join(machine.get("gpus") or []) or "none"
        lines.append(f"GPUs: {gpus} · slimvl rows placed with {placing}")
    lines += [f"profile: {note}" for note in profile["notes"]]
    huge = [f"{row['name']} {row['huge_page_mb']:,.0f}" for row in report["rows"] if row.get("huge_page_mb")]
    if huge:
        lines.append(
            f"huge pages (MB of each worker's memory in 2 MB pages after its warm-up): {', '.join(huge)}"
        )
    lines += [f"note: {note}" for note in report["notes"]]
    return lines


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    # A pipe or file gets the whole width; a terminal gets min–max on a second line of each cell.
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 240)
    table = Table(title=escape(f"slimvl bench · {report['model']}"))
    for title in row_titles():
        table.add_column(title, justify="left" if title in ("row", "status") else "right")
    for row in report["rows"]:
        table.add_row(*(escape(text) for text in row_cells(row, separator="\n")))
    console.print(table)
    pairs = printed_pairs(report)
    if pairs:
        paired = Table(title="paired ratios: row ÷ baseline, round by round")
        for title in paired_titles():
            paired.add_column(title, justify="left" if title in ("row", "baseline") else "right")
        for entry in pairs:
            paired.add_row(*(escape(text) for text in paired_cells(entry)))
        console.print(paired)
        console.print(escape(PAIRED_NOTE))
    if report.get("ablation"):
        ablation = Table(title="ablation: measured (seed estimate)")
        for title in ABLATION_COLUMNS:
            ablation.add_column(title, justify="left" if title in ("row", "variant") else "right")
        for entry in report["ablation"]:
            ablation.add_row(*(escape(text) for text in ablation_cells(entry)))
        console.print(ablation)
        console.print(escape(ABLATION_NOTE))
        console.print(escape(report["accuracy_note"]))
    for line in header_lines(report):
        console.print(escape(line))
    for row in report["rows"]:
        if row["status"] != "ok":
            console.print(escape(f"{row['name']}: {row['status']}: {row['error'] or ''}"))


def _markdown_table(titles: list[str] | tuple[str, ...], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(titles) + " |", "|" + "|".join("---" for _ in titles) + "|"]
    lines += ["| " + " | ".join(text.replace("|", "\\|") for text in row) + " |" for row in rows]
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# slimvl bench · {report['model']}", ""]
    lines += [f"- {line}" for line in header_lines(report)]
    lines += ["", *_markdown_table(row_titles(), [row_cells(row) for row in report["rows"]])]
    failures = [row for row in report["rows"] if row["status"] != "ok"]
    if failures:
        lines += ["", *(f"- **{row['name']}**: {row['status']}: {row['error'] or ''}" for row in failures)]
    pairs = printed_pairs(report)
    if pairs:
        lines += ["", "## Paired ratios: row ÷ baseline, round by round", ""]
        lines += _markdown_table(paired_titles(), [paired_cells(entry) for entry in pairs])
        lines += ["", PAIRED_NOTE]
    if report.get("ablation"):
        lines += ["", "## Ablation: measured (seed estimate)", ""]
        lines += _markdown_table(ABLATION_COLUMNS, [ablation_cells(entry) for entry in report["ablation"]])
        lines += ["", ABLATION_NOTE, "", report["accuracy_note"]]
    lines += ["", "Cells are medians with (min–max) over the runs; see SCHEMA.md for each column."]
    return "\n".join(lines) + "\n"
