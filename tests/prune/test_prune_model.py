"""Pruning a real (small) Qwen3-VL: exact row sparsity, protected modules untouched, the schedule, the
recipe section and its optimized directory."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

import slimvl
from slimvl.calibration import CalibrationRunner
from slimvl.config import PruningConfig, Recipe
from slimvl.errors import ModelLoadError
from slimvl.models.loader import LoadedModel
from slimvl.prune.apply import prune_model
from slimvl.prune.masks import pruned_per_row

QUESTION = "Which shape is red?"


@pytest.fixture(scope="module")
def requests(square_image: Image.Image, tall_image: Image.Image) -> list[tuple[list, str]]:
    return [([tall_image], "How many circles?"), ([square_image], "What color is the square?")]


def _pruned(small_model: LoadedModel, requests, **fields) -> tuple[torch.nn.Module, dict]:
    model = copy.deepcopy(small_model.model)
    run = CalibrationRunner(replace(small_model, model=model), requests).run
    return model, prune_model(model, PruningConfig(**fields), run)


@pytest.mark.parametrize("criterion", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("schedule", ["one_shot", "iterative"])
def test_every_row_of_every_pruned_layer_hits_the_ratio(
    small_model: LoadedModel, requests, criterion: str, schedule: str
) -> None:
    model, plan = _pruned(
        small_model,
        requests,
        criterion=criterion,
        pruning_schedule=schedule,
        num_pruning_steps=3,
        pruning_ratio=0.3,
    )
    assert plan["layers"] and plan["ratios"][-1] == pytest.approx(0.3)
    assert len(plan["ratios"]) == (3 if schedule == "iterative" else 1)
    assert plan["ratios"] == sorted(plan["ratios"])
    for name, record in plan["layers"].items():
        weight = model.get_submodule(name).weight
        zeros_per_row = (weight == 0).sum(dim=1)
        assert (zeros_per_row == pruned_per_row(weight.shape[1], 0.3)).all(), name
        assert record["sparsity"] == pytest.approx(float((weight == 0).float().mean()), abs=1e-6)


def test_protected_modules_and_everything_outside_the_decoder_stay_bit_identical(
    small_model: LoadedModel, requests
) -> None:
    model, plan = _pruned(
        small_model, requests, criterion="wanda", protected_modules=["lm_head", "layers.0.mlp"]
    )
    assert plan["protected"] and all("layers.0.mlp" in name for name in plan["protected"])
    original = small_model.model.state_dict()
    for name, tensor in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if module in plan["layers"]:
            assert not torch.equal(tensor, original[name])
        else:
            assert torch.equal(tensor, original[name]), name


def test_sparsegpt_changes_the_weights_it_keeps_and_wanda_does_not(
    small_model: LoadedModel, requests
) -> None:
    original = small_model.model.state_dict()
    for criterion, updates in (("wanda", False), ("sparsegpt", True)):
        model, plan = _pruned(small_model, requests, criterion=criterion, pruning_schedule="one_shot")
        name = next(iter(plan["layers"]))
        weight, before = model.get_submodule(name).weight, original[f"{name}.weight"]
        kept = weight != 0
        assert torch.equal(weight[kept], before[kept]) is not updates


def test_bad_settings_name_their_field(small_model: LoadedModel, requests) -> None:
    with pytest.raises(ValueError, match=r"PruningConfig.protected_modules: 'no_such_module'"):
        _pruned(small_model, requests, protected_modules=["no_such_module"])
    with pytest.raises(ValueError, match="PruningConfig.criterion"):
        prune_model(copy.deepcopy(small_model.model), PruningConfig(criterion="wanda"), None)
    with pytest.raises(ValueError, match="PruningConfig.criterion"):
        PruningConfig(criterion="random")
    with pytest.raises(ValueError, match="PruningConfig.pruning_ratio"):
        PruningConfig(pruning_ratio=1.0)


def _recipe(**fields) -> Recipe:
    config = PruningConfig(criterion="wanda", pruning_schedule="one_shot", calibration_samples=4, **fields)
    return Recipe(name="pruned", pruning=config)


def test_optimized_directory_reloads_the_same_weights_and_tokens(
    small_checkpoint: Path, tmp_path: Path, square_image: Image.Image
) -> None:
    recipe = _recipe()
    applied = slimvl.load(str(small_checkpoint), recipe)
    out = slimvl.optimize(str(small_checkpoint), recipe, tmp_path / "pruned")
    reloaded = slimvl.load(out)
    assert reloaded.plans["pruning"] == applied.plans["pruning"]
    for name, tensor in applied.loaded.model.state_dict().items():
        assert torch.equal(tensor, reloaded.loaded.model.state_dict()[name]), name
    # on disk exactly the pruned linears are stored in the sparse-bitmask layout
    stored = json.loads((out / "slimvl.json").read_text())["weights"]["sparse_bitmask"]
    assert sorted(stored) == sorted(f"{name}.weight" for name in applied.plans["pruning"]["layers"])
    a = applied.generate([square_image], QUESTION, max_new_tokens=6, ignore_eos=True)
    b = reloaded.generate([square_image], QUESTION, max_new_tokens=6, ignore_eos=True)
    assert a.token_ids == b.token_ids


def test_pruned_then_quantized_keeps_its_zeros(small_checkpoint: Path) -> None:
    recipe = Recipe(name="pruned-int8", pruning=_recipe().pruning, int8=slimvl.INT8QuantizationConfig())
    slim = slimvl.load(str(small_checkpoint), recipe)
    assert list(slim.plans) == ["pruning", "int8"]
    for name in slim.plans["pruning"]["layers"]:
        codes = slim.loaded.model.get_submodule(name).state_dict()["qweight"]
        rows = (codes == 0).sum(dim=1)
        assert (rows >= pruned_per_row(codes.shape[1], 0.3)).all(), name


def test_a_plan_that_does_not_fit_the_model_is_refused(small_checkpoint: Path, tmp_path: Path) -> None:
    import json

    out = slimvl.optimize(str(small_checkpoint), _recipe(), tmp_path / "pruned")
    manifest = json.loads((out / "slimvl.json").read_text())
    name = next(iter(manifest["plans"]["pruning"]["layers"]))
    manifest["plans"]["pruning"]["layers"][name]["shape"][0] += 1
    (out / "slimvl.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="pruning plan gives"):
        slimvl.load(out)


def test_recovery_lowers_the_divergence_and_keeps_the_masks_exact(small_checkpoint: Path) -> None:
    recipe = _recipe(fine_tune_steps=12)
    slim = slimvl.load(str(small_checkpoint), recipe)
    plan = slim.plans["pruning"]
    record = plan["recovery"]
    assert record["steps"] == 12 and record["requests"] == 4
    assert record["kl_after"] < record["kl_before"]
    for name in plan["layers"]:
        weight = slim.loaded.model.get_submodule(name).weight
        assert ((weight == 0).sum(dim=1) == pruned_per_row(weight.shape[1], 0.3)).all(), name
