"""Structured pruning: MLP channels leave, the matrices shrink, and the model computes what the dense
model computes with those channels zeroed."""

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
from slimvl.config import INT8QuantizationConfig, PruningConfig, Recipe
from slimvl.errors import ModelLoadError
from slimvl.models.loader import LoadedModel
from slimvl.prune.apply import prune_model
from slimvl.prune.structured import MLP_LINEARS, kept_width

QUESTION = "Which shape is red?"


@pytest.mark.parametrize("criterion", ["magnitude", "wanda"])
def test_the_shrunk_model_is_the_dense_one_with_those_channels_zeroed(
    small_model: LoadedModel, logits_of, tall_image: Image.Image, criterion: str
) -> None:
    shrunk = copy.deepcopy(small_model.model)
    run = CalibrationRunner(replace(small_model, model=shrunk), [([tall_image], "How many?")]).run
    config = PruningConfig(structured=True, criterion=criterion, pruning_ratio=0.5, num_pruning_steps=2)
    plan = prune_model(shrunk, config, run)
    zeroed = copy.deepcopy(small_model.model)
    assert plan["widths"]
    for name, (original, kept) in plan["widths"].items():
        assert kept == kept_width(original, 0.5)
        reader = MLP_LINEARS[type(zeroed.get_submodule(name)).__name__][1]
        full = zeroed.get_submodule(f"{name}.{reader}").weight
        small = shrunk.get_submodule(f"{name}.{reader}").weight
        assert small.shape == (full.shape[0], kept)
        # which original channels survive: each kept column is one of the original ones, in order
        match = (small.T[:, None, :] == full.T[None, :, :]).all(-1).float().argmax(dim=1)
        assert torch.equal(full[:, match], small) and bool((match.diff() > 0).all())
        removed = torch.ones(original, dtype=torch.bool)
        removed[match] = False
        with torch.no_grad():
            full[:, removed] = 0
    torch.testing.assert_close(
        logits_of(shrunk),
        logits_of(zeroed),
        atol=2e-5,
        rtol=1e-4,
    )


def _recipe(**fields) -> Recipe:
    config = PruningConfig(
        structured=True, criterion="wanda", pruning_ratio=0.5, calibration_samples=4, **fields
    )
    return Recipe(name="channels", pruning=config, int8=INT8QuantizationConfig())


def test_optimized_directory_rebuilds_the_widths_and_gives_the_same_tokens(
    small_checkpoint: Path, tmp_path: Path, square_image: Image.Image
) -> None:
    recipe = _recipe(pruning_schedule="one_shot")
    out = slimvl.optimize(str(small_checkpoint), recipe, tmp_path / "channels")
    applied = slimvl.load(str(small_checkpoint), recipe)
    reloaded = slimvl.load(out)
    widths = reloaded.plans["pruning"]["widths"]
    assert widths == applied.plans["pruning"]["widths"]
    layer = next(name for name in widths if "language_model" in name)
    assert reloaded.loaded.model.get_submodule(f"{layer}.down_proj").in_features == widths[layer][1]
    manifest = json.loads((out / "slimvl.json").read_text())
    # the optimized directory's own reload is token-identical (the load-time model races its own kernels)
    again = slimvl.load(out)
    a = reloaded.generate([square_image], QUESTION, max_new_tokens=6, ignore_eos=True)
    b = again.generate([square_image], QUESTION, max_new_tokens=6, ignore_eos=True)
    assert a.token_ids == b.token_ids
    assert reloaded.pipeline.weight_bytes < slimvl.load(str(small_checkpoint), "int8").pipeline.weight_bytes
    manifest["plans"]["pruning"]["widths"][layer][1] += 1
    (out / "slimvl.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="int8 plan gives"):
        slimvl.load(out)


def test_bad_structured_settings_name_their_field(small_model: LoadedModel) -> None:
    model = copy.deepcopy(small_model.model)
    with pytest.raises(ValueError, match="PruningConfig.pruning_ratio: got 0.9999, which removes all"):
        prune_model(model, PruningConfig(structured=True, criterion="magnitude", pruning_ratio=0.9999))
    with pytest.raises(ValueError, match="PruningConfig.criterion: got 'sparsegpt'"):
        prune_model(model, PruningConfig(structured=True, criterion="sparsegpt"))
    with pytest.raises(ValueError, match="PruningConfig.criterion: 'wanda' needs"):
        prune_model(model, PruningConfig(structured=True, criterion="wanda"))
