"""Precision plans: the sensitivity plan keeps its byte budget and beats uniform formats at the same
bytes on the summed divergence it optimises; a divergence budget shrinks it further; llama.cpp's rule is
followed layer by layer."""

from __future__ import annotations

import random

import pytest

from slimvl.precision import planner
from slimvl.precision.units import Unit


def _units(layers: int = 8) -> list[Unit]:
    units = []
    for i in range(layers):
        for role, shape in (
            ("attn_qk", (96, 64)),
            ("attn_v", (32, 64)),
            ("attn_o", (64, 64)),
            ("mlp_gate_up", (256, 64)),
            ("mlp_down", (64, 128)),
        ):
            units.append(Unit(f"decoder.{i}.{role}", role, i, (f"m{i}{role}",), (shape,)))
    units.append(Unit("vision.0.vision_mlp", "vision_mlp", 0, ("v",), ((64, 4304),)))  # cannot take int4
    units.append(Unit("embed_tokens+lm_head", "table", None, ("e", "h"), ((500, 64),), tied=True))
    return units


def _divergence(units: list[Unit], seed: int = 0) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    out = {}
    for u in units:
        base = rng.lognormvariate(-8, 2)
        out[u.name] = {"int8": base / 20, "fp32": 0.0}
        if u.allows("int4"):
            out[u.name]["int4"] = base
    return out


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.6, 1.0])
def test_the_plan_keeps_its_budget_and_beats_uniform_at_equal_bytes(fraction: float) -> None:
    units, div = _units(), _divergence(_units())
    low = planner.total_bytes(units, planner.uniform_plan(units, "int4"))
    high = planner.total_bytes(units, planner.uniform_plan(units, "int8"))
    budget = int(low + fraction * (high - low))
    plan = planner.sensitivity_plan(
        units, {n: {f: v for f, v in d.items() if f != "fp32"} for n, d in div.items()}, budget
    )
    assert planner.total_bytes(units, plan) <= budget
    for fmt in ("int4", "int8"):
        uniform = planner.uniform_plan(units, fmt)
        if planner.total_bytes(units, uniform) <= budget:
            assert planner.total_divergence(div, plan) <= planner.total_divergence(div, uniform)
    heuristic = planner.llama_cpp_plan(units)
    if planner.total_bytes(units, heuristic) <= budget:
        assert planner.total_divergence(div, plan) <= planner.total_divergence(div, heuristic)


def test_a_budget_below_the_smallest_formats_is_refused() -> None:
    units, div = _units(), _divergence(_units())
    smallest = planner.total_bytes(units, planner.uniform_plan(units, "int4"))
    with pytest.raises(ValueError, match="below"):
        planner.sensitivity_plan(units, div, smallest - 1)


def test_a_divergence_budget_shrinks_the_plan_within_it() -> None:
    units, div = _units(), _divergence(_units())
    roomy = planner.total_bytes(units, {u.name: "fp32" for u in units})
    full = planner.sensitivity_plan(units, div, roomy)
    assert planner.total_divergence(div, full) == 0.0
    allowed = 1e-4
    shrunk = planner.sensitivity_plan(units, div, roomy, max_divergence=allowed)
    assert planner.total_divergence(div, shrunk) <= allowed
    assert planner.total_bytes(units, shrunk) < planner.total_bytes(units, full)


def test_llama_cpp_rule_on_28_layers() -> None:
    units = _units(28)
    plan = planner.llama_cpp_plan(units)
    favoured = {i for i in range(28) if plan[f"decoder.{i}.mlp_down"] == "int8"}
    assert favoured == {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27}
    assert all(plan[f"decoder.{i}.attn_v"] == plan[f"decoder.{i}.mlp_down"] for i in range(28))
    assert all(plan[f"decoder.{i}.attn_qk"] == "int4" for i in range(28))
    assert plan["embed_tokens+lm_head"] == "int8"
    assert plan["vision.0.vision_mlp"] == "int8"  # K = 4304 has no int4 groups


def test_formats_between_orders_by_bits() -> None:
    assert planner.formats_between("int4", "fp32", "bf16") == ["int4", "int8", "bf16", "fp32"]
    assert planner.formats_between("int8", "fp16", "fp16") == ["int8", "fp16"]
