"""The distilled pre-decoder scorer: fitting, scoring, and its place in an optimized directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import slimvl
from slimvl.calibration import Calibration
from slimvl.config import Recipe, SparsificationConfig
from slimvl.models.loader import LoadedModel
from slimvl.models.steps import build_sequence, encode_images
from slimvl.optimized import MANIFEST
from slimvl.sparsify.distill import (
    SCORER_MODULE,
    attention_examples,
    fit_token_scorer,
    scorer_dims,
)
from slimvl.sparsify.scorers import question_mask
from slimvl.sparsify.sparsifier import TokenSparsifier, VisionSparsifier, make_sparsifier

QUESTION = "Which shape is red?"
SPARSIFIER_OF_SCORER = {"distilled": TokenSparsifier, "vision": VisionSparsifier}


def _fitted_recipe(scorer: str) -> Recipe:
    config = SparsificationConfig(sparsity_ratio=0.6, scorer=scorer, calibration_samples=8)
    return Recipe(name=scorer, sparsification=config)


def _special(loaded: LoadedModel) -> list[int]:
    return loaded.preprocessor.tokenizer.all_special_ids


@pytest.fixture(scope="module")
def examples(small_model: LoadedModel):
    run = Calibration(samples=10).runner(small_model).run
    return attention_examples(run, small_model.model, _special(small_model), score_layer=1)


def test_fit_lowers_the_held_out_divergence_and_is_reproducible(small_model: LoadedModel, examples) -> None:
    dims = scorer_dims(small_model.model.config)
    scorer, record = fit_token_scorer(examples, *dims, seed=0, epochs=5)
    again, _ = fit_token_scorer(examples, *dims, seed=0, epochs=5)
    assert record["requests"] == 10 and record["held_out"] == 1
    assert record["held_out_kl"] < record["held_out_kl_initial"]
    assert torch.equal(scorer.query, again.query) and torch.equal(scorer.visual, again.visual)
    for example in examples:  # the targets are distributions over each request's visual tokens
        assert example.target.shape == (example.visuals.shape[0],)
        assert float(example.target.sum()) == pytest.approx(1.0)


def test_scores_one_distribution_over_every_image_of_a_prompt(
    small_model: LoadedModel, examples, square_image: Image.Image, tall_image: Image.Image
) -> None:
    scorer, _ = fit_token_scorer(examples, *scorer_dims(small_model.model.config), epochs=1)
    inputs = small_model.preprocessor([tall_image, square_image], QUESTION)
    with torch.inference_mode():
        seq = build_sequence(small_model.model, inputs, encode_images(small_model.model, inputs))
    scores = scorer.score(seq, question_mask(seq, small_model.preprocessor.tokenizer.all_special_ids))
    assert scores.shape == (int(seq.visual_mask.sum()),)
    assert float(scores.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("scorer", ["distilled", "vision"])
def test_a_model_without_a_fitted_scorer_is_refused(small_model: LoadedModel, scorer: str) -> None:
    with pytest.raises(ValueError, match=f"the {scorer} scorer is not fitted"):
        make_sparsifier(small_model.model, SparsificationConfig(scorer=scorer))


def test_the_vision_scorer_sees_the_first_deepstack_feature_alone(small_model: LoadedModel) -> None:
    runner = Calibration(samples=3).runner(small_model)
    model = small_model.model
    examples = attention_examples(runner.run, model, _special(small_model), 1, deepstack_only=True)
    hidden = model.config.text_config.hidden_size
    assert scorer_dims(model.config, deepstack_only=True) == (2 * hidden, hidden)
    for example in examples:
        assert example.visuals.shape == (example.target.shape[0], hidden)
    images, prompt = runner.requests[0]
    inputs = small_model.preprocessor(images, prompt)
    with torch.inference_mode():
        first_deepstack = encode_images(model, inputs).deepstack[0]
    assert torch.equal(examples[0].visuals, first_deepstack)


def test_the_vision_scorer_needs_deepstack_layers(small_model: LoadedModel, monkeypatch) -> None:
    monkeypatch.setattr(small_model.model.config.vision_config, "deepstack_visual_indexes", [])
    with pytest.raises(ValueError, match="no DeepStack"):
        make_sparsifier(small_model.model, SparsificationConfig(scorer="vision"))
    with pytest.raises(ValueError, match="no DeepStack"):
        scorer_dims(small_model.model.config, deepstack_only=True)


def test_calibration_samples_are_checked() -> None:
    with pytest.raises(ValueError, match="calibration_samples"):
        SparsificationConfig(scorer="distilled", calibration_samples=1)


@pytest.mark.parametrize("scorer", ["distilled", "vision"])
def test_optimized_directory_keeps_the_fitted_scorer(
    small_checkpoint: Path, tmp_path: Path, square_image: Image.Image, scorer: str
) -> None:
    recipe = _fitted_recipe(scorer)
    fitted = slimvl.load(str(small_checkpoint), recipe)
    out = slimvl.optimize(str(small_checkpoint), recipe, tmp_path / scorer)
    loaded = slimvl.load(out)

    plan = json.loads((out / MANIFEST).read_text())["plans"]["sparsification"]
    assert plan["scorer"] == scorer and plan["fit"]["requests"] == 8
    assert isinstance(loaded.pipeline.hooks, SPARSIFIER_OF_SCORER[scorer])
    original = getattr(fitted.loaded.model, SCORER_MODULE)
    stored = getattr(loaded.loaded.model, SCORER_MODULE)
    assert plan["sizes"] == original.sizes() == stored.sizes()
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, stored.state_dict()[name]), name
    a = fitted.generate([square_image], QUESTION, max_new_tokens=5)
    b = loaded.generate([square_image], QUESTION, max_new_tokens=5)
    assert a.token_ids == b.token_ids
    assert b.metrics.visual_tokens_kept == round(0.4 * b.metrics.visual_tokens)
