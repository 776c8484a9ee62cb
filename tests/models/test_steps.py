from __future__ import annotations

import pytest
import torch
from PIL import Image

from slimvl.models.loader import LoadedModel
from slimvl.models.steps import DecoderSequence, build_sequence, encode_images, prefill


@pytest.fixture(scope="module")
def sequence(small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image) -> DecoderSequence:
    """Two images (non-square, then square) and a question."""
    inputs = small_model.preprocessor([tall_image, square_image], "Which shape is red?")
    with torch.inference_mode():
        return build_sequence(small_model.model, inputs, encode_images(small_model.model, inputs))


def test_sequence_layout(sequence: DecoderSequence) -> None:
    assert sequence.tokens_per_image == [160, 196]  # (512/32)*(320/32) and (448/32)**2
    assert int(sequence.visual_mask.sum()) == sum(sequence.tokens_per_image)
    assert all(d.shape[0] == sum(sequence.tokens_per_image) for d in sequence.deepstack)
    assert sequence.next_position == int(sequence.position_ids.max()) + 1


def test_keep_all_is_identity(sequence: DecoderSequence) -> None:
    kept = sequence.keep(torch.ones(sequence.length, dtype=torch.bool))
    for name in ("input_ids", "inputs_embeds", "position_ids", "visual_mask"):
        assert torch.equal(getattr(kept, name), getattr(sequence, name))
    assert all(torch.equal(a, b) for a, b in zip(kept.deepstack, sequence.deepstack, strict=True))
    assert kept.tokens_per_image == sequence.tokens_per_image
    assert kept.next_position == sequence.next_position


def test_dropping_visual_tokens(sequence: DecoderSequence) -> None:
    visual_index = sequence.visual_mask[0].nonzero().flatten()
    first, second = sequence.tokens_per_image
    dropped = torch.cat([visual_index[:first][::3], visual_index[first:][:50]])  # some of each image
    keep_mask = torch.ones(sequence.length, dtype=torch.bool)
    keep_mask[dropped] = False

    kept = sequence.keep(keep_mask)

    original = keep_mask.nonzero().flatten()  # kept position j came from position original[j]
    assert kept.length == sequence.length - len(dropped)
    assert torch.equal(kept.input_ids[0], sequence.input_ids[0, original])
    assert torch.equal(kept.inputs_embeds[0], sequence.inputs_embeds[0, original])
    assert torch.equal(kept.position_ids, sequence.position_ids[:, :, original])
    assert torch.equal(kept.position_ids[:, :, -1], sequence.position_ids[:, :, -1])  # text after images
    assert kept.tokens_per_image == [first - len(visual_index[:first][::3]), second - 50]
    visual_kept = keep_mask[sequence.visual_mask[0]]
    assert int(kept.visual_mask.sum()) == sum(kept.tokens_per_image) == int(visual_kept.sum())
    for small, full in zip(kept.deepstack, sequence.deepstack, strict=True):
        assert torch.equal(small, full[visual_kept])
    assert kept.next_position == sequence.next_position


def test_prefill_runs_on_a_shortened_sequence(small_model: LoadedModel, sequence: DecoderSequence) -> None:
    keep_mask = torch.ones(sequence.length, dtype=torch.bool)
    keep_mask[sequence.visual_mask[0].nonzero().flatten()[::2]] = False
    with torch.inference_mode():
        logits, cache = prefill(small_model.model, sequence.keep(keep_mask))
    assert logits.shape == (1, 1, small_model.model.config.text_config.vocab_size)
    assert cache.get_seq_length() == int(keep_mask.sum())
