from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimvl import registry
from slimvl.bench import ablation
from slimvl.bench.ablation import FIRST_WAVE, ablation_plan, ablation_rows, ablation_table, measure_accuracy
from slimvl.bench.driver import RowResult
from slimvl.bench.plot import seed_number
from slimvl.bench.report import paired_ratios
from slimvl.bench.rows import slimvl_row
from slimvl.cli import main
from slimvl.config import Recipe, preset
from slimvl.errors import ModelLoadError
from slimvl.eval import EvalResult
from slimvl.experiments.seed_estimates import SEED_ESTIMATES

MEASURED = (
    "memory_reduction",
    "speedup_e2e",
    "speedup_decode",
    "speedup_ttft",
    "cpu_s_per_token",
    "accuracy",
    "accuracy_delta",
)
TABLE_ORDER = [
    "base",
    "int8",
    "sparsify",
    "prune",
    "prune-unstructured",
    "adaptive",
    "int8+sparsify",
    "int8+sparsify+prune",
    "all",
]


def test_rows_split_the_laptop_preset() -> None:
    laptop = dict(preset("laptop").configs())
    plan = {row.name: row for row in ablation_plan()}
    assert list(plan) == TABLE_ORDER
    assert plan["base"].recipe.is_empty
    assert dict(plan["all"].recipe.configs()) == laptop
    for name, key in (("int8", "int8"), ("sparsify", "sparsification"), ("prune", "pruning")):
        assert dict(plan[name].recipe.configs()) == {key: laptop[key]}
    assert dict(plan["adaptive"].recipe.configs()) == {"adaptive_precision": laptop["adaptive_precision"]}
    unstructured = plan["prune-unstructured"].recipe.pruning
    assert not unstructured.structured and unstructured.pruning_ratio == pytest.approx(0.3)
    for row in plan.values():  # each cumulative row adds exactly one of laptop's sections
        if row.variant == "cumulative":
            before = dict(plan[row.previous].recipe.configs())
            after = dict(row.recipe.configs())
            assert before.items() <= after.items() and len(after) == len(before) + 1
    assert [row.name for row in plan.values() if row.previous] == TABLE_ORDER[-3:]


def test_every_estimate_named_by_a_row_exists() -> None:
    named = {row.estimate for row in ablation_plan()} | {row.step_estimate for row in ablation_plan()}
    assert named - {None} == set(SEED_ESTIMATES) - {"base"}


def test_the_rows_the_bars_compare_start_first() -> None:
    first, later = ablation_rows("builtin:tiny")
    assert [spec.name for spec in first] == list(FIRST_WAVE)
    assert {spec.name for spec in first + later} == set(TABLE_ORDER)


def _runs(wave: int, e2e: list[float], decode: list[float], ttft: list[float]) -> list[dict[str, Any]]:
    return [
        {"wave": wave, "run": i + 1, "e2e_s": a, "decode_tok_s": b, "ttft_ms": c}
        for i, (a, b, c) in enumerate(zip(e2e, decode, ttft, strict=True))
    ]


def _row(name: str, status: str = "ok", runs: list[dict[str, Any]] | None = None, **values: Any) -> dict:
    keys = ("peak_rss_mb", "e2e_s", "decode_tok_s", "ttft_ms", "cpu_s_per_token", "energy_j_per_token")
    return {
        "name": name,
        "recipe": name,
        "status": status,
        "error": None,
        "per_run": runs or [],
        **{key: values.get(key) for key in keys},
    }


def _evaluation(correct: list[bool]) -> EvalResult:
    return EvalResult("test", len(correct), False, correct, ["count"] * len(correct))


def test_cells_are_computed_from_the_runs() -> None:
    rows = [
        # base and int8 ran side by side (wave 1): paired ratios, round by round
        _row(
            "base",
            runs=_runs(1, [10, 20], [4, 2], [2000, 4000]),
            peak_rss_mb=1000,
            e2e_s=15,
            decode_tok_s=3,
            ttft_ms=3000,
            cpu_s_per_token=0.5,
        ),
        _row(
            "int8",
            runs=_runs(1, [5, 5], [8, 8], [1000, 1000]),
            peak_rss_mb=400,
            e2e_s=5,
            decode_tok_s=8,
            ttft_ms=1000,
            cpu_s_per_token=0.2,
        ),
        # int8+sparsify ran in another wave: ratios of medians, marked unpaired
        _row(
            "int8+sparsify",
            runs=_runs(2, [3, 3], [8, 8], [500, 500]),
            peak_rss_mb=300,
            e2e_s=3,
            decode_tok_s=8,
            ttft_ms=500,
            cpu_s_per_token=0.1,
        ),
    ]
    built = {"base", "int8", "int8+sparsify"}
    rows += [_row(name, status="not built") for name in TABLE_ORDER if name not in built]
    report = {"rows": rows, "paired": paired_ratios(rows)}
    evaluations = {
        "base": _evaluation([True] * 8 + [False] * 2),
        "int8": _evaluation([True] * 7 + [False] * 3),
    }
    table = {entry["name"]: entry for entry in ablation_table(report, evaluations)}
    assert list(table) == TABLE_ORDER
    base, int8, cumulative = table["base"], table["int8"], table["int8+sparsify"]
    assert (base["speedup_e2e"], base["memory_reduction"], base["accuracy_delta"]) == (1.0, 0.0, 0.0)
    assert base["paired"] is None  # the baseline itself: no mark
    # paired: the median over rounds of base/int8 (2 and 4: 3), not the ratio of medians (15/5)
    assert int8["paired"] is True
    assert int8["speedup_e2e"] == pytest.approx(1 / ((0.5 + 0.25) / 2))
    assert int8["speedup_decode"] == pytest.approx((2 + 4) / 2)
    assert int8["memory_reduction"] == pytest.approx(0.6)
    assert int8["accuracy_delta"] == pytest.approx(-0.1)
    low, high = int8["accuracy_delta_ci95"]
    assert low < -0.1 < high
    assert int8["seed_estimate"] == SEED_ESTIMATES["int8"]
    assert cumulative["paired"] is False and cumulative["speedup_e2e"] == pytest.approx(5.0)
    assert cumulative["speedup_ttft"] == pytest.approx(6.0)
    assert cumulative["previous"] == "int8" and cumulative["step_speedup_e2e"] == pytest.approx(5 / 3)
    assert cumulative["seed_step_estimate"] == SEED_ESTIMATES["sparsify"]
    assert cumulative["accuracy"] is None and cumulative["accuracy_delta"] is None
    for name in TABLE_ORDER:
        if name not in built:
            assert table[name]["built"] is False
            assert all(table[name][key] is None for key in MEASURED)


def test_seed_numbers_for_the_plot() -> None:
    assert seed_number("2.0x") == 2.0 and seed_number("~75%") == 0.75
    assert seed_number("Variable") is None and seed_number("~50% of visual tokens") is None


def test_accuracy_without_builtin_tiny_is_null_with_the_reason() -> None:
    results = [RowResult(slimvl_row("m", preset("none"), name="base"))]

    def unshipped(recipe: Recipe, n: int, threads: int) -> EvalResult:
        raise ModelLoadError("builtin:tiny is not shipped in this installation")

    evaluations, note = measure_accuracy(results, 5, 1, lambda _: None, accuracy=unshipped)
    assert evaluations == {} and "not shipped" in note


def test_ablation_run(
    small_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(registry, "handler", lambda _section: None)  # nothing built: only base runs
    asked: list[tuple[str, int]] = []

    def fake_evaluation(recipe: Recipe, n: int, threads: int) -> EvalResult:
        asked.append((recipe.name, n))
        return _evaluation([True, True, False])

    monkeypatch.setattr(ablation, "tiny_evaluation", fake_evaluation)
    args = ["--runs", "2", "--max-new-tokens", "4", "--threads", "1", "--bandwidth-bytes", "64000000"]
    out, md, png = tmp_path / "a.json", tmp_path / "a.md", tmp_path / "a.png"
    outputs = ["--json-out", str(out), "--md-out", str(md), "--plot", str(png)]
    # an extra row beside the ablation's (here the same model without optimization) is measured too
    extra = ["--recipe", "none"]
    assert (
        main(["bench", "--ablation", str(small_checkpoint), *args, *extra, "--accuracy-n", "3", *outputs])
        == 0
    )
    report = json.loads(out.read_text())
    entries = report["ablation"]
    assert [e["name"] for e in entries] == TABLE_ORDER
    assert asked == [("none", 3)]
    base, *others = entries
    assert base["built"] is True and base["speedup_e2e"] == 1.0 and base["accuracy"] == pytest.approx(2 / 3)
    assert isinstance(base["cpu_s_per_token"], float)
    for entry in others:
        assert entry["built"] is False and all(entry[key] is None for key in MEASURED)
    statuses = {row["name"]: row["status"] for row in report["rows"]}
    assert statuses == {"base": "ok", "slimvl:none": "ok", **{e["name"]: "not built" for e in others}}
    assert [row["name"] for row in report["rows"]][:4] == ["base", "int8", "all", "slimvl:none"]
    text = md.read_text()
    assert "## Ablation" in text and "| int8 (not built) |" in text
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "not built" in capsys.readouterr().out
