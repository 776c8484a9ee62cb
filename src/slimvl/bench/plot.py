"""PNG plot of a bench record: a panel per plotted metric of the metric table (end-to-end seconds and
decode tokens/s), a bar per row, min–max as error bars; with an ablation, a second line of panels: each
ablation row's speedup and memory reduction against base, the seed's estimate marked beside it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimvl.atomic import write_atomic
from slimvl.monitor.metric_table import panel_title, panels

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def seed_number(text: str | None) -> float | None:
    """A seed estimate as a number ("2.0x" -> 2.0, "~75%" -> 0.75); None for one that is not a number
    ("Variable", "~50% of visual tokens": not a memory figure)."""
    match = re.fullmatch(r"~?(\d+(?:\.\d+)?)(x|%)", (text or "").strip())
    if match is None:
        return None
    value = float(match.group(1))
    return value if match.group(2) == "x" else value / 100


def _metric_panels(axes: list[Any], rows: list[dict[str, Any]]) -> None:
    names = [row["name"] if row["status"] == "ok" else f"{row['name']}\n({row['status']})" for row in rows]
    for axis, metric in zip(axes, panels(), strict=False):
        key = metric.key
        heights = [row[key] or 0.0 for row in rows]
        low = [(row[key] - row[f"{key}_min"]) if row[key] is not None else 0.0 for row in rows]
        high = [(row[f"{key}_max"] - row[key]) if row[key] is not None else 0.0 for row in rows]
        axis.bar(range(len(rows)), heights, yerr=[low, high], capsize=4, color="tab:blue")
        axis.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(panel_title(metric), fontsize=10)
        axis.grid(axis="y", alpha=0.3)


# (ablation entry key, seed estimate key, panel title)
ABLATION_PANELS = (
    ("speedup_e2e", "speedup", "ablation: end-to-end speedup vs base (x)"),
    ("memory_reduction", "memory_reduction", "ablation: peak memory reduction vs base"),
)


def _ablation_panels(axes: list[Any], entries: list[dict[str, Any]]) -> None:
    names = [entry["name"] for entry in entries]
    for axis, (key, seed_key, title) in zip(axes, ABLATION_PANELS, strict=False):
        axis.bar(
            range(len(entries)), [entry[key] or 0.0 for entry in entries], color="tab:green", label="measured"
        )
        seeds = [
            (i, seed_number(entry["seed_estimate"][seed_key]))
            for i, entry in enumerate(entries)
            if entry["seed_estimate"]
        ]
        seeds = [(i, value) for i, value in seeds if value is not None]
        if seeds:
            axis.scatter(
                [i for i, _ in seeds],
                [v for _, v in seeds],
                marker="_",
                s=600,
                color="tab:red",
                label="seed estimate",
            )
        axis.set_xticks(range(len(entries)), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)


def bench_figure(report: dict[str, Any]) -> Figure:
    """Rows that did not run keep their place on the axis, labelled with their status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, ablation = report["rows"], report.get("ablation") or []
    lines = 2 if ablation else 1
    columns = max(len(panels()), len(ABLATION_PANELS) if ablation else 0)
    figure, axes = plt.subplots(
        lines, columns, figsize=(max(6.0, 1.6 * len(rows)) * 1.6, 4.5 * lines), squeeze=False
    )
    _metric_panels(list(axes[0]), rows)
    if ablation:
        _ablation_panels(list(axes[1]), ablation)
    figure.suptitle(
        f"slimvl bench · {report['model']} · {report['threads']} threads · medians of {report['runs']} runs",
        fontsize=11,
    )
    figure.tight_layout()
    return figure


def write_plot(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    figure = bench_figure(report)
    import matplotlib.pyplot as plt  # after `bench_figure` chose the Agg backend

    try:
        return write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(figure)
