from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from PIL import Image

from slimvl.config import SparsificationConfig
from slimvl.models.decode import StaticKVCache
from slimvl.models.loader import LoadedModel
from slimvl.models.steps import DecoderSequence, build_sequence, decode_step, encode_images, prefill
from slimvl.sparsify.prefill import prefill_keeping_attended
from slimvl.sparsify.sparsifier import AttentionSparsifier


@pytest.fixture(scope="module")
def sequence(small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image) -> DecoderSequence:
    inputs = small_model.preprocessor([tall_image, square_image], "Which shape is red?")
    with torch.inference_mode():
        return build_sequence(small_model.model, inputs, encode_images(small_model.model, inputs))


def _run(loaded: LoadedModel, seq: DecoderSequence, **fields: object):
    config = SparsificationConfig(scorer="attention", **fields)
    with torch.inference_mode():
        return prefill_keeping_attended(
            loaded.model, seq, config, loaded.preprocessor.tokenizer.all_special_ids
        )


@pytest.mark.parametrize("score_layer", [0, 2, 3])
def test_keeping_everything_equals_the_plain_prefill(
    small_model: LoadedModel, sequence: DecoderSequence, score_layer: int
) -> None:
    with torch.inference_mode():
        reference, reference_cache = prefill(small_model.model, sequence)
    logits, cache, kept = _run(small_model, sequence, sparsity_ratio=0, score_layer=score_layer)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    assert kept.length == sequence.length
    for ours, theirs in zip(cache.layers, reference_cache.layers, strict=True):
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("score_layer", [0, 1, 2, 3])
def test_pruned_cache_holds_the_kept_sequence(
    small_model: LoadedModel, sequence: DecoderSequence, score_layer: int
) -> None:
    logits, cache, kept = _run(small_model, sequence, score_layer=score_layer)
    assert kept.tokens_per_image == [64, 78]
    assert kept.length == sequence.length - (356 - 142)
    assert [layer.keys.shape[2] for layer in cache.layers] == [kept.length] * 4
    assert [layer.values.shape[2] for layer in cache.layers] == [kept.length] * 4
    assert logits.shape == (1, 1, small_model.model.config.text_config.vocab_size)
    assert kept.next_position == sequence.next_position
    assert all(d.shape[0] == 142 for d in kept.deepstack)


def test_layers_before_the_split_saw_every_token(small_model: LoadedModel, sequence: DecoderSequence) -> None:
    """Early layers' cache = the full prefill's cache at the kept rows; a split at 0 = a plain prefill
    of the kept sequence."""
    with torch.inference_mode():
        _, full_cache = prefill(small_model.model, sequence)
    _, cache, kept = _run(small_model, sequence, score_layer=2)
    original = _keep_mask(sequence, kept)
    # Layer 2's keys/values are per-row functions of its input, which layers 0-1 computed in full context.
    for i in (0, 1, 2):
        torch.testing.assert_close(cache.layers[i].keys, full_cache.layers[i].keys[:, :, original])
        torch.testing.assert_close(cache.layers[i].values, full_cache.layers[i].values[:, :, original])
    assert not torch.allclose(cache.layers[3].keys, full_cache.layers[3].keys[:, :, original])

    logits, _, kept0 = _run(small_model, sequence, score_layer=0)
    with torch.inference_mode():
        reference, _ = prefill(small_model.model, kept0)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def _keep_mask(full: DecoderSequence, kept: DecoderSequence) -> torch.Tensor:
    """Which rows of `full` survive in `kept`, matched by their (unique) embedding rows."""
    rows = full.inputs_embeds[0]
    matches = (rows[:, None] == kept.inputs_embeds[0][None]).all(-1)
    return matches.any(dim=1)


def test_decoding_continues_after_the_pruned_prefill(
    small_model: LoadedModel, sequence: DecoderSequence
) -> None:
    sparsifier = AttentionSparsifier(SparsificationConfig(scorer="attention"))
    assert sparsifier.after_vision(sequence) is sequence
    cache = StaticKVCache.allocate(small_model.model.model.language_model, sequence.length, torch.float32)
    with torch.inference_mode():
        logits, cache, kept = sparsifier.prefill(
            small_model.model, sequence, cache.prefill_cache(), lambda _stage: nullcontext()
        )
        step = decode_step(small_model.model, logits[0, -1].argmax(), kept.next_position, cache)
    assert step.shape == logits.shape
    assert cache.get_seq_length() == kept.length + 1


def test_attention_selection_depends_on_the_question(
    small_model: LoadedModel, square_image: Image.Image
) -> None:
    kept_positions = []
    for question in ("What color is the circle?", "How many squares are on the left?"):
        inputs = small_model.preprocessor([square_image], question)
        with torch.inference_mode():
            seq = build_sequence(small_model.model, inputs, encode_images(small_model.model, inputs))
        _, _, kept = _run(small_model, seq, score_layer=1)
        kept_positions.append(kept.position_ids[:, 0][:, kept.visual_mask[0]])
    assert kept_positions[0].shape == kept_positions[1].shape == (3, 78)
    assert not torch.equal(kept_positions[0], kept_positions[1])
