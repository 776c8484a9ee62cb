"""PNG plot of a bench record: a panel per plotted metric of the metric table (end-to-end seconds and
decode tokens/s), a bar per row, min–max as error bars."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimvl.atomic import write_atomic
from slimvl.monitor.metric_table import panel_title, panels

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def bench_figure(report: dict[str, Any]) -> Figure:
    """Rows that did not run keep their place on the axis, labelled with their status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    plotted = panels()
    names = [row["name"] if row["status"] == "ok" else f"{row['name']}\n({row['status']})" for row in rows]
    figure, axes = plt.subplots(
        1, len(plotted), figsize=(max(6.0, 1.6 * len(rows)) * 1.6, 4.5), squeeze=False
    )
    for axis, metric in zip(axes[0], plotted, strict=True):
        key = metric.key
        heights = [row[key] or 0.0 for row in rows]
        low = [(row[key] - row[f"{key}_min"]) if row[key] is not None else 0.0 for row in rows]
        high = [(row[f"{key}_max"] - row[key]) if row[key] is not None else 0.0 for row in rows]
        axis.bar(range(len(rows)), heights, yerr=[low, high], capsize=4, color="tab:blue")
        axis.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(panel_title(metric), fontsize=10)
        axis.grid(axis="y", alpha=0.3)
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
