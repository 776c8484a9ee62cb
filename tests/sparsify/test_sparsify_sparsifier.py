from __future__ import annotations

import pytest
import torch
from PIL import Image

from slimvl.config import SparsificationConfig
from slimvl.models.loader import LoadedModel
from slimvl.models.steps import DecoderSequence, build_sequence, encode_images
from slimvl.pipeline import Pipeline
from slimvl.sparsify.sparsifier import AttentionSparsifier, TokenSparsifier, make_sparsifier

QUESTION = "Which shape is red?"


@pytest.fixture(scope="module")
def sequence(small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image) -> DecoderSequence:
    """Two images (non-square 160 tokens, then square 196) and a question."""
    inputs = small_model.preprocessor([tall_image, square_image], QUESTION)
    with torch.inference_mode():
        return build_sequence(small_model.model, inputs, encode_images(small_model.model, inputs))


def _sparsifier(loaded: LoadedModel, **fields: object) -> TokenSparsifier | AttentionSparsifier:
    config = SparsificationConfig(**fields)
    return make_sparsifier(loaded.model, config, loaded.preprocessor.tokenizer.all_special_ids)


def test_ratio_zero_is_token_identical_in_the_pipeline(
    small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    images = [tall_image, square_image]
    plain = Pipeline(small_model)(images, QUESTION, max_new_tokens=6, ignore_eos=True)
    for scorer in ("text_guided", "attention"):
        sparsifier = _sparsifier(small_model, sparsity_ratio=0, scorer=scorer)
        answer = Pipeline(small_model, sparsifier)(images, QUESTION, max_new_tokens=6, ignore_eos=True)
        assert answer.token_ids == plain.token_ids
        assert answer.metrics.visual_tokens_kept == answer.metrics.visual_tokens == 356


def test_ratio_zero_returns_the_sequence_itself(small_model: LoadedModel, sequence: DecoderSequence) -> None:
    assert _sparsifier(small_model, sparsity_ratio=0).after_vision(sequence) is sequence


@pytest.mark.parametrize("method", ["top_k", "random", "grid"])
def test_kept_tokens_keep_their_positions_and_rows(
    small_model: LoadedModel, sequence: DecoderSequence, method: str
) -> None:
    sparsifier = _sparsifier(small_model, sparsity_ratio=0.6, sparsity_method=method, scorer="text_guided")
    mask = sparsifier.keep_mask(sequence)
    kept = sparsifier.after_vision(sequence)
    visual = sequence.visual_mask[0]
    config = sparsifier.config

    assert kept.tokens_per_image == [config.tokens_to_keep(n) for n in sequence.tokens_per_image] == [64, 78]
    assert mask[~visual].all()  # text is never dropped
    assert kept.length == sequence.length - (356 - 142)
    # Each kept row is the original row, in the original order, at its original MRoPE position.
    original = mask.nonzero().flatten()
    assert torch.equal(kept.input_ids[0], sequence.input_ids[0, original])
    assert torch.equal(kept.inputs_embeds[0], sequence.inputs_embeds[0, original])
    assert torch.equal(kept.position_ids, sequence.position_ids[:, :, original])
    assert kept.next_position == sequence.next_position
    # DeepStack rows and the visual mask shrink by the same rows.
    visual_kept = mask[visual]
    assert int(kept.visual_mask.sum()) == int(visual_kept.sum()) == 142
    assert torch.equal(kept.visual_mask[0], visual[original])
    assert len(kept.deepstack) == len(sequence.deepstack) == 3
    for small, full in zip(kept.deepstack, sequence.deepstack, strict=True):
        assert torch.equal(small, full[visual_kept])


def test_kept_positions_match_the_full_sequence_by_content(
    small_model: LoadedModel, sequence: DecoderSequence
) -> None:
    """Without the mask: find each kept visual token in the full sequence by its embedding."""
    kept = _sparsifier(small_model, sparsity_ratio=0.6, scorer="text_guided").after_vision(sequence)
    full_rows = sequence.inputs_embeds[0][sequence.visual_mask[0]]
    full_positions = sequence.position_ids[:, 0][:, sequence.visual_mask[0]]
    rows = kept.inputs_embeds[0][kept.visual_mask[0]]
    where = (rows[:, None] == full_rows[None]).all(-1).float().argmax(dim=1)
    assert torch.equal(full_rows[where], rows)
    assert torch.equal(kept.position_ids[:, 0][:, kept.visual_mask[0]], full_positions[:, where])
    assert bool((where.diff() > 0).all())  # original order


def test_pipeline_with_sparsification(
    small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    sparsifier = _sparsifier(small_model, sparsity_ratio=0.6)
    answer = Pipeline(small_model, sparsifier)([tall_image, square_image], QUESTION, max_new_tokens=4)
    assert answer.metrics.visual_tokens == 356 and answer.metrics.visual_tokens_kept == 142


@pytest.mark.parametrize("scorer", ["text_guided", "attention"])
def test_the_sparsify_stage_times_each_scorers_work(
    small_model: LoadedModel, square_image: Image.Image, scorer: str
) -> None:
    """Whether the scorer runs before the decoder or inside its prefill, its time is the sparsify stage's,
    and the stages still add up to no more than the request's wall time."""
    sparsifier = _sparsifier(small_model, sparsity_ratio=0.6, scorer=scorer)
    plain = Pipeline(small_model)([square_image], QUESTION, max_new_tokens=2).metrics.stages_ms
    answer = Pipeline(small_model, sparsifier)([square_image], QUESTION, max_new_tokens=2)
    stages = answer.metrics.stages_ms
    assert stages["sparsify"] > 3 * plain["sparsify"]
    assert sum(stages.values()) <= answer.metrics.wall_s * 1e3 + 1e-6


def test_random_is_reproducible_across_requests(small_model: LoadedModel, sequence: DecoderSequence) -> None:
    masks = [
        _sparsifier(small_model, sparsity_method="random", seed=s).keep_mask(sequence) for s in (3, 3, 4)
    ]
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_make_sparsifier_routes_by_scorer(small_model: LoadedModel) -> None:
    assert isinstance(_sparsifier(small_model, scorer="attention"), AttentionSparsifier)
    assert isinstance(_sparsifier(small_model, scorer="attention", sparsity_method="grid"), TokenSparsifier)
    assert isinstance(_sparsifier(small_model, scorer="attention", sparsity_ratio=0), TokenSparsifier)
    assert isinstance(_sparsifier(small_model, scorer="text_guided"), TokenSparsifier)
    assert isinstance(_sparsifier(small_model), AttentionSparsifier)  # the default scorer
    with pytest.raises(ValueError, match="score_layer"):
        _sparsifier(small_model, scorer="attention", score_layer=4)  # the small model has 4 layers
