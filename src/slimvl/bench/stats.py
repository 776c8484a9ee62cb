"""Median, min and max over repeated runs (pure functions)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    min: float
    max: float
    n: int  # values that were measured (None values are skipped)


def summarize(values: Iterable[float | None]) -> Summary | None:
    """Median (mean of the middle two for an even count), min and max of the measured values.

    None marks a value that a row could not measure in that run; it is skipped. All None: None.
    """
    measured = [float(v) for v in values if v is not None]
    if not measured:
        return None
    return Summary(statistics.median(measured), min(measured), max(measured), len(measured))


def summarize_runs(
    runs: Sequence[Mapping[str, float | None]], keys: Iterable[str]
) -> dict[str, Summary | None]:
    """`summarize` of each key over per-run records (a key missing from a record counts as None)."""
    return {key: summarize(run.get(key) for run in runs) for key in keys}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def paired_ratio(
    runs: Sequence[Mapping[str, float | None]], baseline: Sequence[Mapping[str, float | None]], key: str
) -> Summary | None:
    """`key` of each run divided by the baseline's in the same round (equal `wave` and `run`).

    Runs of one round ran one after the other on the same image, so their ratio leaves out how the
    machine's speed drifted between rounds, which the ratio of two medians keeps. Rounds where either
    side has no value (or the baseline's is 0) are skipped; none left: None.
    """
    by_round = {(run.get("wave"), run.get("run")): run.get(key) for run in baseline}
    return summarize(ratio(run.get(key), by_round.get((run.get("wave"), run.get("run")))) for run in runs)
