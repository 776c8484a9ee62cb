"""The stages of one Qwen3-VL request as plain functions over transformers' modules.

transformers' `Qwen3VLModel.forward` fuses vision, token merging, MRoPE positions and the decoder in
one call; slimvl splits them so that optimizations can act in between (the visual token sparsifier
works on a `DecoderSequence` after the vision encoder and before the prefill).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from transformers import DynamicCache, Qwen3VLForConditionalGeneration

from slimvl.models.preprocess import ModelInputs


@dataclass
class VisualFeatures:
    """Vision encoder output: merged visual tokens and the DeepStack features, one row per token."""

    embeds: torch.Tensor  # (Nv, D), all images concatenated; (kept, D) where `kept` is set
    deepstack: list[torch.Tensor]  # one per DeepStack layer, with the same rows as `embeds`
    tokens_per_image: list[int]  # of the whole prompt
    # (Nv,) bool: the tokens an encoder that drops some computed (the rows above); None: all of them
    kept: torch.Tensor | None = None


@dataclass
class DecoderSequence:
    """Everything the decoder prefill needs; rows can be removed consistently (see `keep`)."""

    input_ids: torch.Tensor  # (1, L)
    inputs_embeds: torch.Tensor  # (1, L, D)
    position_ids: torch.Tensor  # (3, 1, L): MRoPE (t, h, w) positions
    visual_mask: torch.Tensor  # (1, L) bool
    deepstack: list[torch.Tensor]  # one (visual tokens, D) per DeepStack layer
    tokens_per_image: list[int]
    next_position: int  # where decoding continues: max position + 1 of the full sequence

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    def keep(self, keep_mask: torch.Tensor) -> DecoderSequence:
        """Drop the sequence positions where `keep_mask` (L,) is False.

        Kept tokens keep their original MRoPE positions, the DeepStack rows and the visual mask lose the
        same rows, and decoding continues where the full sequence would have (`next_position`).
        """
        keep_mask = keep_mask.to(torch.bool)
        visual = self.visual_mask[0]
        visual_keep = keep_mask[visual]
        counts, start = [], 0
        for n in self.tokens_per_image:
            counts.append(int(visual_keep[start : start + n].sum()))
            start += n
        return replace(
            self,
            input_ids=self.input_ids[:, keep_mask],
            inputs_embeds=self.inputs_embeds[:, keep_mask],
            position_ids=self.position_ids[:, :, keep_mask],
            visual_mask=self.visual_mask[:, keep_mask],
            deepstack=[d[visual_keep] for d in self.deepstack],
            tokens_per_image=counts,
        )


def encode_images(model: Qwen3VLForConditionalGeneration, inputs: ModelInputs) -> VisualFeatures | None:
    if inputs.pixel_values is None:
        return None
    visual = model.model.visual
    out = visual(inputs.pixel_values.to(visual.dtype), grid_thw=inputs.image_grid_thw, return_dict=True)
    per_image = (inputs.image_grid_thw.prod(-1) // visual.spatial_merge_size**2).tolist()
    return VisualFeatures(out.pooler_output, list(out.deepstack_features), per_image)


def build_sequence(
    model: Qwen3VLForConditionalGeneration, inputs: ModelInputs, visual: VisualFeatures | None
) -> DecoderSequence:
    """Embed the tokens, put the visual tokens in place and compute the 3-D positions; visual tokens the
    encoder dropped (not in `visual.kept`) then leave the sequence, the kept ones keeping their positions."""
    embed = model.get_input_embeddings()
    inputs_embeds = embed(inputs.input_ids)
    visual_mask = inputs.mm_token_type_ids.to(torch.bool)
    computed = visual_mask
    if visual is not None and visual.kept is not None:
        computed = visual_mask.clone()
        computed[visual_mask] = visual.kept
    if visual is not None:
        inputs_embeds = inputs_embeds.clone()
        inputs_embeds[computed] = visual.embeds.to(inputs_embeds.dtype)
        position_ids, _ = model.model.get_rope_index(
            inputs.input_ids, mm_token_type_ids=inputs.mm_token_type_ids, image_grid_thw=inputs.image_grid_thw
        )
    else:
        position_ids = torch.arange(inputs.input_ids.shape[1]).view(1, 1, -1).expand(3, 1, -1)
    seq = DecoderSequence(
        input_ids=inputs.input_ids,
        inputs_embeds=inputs_embeds,
        position_ids=position_ids,
        visual_mask=visual_mask,
        deepstack=visual.deepstack if visual is not None and visual.kept is None else [],
        tokens_per_image=visual.tokens_per_image if visual is not None else [],
        next_position=int(position_ids.max()) + 1,
    )
    if visual is None or visual.kept is None:
        return seq
    keep = torch.ones(seq.length, dtype=torch.bool)
    keep[visual_mask[0]] = visual.kept
    return replace(seq.keep(keep), deepstack=visual.deepstack)


def prefill(
    model: Qwen3VLForConditionalGeneration, seq: DecoderSequence, cache: DynamicCache | None = None
) -> tuple[torch.Tensor, DynamicCache]:
    """Run the decoder over the whole sequence; return the last position's logits and the KV cache
    (`cache` if given, e.g. `StaticKVCache.prefill_cache()`, else a new `DynamicCache`)."""
    text_model = model.model.language_model
    if cache is None:
        cache = DynamicCache(config=text_model.config)
    has_visual = bool(seq.deepstack) and bool(seq.visual_mask.any())
    out = text_model(
        inputs_embeds=seq.inputs_embeds,
        position_ids=seq.position_ids,
        cache=cache,
        use_cache=True,
        visual_pos_masks=seq.visual_mask if has_visual else None,
        deepstack_visual_embeds=seq.deepstack if has_visual else None,
    )
    return model.lm_head(out.last_hidden_state[:, -1:]), cache


def decode_step(
    model: Qwen3VLForConditionalGeneration, token: torch.Tensor, position: int, cache: DynamicCache
) -> torch.Tensor:
    """One token through the decoder at MRoPE position `position` (all three axes equal for text)."""
    text_model = model.model.language_model
    embeds = text_model.embed_tokens(token.view(1, 1))
    position_ids = torch.full((3, 1, 1), position, dtype=torch.long)
    out = text_model(inputs_embeds=embeds, position_ids=position_ids, cache=cache, use_cache=True)
    return model.lm_head(out.last_hidden_state[:, -1:])
