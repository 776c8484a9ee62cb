"""`slimvl bench --ablation`: each optimization's gains, measured, with the estimate slimvl was
specified with (its "seed" estimate) beside each value.

The rows are built from the `laptop` preset's sections, so that `all` is exactly what a user gets from
`--recipe laptop` and every other row is one part of it:

- one at a time: `base` (no optimization) plus one section: `int8`, `sparsify`, `prune` (laptop's
  structured pruning), `adaptive` (laptop's precision plan); and `prune-unstructured`, the seed's form of
  pruning (Wanda 30% of each row's weights, one pass), which dense kernels cannot turn into speed;
- cumulative, as the seed's "+" rows read: `int8`, `int8+sparsify`, `int8+sparsify+prune`, `all`, each
  adding one section to the row above; their step ratios are against that row.

Ratios against `base` are paired (round by round, `report.paired`) where the row ran in `base`'s wave,
else the ratio of the two rows' medians (`paired: false`). Accuracy is always measured on
`builtin:tiny` (the model whose answers are right or wrong) on the same questions for every row, each
row's difference from `base` with its 95% interval from the paired per-question differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slimvl.api import load
from slimvl.bench.driver import Progress, RowResult
from slimvl.bench.rows import RowSpec, slimvl_row
from slimvl.bench.stats import ratio
from slimvl.config import PruningConfig, Recipe, preset
from slimvl.errors import ModelLoadError
from slimvl.eval import EvalResult, evaluate, paired_difference
from slimvl.experiments.seed_estimates import SEED_ESTIMATES

ACCURACY_MODEL = "builtin:tiny"
# The laptop preset's sections in the seed's table order, and the row each one is named by.
SECTION_ROWS: tuple[tuple[str, str], ...] = (
    ("int8", "int8"),
    ("sparsification", "sparsify"),
    ("pruning", "prune"),
    ("adaptive_precision", "adaptive"),
)
# The rows the bars compare with each other start first, so that they share the first wave.
FIRST_WAVE = ("base", "int8", "all")


@dataclass(frozen=True)
class AblationRow:
    name: str
    recipe: Recipe
    variant: str  # "base", "one at a time" or "cumulative"
    previous: str | None = None  # cumulative: the row this one adds one optimization to
    estimate: str | None = None  # the SEED_ESTIMATES entry beside its ratios against base
    step_estimate: str | None = None  # cumulative: the entry beside its ratios against `previous`


def _seed_unstructured_pruning() -> PruningConfig:
    """The seed's unstructured 30%, by the criterion that measured best (Wanda), in one pass over 16
    calibration requests: the seed's 5 iterative steps over 64 take about an hour on a 2B model here."""
    return PruningConfig(
        pruning_ratio=0.3, criterion="wanda", pruning_schedule="one_shot", calibration_samples=16
    )


def ablation_plan() -> list[AblationRow]:
    """Every ablation row, in the table's order."""
    laptop = dict(preset("laptop").configs())
    rows = [AblationRow("base", Recipe("none"), "base")]
    for key, name in SECTION_ROWS:
        variant = "one at a time" if name != "int8" else "one at a time, cumulative"
        rows.append(AblationRow(name, Recipe(name, **{key: laptop[key]}), variant, None, name))
        if name == "prune":
            recipe = Recipe("prune-unstructured", pruning=_seed_unstructured_pruning())
            rows.append(AblationRow("prune-unstructured", recipe, "one at a time", None, "prune"))
    previous = "int8"
    for count in range(2, len(SECTION_ROWS) + 1):
        keys = [key for key, _ in SECTION_ROWS[:count]]
        added = SECTION_ROWS[count - 1][1]
        if count == len(SECTION_ROWS):
            name, estimate = "all", "all"
        else:
            name, estimate = "+".join(row for _, row in SECTION_ROWS[:count]), None
        recipe = Recipe(name if name != "all" else "laptop", **{key: laptop[key] for key in keys})
        rows.append(AblationRow(name, recipe, "cumulative", previous, estimate, added))
        previous = name
    return rows


def ablation_rows(model: str) -> tuple[list[RowSpec], list[RowSpec]]:
    """The rows' bench specs: those of `FIRST_WAVE`, then the others (the harness starts extra rows and
    peers in between, so that they run beside `base`, `int8` and `all`)."""
    specs = [slimvl_row(model, row.recipe, name=row.name) for row in ablation_plan()]
    first = [spec for spec in specs if spec.name in FIRST_WAVE]
    return first, [spec for spec in specs if spec.name not in FIRST_WAVE]


AccuracyFn = Callable[[Recipe, int, int], EvalResult]


def tiny_evaluation(recipe: Recipe, n: int, threads: int) -> EvalResult:
    """`builtin:tiny` with `recipe` on the first `n` test questions."""
    return evaluate(load(ACCURACY_MODEL, recipe, threads=threads), n=n)


def measure_accuracy(
    results: Sequence[RowResult],
    n: int,
    threads: int,
    progress: Progress,
    accuracy: AccuracyFn | None = None,
) -> tuple[dict[str, EvalResult], str]:
    """Evaluation per ablation row that was built (by `accuracy`, default `tiny_evaluation`), and what
    it is (or why there is none)."""
    accuracy = accuracy or tiny_evaluation
    names = {row.name for row in ablation_plan()}
    evaluations: dict[str, EvalResult] = {}
    for result in results:
        if result.spec.name not in names or result.status == "not built":
            continue
        progress(f"{result.spec.name}: accuracy on {ACCURACY_MODEL}, {n} questions")
        try:
            evaluations[result.spec.name] = accuracy(Recipe.from_dict(result.spec.recipe), n, threads)
        except ModelLoadError as exc:
            return {}, f"accuracy not measured: {exc}"
    return (
        evaluations,
        f"accuracy: exact match of {ACCURACY_MODEL} on the first {n} questions of the test split; "
        "differences from base paired question by question, with their 95% interval",
    )


def _paired_entry(paired: Sequence[dict[str, Any]], row: str, baseline: str) -> dict[str, Any] | None:
    for entry in paired:
        if entry["row"] == row and entry["baseline"] == baseline and entry["e2e_s_rounds"]:
            return entry
    return None


def _inverse(value: float | None) -> float | None:
    return None if value is None or value == 0 else 1 / value


def speedups(report: dict[str, Any], row: str, baseline: str) -> dict[str, Any]:
    """How much faster `row` is than `baseline` (end to end, TTFT; decode tokens/s as a ratio): paired
    medians over rounds where the two ran in one wave, else the ratio of their medians (`paired` None:
    the row is the baseline)."""
    if row == baseline:
        return {"paired": None, "e2e": 1.0, "decode": 1.0, "ttft": 1.0}
    by_name = {entry["name"]: entry for entry in report["rows"]}
    a, b = by_name[row], by_name[baseline]
    paired = _paired_entry(report["paired"], row, baseline)
    if paired is not None:
        return {
            "paired": True,
            "e2e": _inverse(paired["e2e_s"]),
            "decode": paired["decode_tok_s"],
            "ttft": _inverse(paired["ttft_ms"]),
        }
    return {
        "paired": False,
        "e2e": ratio(b["e2e_s"], a["e2e_s"]),
        "decode": ratio(a["decode_tok_s"], b["decode_tok_s"]),
        "ttft": ratio(b["ttft_ms"], a["ttft_ms"]),
    }


def _memory_reduction(row: dict[str, Any], base: dict[str, Any]) -> float | None:
    share = ratio(row["peak_rss_mb"], base["peak_rss_mb"])
    return None if share is None else 1 - share


def _accuracy_cells(evaluations: dict[str, EvalResult], name: str) -> dict[str, Any]:
    result, base = evaluations.get(name), evaluations.get("base")
    if result is None:
        return {"accuracy": None, "accuracy_delta": None, "accuracy_delta_ci95": None}
    difference = None if base is None else paired_difference(base, result)
    return {
        "accuracy": result.accuracy,
        "accuracy_delta": None if difference is None else difference["delta"],
        "accuracy_delta_ci95": None if difference is None else difference["ci95"],
    }


def ablation_table(report: dict[str, Any], evaluations: dict[str, EvalResult]) -> list[dict[str, Any]]:
    """One entry per ablation row, computed from the report's rows and paired ratios; null where a
    side was not measured."""
    by_name = {row["name"]: row for row in report["rows"]}
    base = by_name["base"]
    table = []
    for plan in ablation_plan():
        row = by_name[plan.name]
        measured = row["status"] == "ok" and base["status"] == "ok"
        against_base = speedups(report, plan.name, "base") if measured else {}
        step = (
            speedups(report, plan.name, plan.previous)
            if measured and plan.previous and by_name[plan.previous]["status"] == "ok"
            else {}
        )
        table.append(
            {
                "name": plan.name,
                "variant": plan.variant,
                "recipe": row["recipe"],
                "built": row["status"] != "not built",
                "status": row["status"],
                "error": row["error"],
                "peak_rss_mb": row["peak_rss_mb"],
                "memory_reduction": _memory_reduction(row, base),
                "paired": against_base.get("paired"),
                "speedup_e2e": against_base.get("e2e"),
                "speedup_decode": against_base.get("decode"),
                "speedup_ttft": against_base.get("ttft"),
                "previous": plan.previous,
                "step_paired": step.get("paired"),
                "step_speedup_e2e": step.get("e2e"),
                "step_speedup_decode": step.get("decode"),
                "cpu_s_per_token": row["cpu_s_per_token"],
                "energy_j_per_token": row["energy_j_per_token"],
                **_accuracy_cells(evaluations, plan.name),
                "seed_estimate": SEED_ESTIMATES[plan.estimate] if plan.estimate else None,
                "seed_step_estimate": SEED_ESTIMATES[plan.step_estimate] if plan.step_estimate else None,
            }
        )
    return table
