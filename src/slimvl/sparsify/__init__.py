"""Visual token sparsification for Qwen3-VL: score, select, compact (positions and DeepStack kept right)."""

from slimvl.sparsify.lowres import size_for_tokens, visual_tokens_for_size
from slimvl.sparsify.prefill import prefill_keeping_attended
from slimvl.sparsify.scorers import attention_scores, question_mask, text_guided_scores
from slimvl.sparsify.select import grid_mask, random_mask, select_visual, top_k_mask
from slimvl.sparsify.sparsifier import (
    AttentionSparsifier,
    TokenSparsifier,
    VisionSparsifier,
    make_sparsifier,
)
from slimvl.sparsify.vision import encode_images_keeping

__all__ = [
    "AttentionSparsifier",
    "TokenSparsifier",
    "VisionSparsifier",
    "attention_scores",
    "encode_images_keeping",
    "grid_mask",
    "make_sparsifier",
    "prefill_keeping_attended",
    "question_mask",
    "random_mask",
    "select_visual",
    "size_for_tokens",
    "text_guided_scores",
    "top_k_mask",
    "visual_tokens_for_size",
]
