"""A prefill split at decoder layer `score_layer`: the layers before it see every visual token, the
attention in that layer picks the visual tokens to keep, and the layers from it on see only those.

Dropped positions also leave the KV cache of the early layers, so every layer's cache holds exactly
the kept sequence and decoding continues at `seq.next_position` like after a plain prefill.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import nullcontext

import torch
from transformers import DynamicCache, Qwen3VLForConditionalGeneration
from transformers.masking_utils import create_causal_mask

from slimvl.config import SparsificationConfig
from slimvl.models.decode import StaticKVCache
from slimvl.models.hooks import Stage
from slimvl.models.steps import DecoderSequence
from slimvl.sparsify.scorers import attention_scores, question_mask
from slimvl.sparsify.select import sequence_keep_mask


def run_layers(
    model: Qwen3VLForConditionalGeneration,
    hidden: torch.Tensor,
    seq: DecoderSequence,
    cache: DynamicCache,
    layers: range,
) -> torch.Tensor:
    """Decoder `layers` (consecutive) over `hidden` at `seq`'s positions, with its DeepStack additions.

    Does what `Qwen3VLTextModel.forward` does for those layers; the causal mask is sized against the
    cache of the first layer run.
    """
    if not layers:
        return hidden
    text = model.model.language_model
    mask = create_causal_mask(
        config=text.config, inputs_embeds=hidden, attention_mask=None, cache=cache, layer_idx=layers.start
    )
    position_embeddings = text.rotary_emb(hidden, seq.position_ids)
    deepstack = seq.deepstack if bool(seq.visual_mask.any()) else []
    for i in layers:
        hidden = text.layers[i](
            hidden, attention_mask=mask, cache=cache, position_embeddings=position_embeddings
        )
        if i < len(deepstack):
            hidden = text._deepstack_process(hidden, seq.visual_mask, deepstack[i])
    return hidden


def question_attention(
    model: Qwen3VLForConditionalGeneration,
    seq: DecoderSequence,
    hidden: torch.Tensor,
    question: torch.Tensor,
    layer: int,
) -> torch.Tensor:
    """(Nv,) the attention scorer's scores in decoder `layer`, whose input `hidden` is (the layers
    before it run by `run_layers`); `question` (L,) marks the question's rows."""
    text = model.model.language_model
    position_embeddings = text.rotary_emb(hidden, seq.position_ids)
    return attention_scores(text.layers[layer], position_embeddings, hidden, question, seq.visual_mask[0])


def drop_from_cache(cache: DynamicCache, keep_mask: torch.Tensor, layers: range) -> None:
    """Drop the sequence positions where `keep_mask` (L,) is False from the keys/values of `layers`
    (`BufferedLayer`s, compacted in their buffers)."""
    for i in layers:
        cache.layers[i].keep(keep_mask)


def prefill_keeping_attended(
    model: Qwen3VLForConditionalGeneration,
    seq: DecoderSequence,
    config: SparsificationConfig,
    special_ids: Collection[int] = (),
    cache: DynamicCache | None = None,
    stage: Stage = lambda _name: nullcontext(),
) -> tuple[torch.Tensor, DynamicCache, DecoderSequence]:
    """Prefill that keeps the visual tokens the question attends to most in layer `config.score_layer`.

    Returns the last position's logits, the KV cache (every layer holds the kept sequence) and the
    kept sequence (original MRoPE positions, DeepStack rows and visual mask cut alike).
    `special_ids` delimit the question (see `question_mask`). `cache`: a `StaticKVCache.prefill_cache()`
    of at least the full sequence's length; by default one of exactly that length. The scoring and the
    cut are timed as `stage("sparsify")`.
    """
    text = model.model.language_model
    n_layers = len(text.layers)
    split = config.score_layer
    if split >= n_layers:
        raise ValueError(
            f"SparsificationConfig.score_layer: got {split}, allowed: an int < {n_layers} (decoder layers)"
        )
    if cache is None:
        cache = StaticKVCache.allocate(text, seq.length, seq.inputs_embeds.dtype).prefill_cache()
    hidden = run_layers(model, seq.inputs_embeds, seq, cache, range(0, split))

    with stage("sparsify"):
        scores = None
        if config.sparsity_method == "top_k":
            scores = question_attention(model, seq, hidden, question_mask(seq, special_ids), split)
        keep_mask = sequence_keep_mask(config, seq, scores)
        kept = seq.keep(keep_mask)
        drop_from_cache(cache, keep_mask, range(0, split))
        hidden = hidden[:, keep_mask]
    hidden = run_layers(model, hidden, kept, cache, range(split, n_layers))
    return model.lm_head(text.norm(hidden[:, -1:])), cache, kept
