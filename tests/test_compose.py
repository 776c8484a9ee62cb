"""Any two of the four optimizations compose (each in the form the `laptop` preset uses) and round-trip
through an optimized directory with the same greedy tokens."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import slimvl
from slimvl.config import Recipe, preset
from slimvl.pipeline import Answer
from slimvl.precision.int4_modules import Int4Linear
from slimvl.quant import Int8Linear

SECTIONS = ("int8", "sparsification", "pruning", "adaptive_precision")
PAIRS = list(itertools.combinations(SECTIONS, 2))


def _pair_recipe(pair: tuple[str, str]) -> Recipe:
    laptop = dict(preset("laptop").configs())
    return Recipe("-".join(pair), **{key: laptop[key] for key in pair})


def _check_in_effect(slim: slimvl.SlimModel, pair: tuple[str, str], answer: Answer) -> None:
    """Each optimization of the pair left its mark on the model or the request."""
    model = slim.loaded.model
    modules = list(model.modules())
    if "int8" in pair:
        assert any(isinstance(m, Int8Linear) for m in modules)
    if "adaptive_precision" in pair:
        assert any(isinstance(m, Int4Linear) for m in modules)
    if "pruning" in pair:
        intermediate = model.config.text_config.intermediate_size
        down = model.model.language_model.layers[0].mlp.down_proj
        width = down.codes.shape[1] * 2 if isinstance(down, Int4Linear) else down.in_features
        assert width < intermediate
    if "sparsification" in pair:
        metrics = answer.metrics
        assert 0 < metrics.visual_tokens_kept < metrics.visual_tokens


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(pair) for pair in PAIRS])
def test_pair_composes_and_round_trips(
    small_checkpoint: Path, tmp_path: Path, square_image, pair: tuple[str, str]
) -> None:
    recipe = _pair_recipe(pair)
    in_memory = slimvl.load(str(small_checkpoint), recipe)
    a = in_memory.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    _check_in_effect(in_memory, pair, a)
    out = slimvl.optimize(str(small_checkpoint), recipe, tmp_path / "dir")
    reloaded = slimvl.load(str(out))
    assert reloaded.recipe == recipe
    b = reloaded.generate([square_image], "What color?", max_new_tokens=6, ignore_eos=True)
    _check_in_effect(reloaded, pair, b)
    assert a.token_ids == b.token_ids
