from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from slimvl.config import SparsificationConfig
from slimvl.models.loader import LoadedModel, load_model
from slimvl.models.steps import DecoderSequence, build_sequence, encode_images
from slimvl.sparsify.scorers import attention_scores, question_mask, text_guided_scores
from slimvl.sparsify.sparsifier import TokenSparsifier


def _sequence(loaded: LoadedModel, images: list[Image.Image], question: str) -> DecoderSequence:
    inputs = loaded.preprocessor(images, question)
    with torch.inference_mode():
        return build_sequence(loaded.model, inputs, encode_images(loaded.model, inputs))


def _special(loaded: LoadedModel) -> list[int]:
    return loaded.preprocessor.tokenizer.all_special_ids


def test_question_mask_is_the_question_text(small_model: LoadedModel, tall_image: Image.Image) -> None:
    seq = _sequence(small_model, [tall_image], "Which shape is red?")
    mask = question_mask(seq, _special(small_model))
    assert small_model.preprocessor.decode(seq.input_ids[0, mask].tolist()) == "Which shape is red?"
    assert int(mask.nonzero().min()) > int(seq.visual_mask[0].nonzero().max())
    # Without special ids the whole text after the last image counts.
    tail = question_mask(seq)
    assert tail.sum() > mask.sum() and tail[-1] and not tail[seq.visual_mask[0]].any()


def _synthetic_sequence(
    embed: torch.nn.Embedding, question_ids: list[int], visual_ids: list[int]
) -> DecoderSequence:
    """Visual tokens that are noisy copies of given token embeddings, then a question."""
    visual = embed.weight[visual_ids] + 0.05 * torch.randn(len(visual_ids), embed.embedding_dim)
    ids = torch.tensor([[0] * len(visual_ids) + question_ids])
    embeds = torch.cat([visual, embed.weight[question_ids]]).unsqueeze(0)
    length = ids.shape[1]
    return DecoderSequence(
        input_ids=ids,
        inputs_embeds=embeds,
        position_ids=torch.arange(length).view(1, 1, -1).expand(3, 1, -1),
        visual_mask=torch.arange(length).view(1, -1) < len(visual_ids),
        deepstack=[],
        tokens_per_image=[len(visual_ids)],
        next_position=length,
    )


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_text_guided_ranks_the_token_that_matches_the_question(small_model: LoadedModel, reduce: str) -> None:
    torch.manual_seed(0)
    embed = small_model.model.get_input_embeddings()
    visual_ids = list(range(100, 116))
    with torch.inference_mode():
        for target in (103, 111):
            seq = _synthetic_sequence(embed, [target], visual_ids)
            scores = text_guided_scores(seq, question_mask(seq), reduce)
            assert int(scores.argmax()) == visual_ids.index(target)


def test_text_guided_scores_depend_on_the_question(
    small_model: LoadedModel, square_image: Image.Image
) -> None:
    sparsifier = TokenSparsifier(SparsificationConfig(sparsity_ratio=0.6), _special(small_model))
    masks = []
    for question in ("What color is the circle?", "How many squares are on the left?"):
        seq = _sequence(small_model, [square_image], question)
        masks.append(sparsifier.keep_mask(seq)[seq.visual_mask[0]])  # over the same 196 visual tokens
    assert int(masks[0].sum()) == int(masks[1].sum()) == 78
    assert not torch.equal(masks[0], masks[1])


def test_text_guided_rejects_unknown_reduction(small_model: LoadedModel, square_image: Image.Image) -> None:
    seq = _sequence(small_model, [square_image], "Which?")
    with pytest.raises(ValueError, match="reduce"):
        text_guided_scores(seq, question_mask(seq), "median")


def test_attention_scores_equal_the_layers_own_attention(
    small_checkpoint: Path, square_image: Image.Image, tall_image: Image.Image
) -> None:
    """The scorer's scores come from the eager attention weights of the real layer (DeepStack included)."""
    loaded = load_model(str(small_checkpoint))
    loaded.model.set_attn_implementation("eager")
    text = loaded.model.model.language_model
    seq = _sequence(loaded, [tall_image, square_image], "Which shape is red?")
    layer = 2
    captured: dict[str, torch.Tensor] = {}
    hook = text.layers[layer].register_forward_pre_hook(lambda _m, args: captured.update(x=args[0]))
    with torch.inference_mode():
        out = text(
            inputs_embeds=seq.inputs_embeds,
            position_ids=seq.position_ids,
            visual_pos_masks=seq.visual_mask,
            deepstack_visual_embeds=seq.deepstack,
            output_attentions=True,
        )
        hook.remove()
        question, visual = question_mask(seq, _special(loaded)), seq.visual_mask[0]
        position_embeddings = text.rotary_emb(seq.inputs_embeds, seq.position_ids)
        scores = attention_scores(text.layers[layer], position_embeddings, captured["x"], question, visual)
    # (heads, question tokens, visual tokens): mean over heads, then the most any question token pays
    reference = out.attentions[layer][0][:, question][..., visual].mean(dim=0).max(dim=0).values
    assert scores.shape == (sum(seq.tokens_per_image),)
    torch.testing.assert_close(scores, reference, rtol=1e-5, atol=1e-7)
