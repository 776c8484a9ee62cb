"""Visual tokens dropped inside the vision encoder, so that most of the vision tower runs on kept tokens.

Qwen3-VL's vision tower runs every patch through all its blocks, and its DeepStack mergers read the
hidden states after blocks `deepstack_visual_indexes`. `encode_images_keeping` runs the tower as
`Qwen3VLVisionModel.forward` does up to the first of those blocks, lets `choose` pick the merged tokens
to keep from that block's DeepStack features, then runs the remaining blocks, the later DeepStack
mergers and the final merger on the kept tokens' patches only (a merged token is 2x2 patches that sit
next to each other in the patch sequence, so whole tokens are kept or dropped). Each image stays its
own attention segment; kept patches keep their 2-D rotary positions.

Only the kept tokens' rows come back, with `VisualFeatures.kept` marking which tokens they are, so that
`build_sequence` places them at their positions in the full sequence (MRoPE positions are those of the
whole prompt) and leaves the dropped ones out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import Qwen3VLForConditionalGeneration
from transformers.utils.generic import get_max_seqlen
from transformers.vision_utils import (
    get_vision_attention_seqlens,
    get_vision_interpolation_indices_and_weights,
    get_vision_position_ids,
)

from slimvl.models.preprocess import ModelInputs
from slimvl.models.steps import VisualFeatures

# (first DeepStack features (Nv, D), tokens per image) -> keep mask (Nv,) over the merged tokens
TokenChooser = Callable[[torch.Tensor, list[int]], torch.Tensor]


def encode_images_keeping(
    model: Qwen3VLForConditionalGeneration, inputs: ModelInputs, choose: TokenChooser
) -> VisualFeatures | None:
    """The vision encoder's output with only the tokens `choose` keeps computed after the first DeepStack
    block (see the module docstring); a model without DeepStack layers keeps every token."""
    if inputs.pixel_values is None:
        return None
    visual = model.model.visual
    grid_thw = inputs.image_grid_thw
    unit = visual.spatial_merge_size**2
    per_image = (grid_thw.prod(-1) // unit).tolist()
    taps = list(visual.deepstack_visual_indexes)
    choose_after = taps[0] if taps else None

    indices, weights = get_vision_interpolation_indices_and_weights(
        grid_thw,
        num_grid_per_side=visual.num_grid_per_side,
        mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners,
        spatial_merge_size=visual.spatial_merge_size,
    )
    cu_seqlens, max_seqlen = get_vision_attention_seqlens(grid_thw, visual.config)
    hidden = visual.patch_embed(inputs.pixel_values.to(visual.dtype))
    hidden = hidden + (visual.pos_embed(indices) * weights[:, :, None]).sum(1).to(hidden.dtype)
    cos, sin = visual.rotary_pos_emb(hidden, get_vision_position_ids(grid_thw, visual.spatial_merge_size))
    hidden = hidden.reshape(hidden.shape[0], -1)

    kept: torch.Tensor | None = None
    deepstack: list[torch.Tensor] = []
    for i, block in enumerate(visual.blocks):
        hidden = block(hidden, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, position_embeddings=(cos, sin))
        if i in taps:
            deepstack.append(visual.deepstack_merger_list[taps.index(i)](hidden))
        if i == choose_after:
            kept = _checked(choose(deepstack[0], per_image), per_image)
            patches = kept.repeat_interleave(unit)
            hidden, cos, sin = hidden[patches], cos[patches], sin[patches]
            counts = torch.stack([part.sum() for part in kept.split(per_image)]) * unit
            cu_seqlens = F.pad(counts.cumsum(0, dtype=torch.int32), (1, 0))
            max_seqlen = get_max_seqlen(cu_seqlens, visual.config)
    embeds = visual.merger(hidden)
    if kept is None:
        return VisualFeatures(embeds, deepstack, per_image)
    # the first DeepStack feature was taken before the choice, for every token
    return VisualFeatures(embeds, [deepstack[0][kept], *deepstack[1:]], per_image, kept)


def _checked(kept: torch.Tensor, per_image: list[int]) -> torch.Tensor:
    """`kept` as a bool mask, if it has one entry per token and keeps at least one token of every image."""
    if kept.shape != (sum(per_image),) or any(int(part.sum()) == 0 for part in kept.bool().split(per_image)):
        raise ValueError(
            f"keep mask: got shape {tuple(kept.shape)} keeping {int(kept.sum())}, allowed: one entry per "
            f"visual token ({sum(per_image)}) keeping at least one token of every image"
        )
    return kept.to(torch.bool)
