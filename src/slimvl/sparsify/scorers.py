"""Importance of each visual token for the question asked: one score per visual token, higher = keep.

- `text_guided_scores`: before the decoder, from the similarity of the question's token embeddings
  and the visual tokens (the same embedding space: the vision merger projects into it).
- `attention_scores`: inside decoder layer `score_layer`, the attention the question's tokens pay to
  each visual token (the most any one of them pays it), from that layer's own q/k projections with its
  MRoPE.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb, repeat_kv

from slimvl.models.steps import DecoderSequence


def question_mask(seq: DecoderSequence, special_ids: Collection[int] = ()) -> torch.Tensor:
    """(L,) mask of the question: the text after the last image, without the chat template around it.

    The span starts at the first non-special token after the last visual token and ends before the
    next special token (Qwen's template: `<|vision_end|>` question `<|im_end|>` ...). With no
    `special_ids` the whole text after the last image counts. Never empty: the last token at least.
    """
    return question_rows(seq.input_ids[0], seq.visual_mask[0], special_ids)


def question_rows(
    input_ids: torch.Tensor, visual: torch.Tensor, special_ids: Collection[int] = ()
) -> torch.Tensor:
    """`question_mask` of a prompt's token ids (L,) and visual mask (L,), before any sequence is built."""
    length = int(input_ids.shape[0])
    visual_rows = visual.nonzero().flatten()
    start = int(visual_rows[-1]) + 1 if len(visual_rows) else 0
    special = torch.isin(input_ids, torch.tensor(sorted(special_ids), dtype=input_ids.dtype))
    while start < length and special[start]:
        start += 1
    end = start
    while end < length and not special[end]:
        end += 1
    mask = torch.zeros(length, dtype=torch.bool)
    if end > start:
        mask[start:end] = True
    else:
        mask[-1] = True
    return mask


def text_guided_scores(seq: DecoderSequence, question: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """(Nv,) cosine similarity of each visual token to the question tokens (rows `question`, (L,) bool).

    `reduce="max"`: a visual token counts as much as its best matching question token (a question's
    key word decides); `"mean"`: its average similarity over the question's tokens.
    """
    embeds = seq.inputs_embeds[0].float()
    visual = F.normalize(embeds[seq.visual_mask[0]], dim=-1)
    text = F.normalize(embeds[question], dim=-1)
    similarity = text @ visual.T  # (question tokens, Nv)
    if reduce == "max":
        return similarity.max(dim=0).values
    if reduce == "mean":
        return similarity.mean(dim=0)
    raise ValueError(f"text_guided_scores.reduce: got {reduce!r}, allowed: 'max', 'mean'")


def attention_scores(
    layer: nn.Module,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    hidden: torch.Tensor,
    question: torch.Tensor,
    visual: torch.Tensor,
) -> torch.Tensor:
    """(Nv,) attention of the question's tokens to each visual token in decoder `layer`.

    `hidden` (1, L, D) is the layer's input, `position_embeddings` the (cos, sin) of the sequence's
    MRoPE positions; `question` and `visual` are (L,) masks. The causal softmax runs over all keys as in
    the real layer; the probabilities of the visual keys are averaged over heads, and a visual token
    scores the most any question token pays it: the question's content words ("red", "circles") decide,
    where a mean over its tokens lets the function words ("How many are there") blur them. On
    builtin:tiny that mean dropped every token of an object a count question asks about in 45 of 274
    count questions, the maximum in 6.
    Only the question's queries are projected, so this costs one k projection of the sequence.
    """
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    cos, sin = position_embeddings
    rows = question.nonzero().flatten()
    q = attn.q_norm(attn.q_proj(x[:, rows]).view(1, len(rows), -1, attn.head_dim)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(x).view(1, x.shape[1], -1, attn.head_dim)).transpose(1, 2)
    q, _ = apply_rotary_pos_emb(q, q, cos[:, rows], sin[:, rows])
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    logits = (q @ repeat_kv(k, attn.num_key_value_groups).transpose(2, 3)).float() * attn.scaling
    future = torch.arange(x.shape[1]).view(1, -1) > rows.view(-1, 1)  # (queries, keys)
    probs = logits.masked_fill(future, float("-inf")).softmax(dim=-1)
    return probs[0][..., visual].mean(dim=0).amax(dim=0)
