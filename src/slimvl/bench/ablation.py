"""`slimvl bench --ablation`: each optimization's gains, measured, with the
estimate slimvl was specified with (its "seed" estimate) beside each value.

Rows are the presets of the same names (`base` = preset "none", `all` = preset "laptop"). Speed and
memory are measured on the bench's model like any row; accuracy always on `builtin:tiny` (the model
whose answers are right or wrong), with the evaluator of `slimvl.eval`. The estimates beside
the measurements are `slimvl.experiments.seed_estimates`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from slimvl.api import load
from slimvl.bench.driver import Progress, RowResult
from slimvl.bench.rows import RowSpec, slimvl_row
from slimvl.bench.stats import ratio
from slimvl.config import Recipe, preset
from slimvl.errors import ModelLoadError
from slimvl.eval import evaluate
from slimvl.experiments.seed_estimates import SEED_ESTIMATES

ACCURACY_MODEL = "builtin:tiny"
ABLATION_PRESETS: tuple[tuple[str, str], ...] = (
    ("base", "none"),
    ("int8", "int8"),
    ("sparsify", "sparsify"),
    ("prune", "prune"),
    ("adaptive", "adaptive"),
    ("all", "laptop"),
)


AccuracyFn = Callable[[Recipe, int, int], float]


def ablation_rows(model: str) -> list[RowSpec]:
    return [slimvl_row(model, preset(recipe), name=name) for name, recipe in ABLATION_PRESETS]


def tiny_accuracy(recipe: Recipe, n: int, threads: int) -> float:
    """Exact-match accuracy of `builtin:tiny` with `recipe` on the first `n` test questions."""
    return evaluate(load(ACCURACY_MODEL, recipe, threads=threads), n=n).accuracy


def measure_accuracy(
    results: Sequence[RowResult],
    n: int,
    threads: int,
    progress: Progress,
    accuracy: AccuracyFn | None = None,
) -> tuple[dict[str, float], str]:
    """Accuracy per built row (by `accuracy`, default `tiny_accuracy`), and what it is (or why there is none)."""
    accuracy = accuracy or tiny_accuracy
    accuracies: dict[str, float] = {}
    for result in results:
        if result.status == "not built" or result.spec.recipe is None:
            continue
        progress(f"{result.spec.name}: accuracy on {ACCURACY_MODEL}, {n} questions")
        try:
            accuracies[result.spec.name] = accuracy(Recipe.from_dict(result.spec.recipe), n, threads)
        except ModelLoadError as exc:
            return {}, f"accuracy not measured: {exc}"
    return (
        accuracies,
        f"accuracy: exact match of {ACCURACY_MODEL} on the first {n} questions of the test split",
    )


def _reduction(row: dict[str, Any], base: dict[str, Any]) -> float | None:
    share = ratio(row["peak_rss_mb"], base["peak_rss_mb"])
    return None if share is None else 1 - share


def ablation_table(rows: Sequence[dict[str, Any]], accuracies: dict[str, float]) -> list[dict[str, Any]]:
    """One entry per ablation row; ratios against `base`, null where either side was not measured."""
    by_name = {row["name"]: row for row in rows}
    base = by_name["base"]
    base_accuracy = accuracies.get("base")
    table = []
    for name, _ in ABLATION_PRESETS:
        row = by_name[name]
        accuracy = accuracies.get(name)
        table.append(
            {
                "name": name,
                "built": row["status"] != "not built",
                "status": row["status"],
                "error": row["error"],
                "peak_rss_mb": row["peak_rss_mb"],
                "memory_reduction": _reduction(row, base),
                "speedup_e2e": ratio(base["e2e_s"], row["e2e_s"]),
                "speedup_decode": ratio(row["decode_tok_s"], base["decode_tok_s"]),
                "speedup_ttft": ratio(base["ttft_ms"], row["ttft_ms"]),
                "cpu_s_per_token": row["cpu_s_per_token"],
                "energy_j_per_token": row["energy_j_per_token"],
                "accuracy": accuracy,
                "accuracy_delta": None
                if accuracy is None or base_accuracy is None
                else accuracy - base_accuracy,
                "seed_estimate": SEED_ESTIMATES[name],
            }
        )
    return table
