from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from slimvl import registry
from slimvl.bench import harness
from slimvl.bench.harness import BenchOptions, bench_rows, initial_result, worker_env
from slimvl.bench.profiles import get_profile
from slimvl.bench.rows import PEER_NAMES, parse_peers, peer_row, slimvl_row
from slimvl.config import preset


def test_parse_peers() -> None:
    assert parse_peers("hf-fp32, hf-bf16,") == ["hf-fp32", "hf-bf16"]
    with pytest.raises(ValueError, match="unknown peer x"):
        parse_peers("hf-fp32,x")
    assert set(PEER_NAMES) == {
        "hf-fp32",
        "hf-bf16",
        "torchao-int8",
        "openvino-int8",
        "openvino-int8-f32",
        "openvino-int8-prune60",
        "openvino-int4",
    }


def test_torchao_missing_is_not_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torchao" else real(name))
    result = initial_result(peer_row("builtin:2b-shape", "torchao-int8"))
    assert result.status == "not runnable" and "torchao is not installed" in result.error


def test_openvino_without_its_venv_is_not_runnable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLIMVL_OPENVINO_VENV", str(tmp_path / "absent"))
    for peer in ("openvino-int8", "openvino-int4"):
        result = initial_result(peer_row("builtin:2b-shape", peer))
        assert result.status == "not runnable" and "run scripts/setup_openvino.sh" in result.error


def test_recipe_not_built_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "handler", lambda _section: None)
    result = initial_result(slimvl_row("builtin:2b-shape", preset("int8")))
    assert result.status == "not built" and result.error == "missing: int8"
    assert initial_result(slimvl_row("builtin:2b-shape", preset("none"))).status == "ok"


def test_rows_default_and_profile_notes() -> None:
    rows = bench_rows(
        BenchOptions("builtin:2b-shape", peers=["hf-bf16", "openvino-int4"], profile="i5-10210u")
    )
    assert [row.name for row in rows] == ["slimvl:none", "hf-bf16", "openvino-int4"]
    assert rows[1].dtype == "bf16" and rows[2].weight_format == "int4"
    assert any("cannot be capped" in note for note in rows[2].notes)


def test_duplicate_row_names_are_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    preset("none").save(recipe)
    with pytest.raises(ValueError, match="two bench rows are named 'slimvl:none'"):
        bench_rows(BenchOptions("builtin:2b-shape", recipes=["none", str(recipe)]))


def test_worker_env_fixes_threads_and_applies_the_profile_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    env = worker_env(3, get_profile("i5-10210u"))
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "ATEN_CPU_CAPABILITY" not in worker_env(3, get_profile("native"))


def test_every_worker_gets_the_same_huge_page_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(
        harness, "huge_page_env", lambda env: {**env, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    )
    assert worker_env(2, get_profile("native"))["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
