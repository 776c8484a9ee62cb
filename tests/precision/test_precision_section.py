"""The adaptive precision section on a small Qwen3-VL: every unit gets a format in range, the plan keeps
its budget, a saved model reloads with identical weights and logits, a tampered plan is refused, bad
settings name their field, and the controller's mode shows in the metrics and acts on the request."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import slimvl
from slimvl import AdaptivePrecisionConfig, Recipe
from slimvl.errors import ModelLoadError
from slimvl.models.loader import load_model
from slimvl.precision import section
from slimvl.precision.int4_modules import Int4Linear
from slimvl.precision.machine_state import MachineState
from slimvl.precision.runtime import controlled
from slimvl.precision.units import model_units
from slimvl.quant.linear import Int8Linear

QUESTION = "What is in the image?"


def _config(**fields) -> AdaptivePrecisionConfig:
    settings = dict(
        base_precision="int8",
        min_precision="int4",
        max_precision="int8",
        target_bits=6.0,
        sensitivity_budget=1e-12,
        enable_dynamic_precision=False,
        calibration_samples=1,
    )
    settings.update(fields)
    return AdaptivePrecisionConfig(**settings)


@pytest.fixture(scope="module")
def mixed(small_checkpoint: Path) -> slimvl.SlimModel:
    return slimvl.load(str(small_checkpoint), Recipe(name="mixed", adaptive_precision=_config()))


def test_units_cover_every_quantizable_linear_once(small_model) -> None:
    units = model_units(small_model.model)
    names = [m for u in units for m in u.modules]
    assert len(names) == len(set(names))
    linears = {n for n, m in small_model.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears == set(names) - {"model.language_model.embed_tokens"}


def test_the_plan_mixes_formats_within_its_budget(mixed: slimvl.SlimModel) -> None:
    plan = mixed.plans["adaptive_precision"]
    assert set(plan["formats"].values()) == {"int4", "int8"}
    assert plan["budgeted_bytes"] == plan["planned_bytes"] <= plan["budget_bytes"]  # no unit fixed outside
    for name, fmt in plan["formats"].items():
        for module in plan["units"][name]["modules"]:
            if module == "lm_head" or module.endswith("embed_tokens"):
                continue
            expected = Int4Linear if fmt == "int4" else Int8Linear
            assert isinstance(mixed.loaded.model.get_submodule(module), expected), module
    kl = {n: u["divergence"] for n, u in plan["units"].items()}
    assert all(d["int8"] <= d["int4"] + 1e-9 for d in kl.values() if "int4" in d)


def test_info_shows_each_units_format_and_divergence(mixed: slimvl.SlimModel) -> None:
    from rich.console import Console

    from slimvl.cli.tables import precision_table

    console = Console(record=True, width=200)
    console.print(precision_table(mixed.plans["adaptive_precision"]))
    text = console.export_text()
    assert "within a" in text and "decoder.0.attn_qk" in text
    assert "int4" in text and "int8" in text


def test_a_saved_plan_reloads_with_identical_weights_and_logits(
    mixed: slimvl.SlimModel, small_checkpoint: Path, tmp_path: Path, square_image: Image.Image
) -> None:
    recipe = Recipe(name="mixed", adaptive_precision=_config())
    out = slimvl.optimize(str(small_checkpoint), recipe, tmp_path / "mixed")
    reloaded = slimvl.load(out)
    assert reloaded.plans["adaptive_precision"]["formats"] == mixed.plans["adaptive_precision"]["formats"]
    for name, tensor in mixed.loaded.model.state_dict().items():
        assert torch.equal(tensor, reloaded.loaded.model.state_dict()[name]), name
    a = mixed.generate([square_image], QUESTION, max_new_tokens=5, ignore_eos=True)
    b = reloaded.generate([square_image], QUESTION, max_new_tokens=5, ignore_eos=True)
    assert a.token_ids == b.token_ids
    assert torch.equal(a.first_logits, b.first_logits)


def test_a_tampered_plan_is_refused(small_checkpoint: Path, tmp_path: Path) -> None:
    recipe = Recipe(name="int4", adaptive_precision=_config(plan="uniform"))
    out = slimvl.optimize(str(small_checkpoint), recipe, tmp_path / "int4")
    manifest = json.loads((out / "slimvl.json").read_text())
    modules = manifest["plans"]["adaptive_precision"]["modules"]
    name = next(n for n, e in modules.items() if e["kind"] == "linear")
    modules[name]["shape"][1] += 32
    (out / "slimvl.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="adaptive precision plan gives"):
        slimvl.load(out)


def test_bad_settings_name_their_field(small_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"AdaptivePrecisionConfig\.min_precision: got 'int2'"):
        AdaptivePrecisionConfig(min_precision="int2")
    with pytest.raises(ValueError, match=r"AdaptivePrecisionConfig\.plan"):
        AdaptivePrecisionConfig(plan="greedy")
    loaded = load_model(str(small_checkpoint))
    with pytest.raises(
        ValueError, match=r"AdaptivePrecisionConfig\.target_bits: a budget of .* allowed: at least"
    ):
        section.plan_formats(model_units(loaded.model), _config(target_bits=4.0), _fake_divergence(loaded))


def _fake_divergence(loaded) -> dict:
    return {
        u.name: {"int4": 1.0, "int8": 0.1} if u.allows("int4") else {"int8": 0.1}
        for u in model_units(loaded.model)
    }


def test_the_seed_snippet_runs_unchanged(small_checkpoint: Path) -> None:
    config = AdaptivePrecisionConfig(
        base_precision="fp16", enable_dynamic_precision=True, min_precision="int8", max_precision="fp32"
    )
    slim = slimvl.load(
        str(small_checkpoint),
        Recipe(name="seed", adaptive_precision=dataclasses.replace(config, calibration_samples=1)),
    )
    formats = set(slim.plans["adaptive_precision"]["formats"].values())
    assert formats <= {"int8", "fp16", "fp32"}


def _state(**fields) -> MachineState:
    base = dict(
        available_memory_bytes=16 * 2**30,
        on_battery=False,
        battery_percent=90.0,
        temperature_c=50.0,
        critical_temperature_c=100.0,
        cpu_load=0.1,
        cpu_freq_ratio=1.0,
        logical_cpus=2,
    )
    base.update(fields)
    return MachineState(**base)


def test_the_controller_acts_on_the_request_and_shows_in_the_metrics(
    mixed: slimvl.SlimModel, square_image: Image.Image
) -> None:
    loaded = mixed.loaded
    pipeline = mixed.pipeline
    normal = controlled(loaded, pipeline.weight_bytes, 512, state_source=lambda: _state())
    saving = controlled(
        loaded, pipeline.weight_bytes, 512, state_source=lambda: _state(on_battery=True, battery_percent=10.0)
    )
    original = pipeline.hooks
    try:
        pipeline.hooks = normal
        calm = pipeline([square_image], QUESTION, max_new_tokens=2).metrics
        pipeline.hooks = saving
        low = pipeline([square_image], QUESTION, max_new_tokens=2).metrics
    finally:
        pipeline.hooks = original
    assert calm.mode["name"] == "normal" and calm.visual_tokens_kept == calm.visual_tokens
    assert low.mode["name"] == "battery_saver" and "battery_percent 10" in low.mode["reasons"][0]
    assert low.threads == 1
    assert low.visual_tokens < calm.visual_tokens  # the image was resized smaller
    assert low.visual_tokens_kept == low.visual_tokens  # the default policy keeps every visual token
