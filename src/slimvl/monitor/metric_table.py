"""The one table of a bench run's metrics: the per-run record of every worker, the row summaries and
paired ratios of the report, the printers' columns and the plot's panels all read `METRICS`.

Adding a metric is one entry here (and, for a new measurement, its value in `RequestMetrics.to_dict`;
a worker that cannot measure it reports null). The consumers read the table when they run, never a
copy taken at import, so a test may extend it.

Dependency-free by rule (the standard library only): the OpenVINO worker, which runs in a virtualenv
without slimvl, loads this file by its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # the key in the per-run record, the row (median, `<key>_min`, `<key>_max`) and `paired`
    title: str  # the column title in the printed tables
    unit: str
    better: str | None  # "lower", "higher", or None for a count that is no figure of merit
    per_run: bool = True  # every worker reports it for each run (False: the report derives it)
    summarized: bool = False  # median, min and max over the runs of each row
    paired: bool = False  # divided round by round between rows that ran in one wave
    column: bool = False  # a column of the printed row table (needs `summarized`)
    panel: int = 0  # its panel's place in the PNG plot, from 1 at the left; 0: not plotted
    label: str = ""  # the plot panel's title, before "(lower is better)"; empty: `title`


METRICS: tuple[Metric, ...] = (
    Metric("vision_ms", "vision ms", "ms", "lower", summarized=True, paired=True, column=True),
    Metric("prefill_ms", "prefill ms", "ms", "lower", summarized=True, paired=True, column=True),
    Metric("ttft_ms", "TTFT ms", "ms", "lower", summarized=True, paired=True, column=True),
    Metric(
        "decode_tok_s",
        "decode tok/s",
        "tok/s",
        "higher",
        summarized=True,
        paired=True,
        column=True,
        panel=2,
        label="decode tokens/s",
    ),
    Metric(
        "e2e_s",
        "e2e s",
        "s",
        "lower",
        summarized=True,
        paired=True,
        column=True,
        panel=1,
        label="end to end, s",
    ),
    Metric("peak_rss_mb", "peak RSS MB", "MB", "lower", summarized=True, column=True),
    Metric("gpu_peak_mb", "GPU peak MB", "MB", "lower", summarized=True),
    Metric("cpu_s", "CPU s", "s", "lower"),
    Metric("cpu_s_per_token", "CPU-s/token", "s/token", "lower", summarized=True, column=True),
    Metric("achieved_gbps", "GB/s", "GB/s", "higher", summarized=True, column=True),
    Metric("bandwidth_pct", "% of read BW", "%", "higher", per_run=False, summarized=True, column=True),
    Metric("energy_j", "energy J", "J", "lower"),
    Metric("energy_j_per_token", "J/token", "J/token", "lower", summarized=True),
    Metric("new_tokens", "new tokens", "tokens", None),
    Metric("prompt_tokens", "prompt tokens", "tokens", None),
    Metric("visual_tokens", "visual tokens", "tokens", None),
    Metric("visual_tokens_kept", "visual tokens kept", "tokens", None),
)


def run_keys() -> tuple[str, ...]:
    """The keys of every worker's per-run record, in the table's order."""
    return tuple(metric.key for metric in METRICS if metric.per_run)


def run_record(values: Mapping[str, object]) -> dict[str, object]:
    """`values` cut to the per-run record: every `run_keys` key, null where `values` lacks it."""
    return {key: values.get(key) for key in run_keys()}


def summary_keys() -> tuple[str, ...]:
    return tuple(metric.key for metric in METRICS if metric.summarized)


def paired_metrics() -> tuple[Metric, ...]:
    return tuple(metric for metric in METRICS if metric.paired)


def columns() -> tuple[Metric, ...]:
    """The printed row table's metric columns, in the table's order."""
    return tuple(metric for metric in METRICS if metric.column)


def panels() -> tuple[Metric, ...]:
    """The plotted metrics, left to right."""
    return tuple(sorted((metric for metric in METRICS if metric.panel), key=lambda metric: metric.panel))


def panel_title(metric: Metric) -> str:
    title = metric.label or metric.title
    return f"{title} ({metric.better} is better)" if metric.better else title
