from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimvl import registry
from slimvl.bench import ablation
from slimvl.bench.ablation import ABLATION_PRESETS, ablation_table, measure_accuracy
from slimvl.bench.driver import RowResult
from slimvl.bench.rows import slimvl_row
from slimvl.cli import main
from slimvl.config import Recipe, preset
from slimvl.errors import ModelLoadError
from slimvl.experiments.seed_estimates import SEED_ESTIMATES

ABLATION_KEYS = {
    "name",
    "built",
    "memory_reduction",
    "speedup_e2e",
    "speedup_decode",
    "speedup_ttft",
    "cpu_s_per_token",
    "accuracy",
    "accuracy_delta",
    "seed_estimate",
}
MEASURED = ABLATION_KEYS - {"name", "built", "seed_estimate"}


def _row(name: str, status: str = "ok", **values: float) -> dict[str, Any]:
    keys = ("peak_rss_mb", "e2e_s", "decode_tok_s", "ttft_ms", "cpu_s_per_token", "energy_j_per_token")
    return {"name": name, "status": status, "error": None, **{key: values.get(key) for key in keys}}


def test_ablation_arithmetic() -> None:
    rows = [_row("base", peak_rss_mb=1000, e2e_s=10, decode_tok_s=4, ttft_ms=2000, cpu_s_per_token=0.5)]
    rows.append(_row("int8", peak_rss_mb=400, e2e_s=5, decode_tok_s=10, ttft_ms=1000, cpu_s_per_token=0.2))
    rows += [_row(name, status="not built") for name, _ in ABLATION_PRESETS[2:]]
    table = ablation_table(rows, {"base": 0.9, "int8": 0.88})
    base, int8, *rest = table
    assert (base["speedup_e2e"], base["memory_reduction"], base["accuracy_delta"]) == (1.0, 0.0, 0.0)
    assert int8["memory_reduction"] == pytest.approx(0.6)
    assert (int8["speedup_e2e"], int8["speedup_decode"], int8["speedup_ttft"]) == (2.0, 2.5, 2.0)
    assert int8["accuracy_delta"] == pytest.approx(-0.02)
    assert int8["seed_estimate"]["speedup"] == "2.0x" and base["seed_estimate"] is None
    for entry in rest:
        assert entry["built"] is False and all(entry[key] is None for key in MEASURED)


def test_accuracy_without_builtin_tiny_is_null_with_the_reason() -> None:
    results = [RowResult(slimvl_row("m", preset("none"), name="base"))]

    def unshipped(recipe: Recipe, n: int, threads: int) -> float:
        raise ModelLoadError("builtin:tiny is not shipped in this installation")

    accuracies, note = measure_accuracy(results, 5, 1, lambda _: None, accuracy=unshipped)
    assert accuracies == {} and "not shipped" in note


def test_ablation_run(
    small_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(registry, "handler", lambda _section: None)  # nothing built: only base runs
    asked: list[tuple[str, int]] = []

    def fake_accuracy(recipe: Recipe, n: int, threads: int) -> float:
        asked.append((recipe.name, n))
        return 0.75

    monkeypatch.setattr(ablation, "tiny_accuracy", fake_accuracy)
    args = ["--runs", "2", "--max-new-tokens", "4", "--threads", "1", "--bandwidth-bytes", "64000000"]
    out, md = tmp_path / "a.json", tmp_path / "a.md"
    outputs = ["--json-out", str(out), "--md-out", str(md)]
    assert main(["bench", "--ablation", str(small_checkpoint), *args, "--accuracy-n", "3", *outputs]) == 0
    report = json.loads(out.read_text())
    entries = report["ablation"]
    assert [e["name"] for e in entries] == ["base", "int8", "sparsify", "prune", "adaptive", "all"]
    assert asked[0] == ("none", 3)
    for entry in entries:
        assert set(entry) >= ABLATION_KEYS
        assert entry["seed_estimate"] == SEED_ESTIMATES[entry["name"]]
    base, *others = entries
    assert base["built"] is True and base["speedup_e2e"] == 1.0 and base["accuracy"] == 0.75
    assert isinstance(base["cpu_s_per_token"], float)
    for entry in others:
        assert entry["built"] is False and all(entry[key] is None for key in MEASURED)
    statuses = {row["name"]: row["status"] for row in report["rows"]}
    assert statuses == {"base": "ok", **{e["name"]: "not built" for e in others}}
    assert "## Ablation" in md.read_text() and "| int8 | no |" in md.read_text()
    assert "not built" in capsys.readouterr().out
