"""Pruning inside the vision encoder: exact when nothing is pruned, and the later blocks really run on the
kept tokens only, image by image, with the sequence keeping the unpruned positions."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from slimvl.models.loader import LoadedModel
from slimvl.models.steps import build_sequence, encode_images
from slimvl.sparsify.vision import encode_images_keeping

QUESTION = "Which shape is red?"


def _every_third(first_deepstack: torch.Tensor, tokens_per_image: list[int]) -> torch.Tensor:
    return torch.arange(first_deepstack.shape[0]) % 3 == 0


def test_keeping_every_token_is_the_plain_encoder_bit_for_bit(
    small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    inputs = small_model.preprocessor([tall_image, square_image], QUESTION)
    with torch.inference_mode():
        plain = encode_images(small_model.model, inputs)
        pruned = encode_images_keeping(
            small_model.model, inputs, lambda f, _: torch.ones(f.shape[0], dtype=torch.bool)
        )
    assert torch.equal(pruned.embeds, plain.embeds)
    assert len(pruned.deepstack) == len(plain.deepstack) == 3
    assert all(torch.equal(a, b) for a, b in zip(pruned.deepstack, plain.deepstack, strict=True))
    assert pruned.tokens_per_image == plain.tokens_per_image and bool(pruned.kept.all())


def test_blocks_after_the_first_deepstack_layer_see_only_the_kept_patches(
    small_model: LoadedModel, square_image: Image.Image
) -> None:
    visual = small_model.model.model.visual
    assert list(visual.deepstack_visual_indexes)[0] == 0
    rows: list[int] = []
    hooks = [
        block.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
        for block in visual.blocks
    ]
    inputs = small_model.preprocessor([square_image], QUESTION)
    try:
        with torch.inference_mode():
            plain = encode_images(small_model.model, inputs)
            rows.clear()
            pruned = encode_images_keeping(small_model.model, inputs, _every_third)
    finally:
        for hook in hooks:
            hook.remove()
    kept = pruned.kept
    n = plain.embeds.shape[0]
    assert rows == [4 * n] + [4 * int(kept.sum())] * (len(visual.blocks) - 1)
    # only the kept tokens' rows come back; the first DeepStack feature was taken before the choice
    assert all(f.shape[0] == int(kept.sum()) for f in (pruned.embeds, *pruned.deepstack))
    assert torch.equal(pruned.deepstack[0], plain.deepstack[0][kept])
    assert not torch.allclose(pruned.embeds, plain.embeds[kept])  # they attended to fewer patches


def test_each_image_stays_its_own_attention_segment(
    small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    # Two images pruned together give what each gives pruned alone: no attention across images.
    images = [tall_image, square_image]
    with torch.inference_mode():
        together = encode_images_keeping(
            small_model.model, small_model.preprocessor(images, QUESTION), _every_third
        )
        alone = []
        start = 0
        for image, n in zip(images, together.tokens_per_image, strict=True):
            keep = together.kept[start : start + n]
            inputs = small_model.preprocessor([image], QUESTION)
            alone.append(encode_images_keeping(small_model.model, inputs, lambda f, _, k=keep: k))
            start += n
    torch.testing.assert_close(together.embeds, torch.cat([a.embeds for a in alone]), atol=1e-5, rtol=1e-5)
    for i, features in enumerate(together.deepstack):
        torch.testing.assert_close(features, torch.cat([a.deepstack[i] for a in alone]), atol=1e-5, rtol=1e-5)


def test_the_sequence_holds_the_kept_tokens_at_their_unpruned_positions(
    small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    inputs = small_model.preprocessor([tall_image, square_image], QUESTION)
    model = small_model.model
    with torch.inference_mode():
        full = build_sequence(model, inputs, encode_images(model, inputs))
        pruned_features = encode_images_keeping(model, inputs, _every_third)
        seq = build_sequence(model, inputs, pruned_features)
    keep = torch.ones(full.length, dtype=torch.bool)
    keep[full.visual_mask[0]] = pruned_features.kept
    expected = full.keep(keep)
    assert seq.length == expected.length < full.length
    assert torch.equal(seq.position_ids, expected.position_ids)
    assert torch.equal(seq.input_ids, expected.input_ids) and torch.equal(
        seq.visual_mask, expected.visual_mask
    )
    assert seq.tokens_per_image == expected.tokens_per_image
    assert seq.next_position == full.next_position
    assert torch.equal(seq.inputs_embeds[0, seq.visual_mask[0]], pruned_features.embeds)
    for mine, features in zip(seq.deepstack, pruned_features.deepstack, strict=True):
        assert torch.equal(mine, features)


def test_a_chooser_that_keeps_nothing_of_an_image_is_not_silently_accepted(
    small_model: LoadedModel, square_image: Image.Image
) -> None:
    inputs = small_model.preprocessor([square_image], QUESTION)
    with pytest.raises(ValueError, match="keep"):
        encode_images_keeping(
            small_model.model, inputs, lambda f, _: torch.zeros(f.shape[0], dtype=torch.bool)
        )
