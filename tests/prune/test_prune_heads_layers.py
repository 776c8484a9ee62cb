"""Structured pruning of decoder head groups and whole decoder layers: the shrunk model computes what
the dense model computes with those heads' (layers') outputs zeroed, generates through its per-layer
key/value cache, and reloads from its optimized directory."""

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
from slimvl.cli.main import main
from slimvl.config import INT8QuantizationConfig, PruningConfig, Recipe
from slimvl.errors import ModelLoadError
from slimvl.models.checkpoint import write_random_checkpoint
from slimvl.models.loader import LoadedModel, load_model
from slimvl.pipeline import Pipeline
from slimvl.prune.apply import prune_model
from slimvl.prune.heads import kv_groups
from slimvl.prune.layer_removal import BlockInfluence, layers_to_remove

QUESTION = "Which shape is red?"


@pytest.fixture(scope="module")
def deep_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six decoder layers (DeepStack feeds the first three): three may be removed."""
    return write_random_checkpoint(tmp_path_factory.mktemp("deep") / "random", seed=3, text_layers=6)


@pytest.fixture(scope="module")
def deep_model(deep_checkpoint: Path) -> LoadedModel:
    return load_model(str(deep_checkpoint))


def _calibration(loaded: LoadedModel, model, image: Image.Image):
    return CalibrationRunner(replace(loaded, model=model), [([image], "How many?"), ([], "Say hello.")]).run


@pytest.mark.parametrize("criterion", ["magnitude", "wanda"])
def test_removed_head_groups_are_the_dense_model_with_their_outputs_zeroed(
    small_model: LoadedModel, logits_of, tall_image: Image.Image, criterion: str
) -> None:
    shrunk = copy.deepcopy(small_model.model)
    config = PruningConfig(structured=True, criterion=criterion, pruning_ratio=0.0, head_ratio=0.5)
    plan = prune_model(shrunk, config, _calibration(small_model, shrunk, tall_image))
    zeroed = copy.deepcopy(small_model.model)
    assert plan["heads"] and all(kept == 1 for _groups, kept in plan["heads"].values())
    for name, (groups, _kept) in plan["heads"].items():
        full, small = zeroed.get_submodule(name), shrunk.get_submodule(name)
        assert kv_groups(full) == groups and kv_groups(small) == 1
        head_dim, per_group = full.head_dim, full.num_key_value_groups
        # the kept group is the one whose key rows survive; the others' query heads feed o_proj nothing
        kept = next(
            g
            for g in range(groups)
            if torch.equal(full.k_proj.weight[g * head_dim : (g + 1) * head_dim], small.k_proj.weight)
        )
        width = head_dim * per_group
        assert torch.equal(full.o_proj.weight[:, kept * width : (kept + 1) * width], small.o_proj.weight)
        with torch.no_grad():
            for g in set(range(groups)) - {kept}:
                full.o_proj.weight[:, g * width : (g + 1) * width] = 0
    torch.testing.assert_close(logits_of(shrunk), logits_of(zeroed), atol=2e-5, rtol=1e-4)


def test_removed_layers_are_the_dense_model_with_those_layers_made_identity(
    deep_model: LoadedModel, square_image: Image.Image, forward_logits
) -> None:
    shrunk = copy.deepcopy(deep_model.model)
    config = PruningConfig(structured=True, criterion="magnitude", pruning_ratio=0.0, layers_removed=2)
    plan = prune_model(shrunk, config, _calibration(deep_model, shrunk, square_image))
    removed = plan["removed_layers"]
    assert len(removed) == 2 and all(i >= 3 for i in removed)  # DeepStack feeds layers 0-2
    influence = plan["block_influence"]
    assert sorted(influence[3:])[:2] == sorted(influence[i] for i in removed)
    text = shrunk.model.language_model
    assert len(text.layers) == 4 and [layer.self_attn.layer_idx for layer in text.layers] == [0, 1, 2, 3]
    identity = copy.deepcopy(deep_model.model)
    with torch.no_grad():
        for i in removed:  # a layer whose attention and MLP add nothing passes its input on unchanged
            layer = identity.model.language_model.layers[i]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    inputs = deep_model.preprocessor([square_image], QUESTION)
    torch.testing.assert_close(
        forward_logits(shrunk, inputs), forward_logits(identity, inputs), atol=2e-5, rtol=1e-4
    )


def test_block_influence_ranks_an_identity_layer_first() -> None:
    influence = BlockInfluence(3)
    observers = list(influence.observers(_Text(3)).values())
    x = torch.randn(1, 5, 8)
    y = x + 0.5 * torch.randn(1, 5, 8)
    for observe, hidden in zip(observers, (x, x, y, -y), strict=True):  # layer 0 changes nothing
        observe(None, (hidden,), {})
    scores = influence.scores()
    assert scores[0] == pytest.approx(0, abs=1e-12) and scores[2] == pytest.approx(2.0)
    assert layers_to_remove(scores, 1, fed_by_deepstack=0) == [0]
    assert layers_to_remove(scores, 1, fed_by_deepstack=1) == [1]
    with pytest.raises(ValueError, match="PruningConfig.layers_removed: got 3, allowed: at most 2"):
        layers_to_remove(scores, 3, fed_by_deepstack=1)


class _Text(torch.nn.Module):
    def __init__(self, layers: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(layers))
        self.norm = torch.nn.Identity()


def test_heads_and_layers_compose_with_int8_and_reload_with_the_same_tokens(
    deep_checkpoint: Path, tmp_path: Path, square_image: Image.Image, capsys: pytest.CaptureFixture[str]
) -> None:
    pruning = PruningConfig(
        structured=True,
        criterion="wanda",
        pruning_ratio=0.25,
        head_ratio=0.5,
        layers_removed=1,
        pruning_schedule="one_shot",
        calibration_samples=4,
    )
    recipe = Recipe(name="heads-layers", pruning=pruning, int8=INT8QuantizationConfig())
    out = slimvl.optimize(str(deep_checkpoint), recipe, tmp_path / "heads")
    reloaded, again = slimvl.load(out), slimvl.load(out)
    plan = reloaded.plans["pruning"]
    text = reloaded.loaded.model.model.language_model
    assert len(text.layers) == 5 and len(plan["removed_layers"]) == 1
    assert all(kv_groups(layer.self_attn) == 1 for layer in text.layers)
    a = reloaded.generate([square_image], QUESTION, max_new_tokens=6, ignore_eos=True)
    b = again.generate([square_image], QUESTION, max_new_tokens=6, ignore_eos=True)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 6
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"decoder layer {plan['removed_layers'][0]}" in shown and "2 -> 1 kv heads" in shown
    manifest = json.loads((out / "slimvl.json").read_text())
    attention = next(iter(plan["heads"]))
    manifest["plans"]["pruning"]["heads"][attention][1] = 2
    (out / "slimvl.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError):
        slimvl.load(out)
    manifest["plans"]["pruning"]["heads"][attention][1] = 1
    manifest["plans"]["pruning"]["removed_layers"] = [9]
    (out / "slimvl.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="removes decoder layers"):
        slimvl.load(out)


def test_the_lean_decode_loop_follows_the_shrunk_heads_and_layers(
    deep_model: LoadedModel, square_image: Image.Image
) -> None:
    """Greedy tokens through the pipeline (its per-layer static cache and lean decode loop) equal
    transformers' own generation on the same pruned model."""
    model = copy.deepcopy(deep_model.model)
    config = PruningConfig(
        structured=True, criterion="magnitude", pruning_ratio=0.25, head_ratio=0.5, layers_removed=1
    )
    prune_model(model, config, _calibration(deep_model, model, square_image))
    pruned = replace(deep_model, model=model)
    answer = Pipeline(pruned)([square_image], QUESTION, max_new_tokens=6, ignore_eos=True)
    inputs = pruned.preprocessor([square_image], QUESTION)
    reference = model.generate(**inputs.model_kwargs(), do_sample=False, max_new_tokens=6, min_new_tokens=6)
    assert answer.token_ids == reference[0, inputs.input_ids.shape[1] :].tolist()


def test_bad_head_and_layer_settings_name_their_field(small_model: LoadedModel) -> None:
    model = copy.deepcopy(small_model.model)
    with pytest.raises(ValueError, match="PruningConfig.head_ratio: got 0.9, which removes all 2"):
        prune_model(model, PruningConfig(structured=True, criterion="magnitude", head_ratio=0.9))
    with pytest.raises(ValueError, match="PruningConfig.layers_removed: block influence needs calibration"):
        prune_model(model, PruningConfig(structured=True, criterion="magnitude", layers_removed=1))
    for field, value in (("head_ratio", 0.25), ("layers_removed", 1)):
        with pytest.raises(
            ValueError, match=f"PruningConfig.{field}: got {value}, allowed: 0 unless structured"
        ):
            PruningConfig(**{field: value})
    with pytest.raises(ValueError, match="PruningConfig.head_ratio: got 1.0"):
        PruningConfig(structured=True, head_ratio=1.0)
