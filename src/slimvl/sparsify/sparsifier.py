"""The sparsifier the pipeline calls between the vision encoder and the decoder prefill.

Pre-decoder methods (top-k by the text-guided or the distilled scorer, random, grid) compact the
`DecoderSequence` before the prefill. The `attention` scorer needs the decoder itself: its sparsifier
leaves the sequence alone and offers a `prefill` that the pipeline runs instead of the plain one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
from transformers import DynamicCache, Qwen3VLForConditionalGeneration

from slimvl.config import SparsificationConfig
from slimvl.models.steps import DecoderSequence
from slimvl.sparsify.distill import SCORER_MODULE
from slimvl.sparsify.prefill import prefill_with_attention_pruning
from slimvl.sparsify.scorers import question_mask, text_guided_scores
from slimvl.sparsify.select import sequence_keep_mask

# (sequence, question mask) -> one score per visual token, higher = keep
PreDecoderScorer = Callable[[DecoderSequence, torch.Tensor], torch.Tensor]


class TokenSparsifier:
    """Drops visual tokens before the decoder: `config.tokens_to_keep(n)` of each image, ranked by
    `scorer` for `top_k` (by default the text-guided similarity)."""

    def __init__(
        self,
        config: SparsificationConfig,
        special_ids: Collection[int] = (),
        scorer: PreDecoderScorer = text_guided_scores,
    ):
        self.config = config
        self.special_ids = frozenset(special_ids)
        self.scorer = scorer

    def keep_mask(self, seq: DecoderSequence) -> torch.Tensor:
        """(L,) mask of the positions to keep: all text, and the selected visual tokens."""
        scores = None
        if self.config.sparsity_method == "top_k":
            scores = self.scorer(seq, question_mask(seq, self.special_ids))
        return sequence_keep_mask(self.config, seq, scores)

    def __call__(self, seq: DecoderSequence) -> DecoderSequence:
        if self.config.sparsity_ratio == 0 or not bool(seq.visual_mask.any()):
            return seq
        return seq.keep(self.keep_mask(seq))


class AttentionSparsifier:
    """Prunes inside the prefill by the question's attention in decoder layer `config.score_layer`.

    Calling it returns the sequence unchanged; the pipeline must run `prefill` instead of the plain
    prefill. It returns the logits, the cache and the kept sequence (for metrics and decoding).
    """

    def __init__(self, config: SparsificationConfig, special_ids: Collection[int] = ()):
        self.config = config
        self.special_ids = frozenset(special_ids)

    def __call__(self, seq: DecoderSequence) -> DecoderSequence:
        return seq

    def prefill(
        self, model: Qwen3VLForConditionalGeneration, seq: DecoderSequence, cache: DynamicCache | None = None
    ) -> tuple[torch.Tensor, DynamicCache, DecoderSequence]:
        return prefill_with_attention_pruning(model, seq, self.config, self.special_ids, cache)


def make_sparsifier(
    model: Qwen3VLForConditionalGeneration, config: SparsificationConfig, special_ids: Collection[int] = ()
) -> TokenSparsifier | AttentionSparsifier:
    """The sparsifier for `config` on `model`; `special_ids` (the tokenizer's) delimit the question.

    The scorer only matters for `top_k` with a ratio above 0; otherwise the pre-decoder path serves
    (ratio 0 is the identity). `score_layer` is checked against the model's depth here; the distilled
    scorer must already be fitted onto the model (`SCORER_MODULE`, see `slimvl.sparsify.distill`).
    """
    if not config.ranks_by_scorer:
        return TokenSparsifier(config, special_ids)
    n_layers = model.config.text_config.num_hidden_layers
    if config.score_layer >= n_layers:
        raise ValueError(
            f"SparsificationConfig.score_layer: got {config.score_layer}, "
            f"allowed: an int < {n_layers} (the model's decoder layers)"
        )
    return SPARSIFIERS[config.scorer](model, config, special_ids)


def _distilled(
    model: Qwen3VLForConditionalGeneration, config: SparsificationConfig, special_ids: Collection[int]
) -> TokenSparsifier:
    scorer = getattr(model, SCORER_MODULE, None)
    if scorer is None:
        raise ValueError("the distilled scorer is not fitted on this model (apply the recipe to fit it)")
    return TokenSparsifier(config, special_ids, scorer.score)


# scorer name -> the sparsifier that ranks by it (for top_k with a ratio above 0)
SPARSIFIERS: dict[str, Callable[..., TokenSparsifier | AttentionSparsifier]] = {
    "text_guided": lambda _model, config, special_ids: TokenSparsifier(config, special_ids),
    "attention": lambda _model, config, special_ids: AttentionSparsifier(config, special_ids),
    "distilled": _distilled,
}
