from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import slimvl
from slimvl import api
from slimvl.config import preset
from slimvl.errors import InputError, ModelLoadError


@pytest.fixture(scope="module")
def slim(small_checkpoint: Path) -> slimvl.SlimModel:
    return slimvl.load(str(small_checkpoint))


def test_generate_from_pil_and_path(
    slim: slimvl.SlimModel, image_file: Path, tall_image: Image.Image
) -> None:
    answer = slim.generate([tall_image, image_file], "What shape is the red object?", max_new_tokens=4)
    assert isinstance(answer.text, str)
    assert 1 <= len(answer.token_ids) <= 4
    assert answer.metrics.visual_tokens == 160 + 196
    assert slim.recipe == preset("none")


def test_generate_function_loads_a_reference(small_checkpoint: Path, image_file: Path) -> None:
    answer = slimvl.generate(str(small_checkpoint), [image_file], "Is there a circle?", max_new_tokens=2)
    assert 1 <= len(answer.token_ids) <= 2


def test_generate_rejects_a_missing_image(slim: slimvl.SlimModel, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        slim.generate([tmp_path / "nope.png"], "What color?")


def test_unknown_model() -> None:
    with pytest.raises(ModelLoadError, match="builtin:nope"):
        slimvl.load("builtin:nope")


def _must_not_load(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded although the request was invalid")


def test_recipe_without_handler_is_not_built(
    monkeypatch: pytest.MonkeyPatch, small_checkpoint: Path, not_built
) -> None:
    not_built("int8")
    monkeypatch.setattr(api, "load_model", _must_not_load)  # the recipe is checked first
    with pytest.raises(api.NotBuiltError, match="'int8' asks for int8: not built"):
        slimvl.load(str(small_checkpoint), "int8")


def test_the_seed_snippet_imports_from_the_package() -> None:
    """The configuration snippet slimvl was specified with imports its configs from the top-level package (it runs in tests/config)."""
    from slimvl import AdaptivePrecisionConfig, INT8QuantizationConfig, PruningConfig, SparsificationConfig

    assert (INT8QuantizationConfig, SparsificationConfig, PruningConfig, AdaptivePrecisionConfig) == (
        slimvl.config.INT8QuantizationConfig,
        slimvl.config.SparsificationConfig,
        slimvl.config.PruningConfig,
        slimvl.config.AdaptivePrecisionConfig,
    )
    assert slimvl.Recipe is slimvl.config.Recipe
