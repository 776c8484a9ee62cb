"""The visual token sparsifiers: request hooks (`slimvl.models.hooks`) that drop visual tokens.

Each acts at the one point of the request its scorer needs: pre-decoder methods (top-k by the
text-guided or the distilled scorer, random, grid) compact the `DecoderSequence` after the vision
encoder (`after_vision`); the `attention` scorer needs the decoder itself, so it replaces the prefill;
the `vision` scorer ranks inside the vision encoder, so it replaces the image encoding and the sequence
arrives already compact. Each times its scoring and selection as the request's "sparsify" stage.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
from transformers import DynamicCache, Qwen3VLForConditionalGeneration

from slimvl.config import SparsificationConfig
from slimvl.models.hooks import RequestHooks, Stage
from slimvl.models.preprocess import ModelInputs
from slimvl.models.steps import DecoderSequence, VisualFeatures
from slimvl.sparsify.distill import SCORER_MODULE, TokenScorer, query_features
from slimvl.sparsify.prefill import prefill_keeping_attended
from slimvl.sparsify.scorers import question_mask, question_rows, text_guided_scores
from slimvl.sparsify.select import select_visual, sequence_keep_mask
from slimvl.sparsify.vision import encode_images_keeping

# (sequence, question mask) -> one score per visual token, higher = keep
PreDecoderScorer = Callable[[DecoderSequence, torch.Tensor], torch.Tensor]


class TokenSparsifier(RequestHooks):
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

    def after_vision(self, seq: DecoderSequence) -> DecoderSequence:
        if self.config.sparsity_ratio == 0 or not bool(seq.visual_mask.any()):
            return seq
        return seq.keep(self.keep_mask(seq))


class AttentionSparsifier(RequestHooks):
    """Keeps the visual tokens the question attends to most in decoder layer `config.score_layer`: its
    prefill runs the layers before it over every token, then the rest over the kept ones
    (`slimvl.sparsify.prefill`), and returns the kept sequence with the logits and the cache."""

    def __init__(self, config: SparsificationConfig, special_ids: Collection[int] = ()):
        self.config = config
        self.special_ids = frozenset(special_ids)

    def prefill(
        self,
        model: Qwen3VLForConditionalGeneration,
        seq: DecoderSequence,
        cache: DynamicCache,
        stage: Stage,
    ) -> tuple[torch.Tensor, DynamicCache, DecoderSequence]:
        if not bool(seq.visual_mask.any()):
            return super().prefill(model, seq, cache, stage)
        return prefill_keeping_attended(model, seq, self.config, self.special_ids, cache, stage)


class VisionSparsifier(RequestHooks):
    """Drops visual tokens inside the vision encoder (`slimvl.sparsify.vision`): `scorer`, fitted on the
    first DeepStack features, ranks each image's tokens right after that feature's layer, from the
    question's embeddings; the rest of the encoder and the prefill see only the kept tokens."""

    def __init__(self, config: SparsificationConfig, special_ids: Collection[int], scorer: TokenScorer):
        self.config = config
        self.special_ids = frozenset(special_ids)
        self.scorer = scorer

    def encode_images(
        self, model: Qwen3VLForConditionalGeneration, inputs: ModelInputs, stage: Stage
    ) -> VisualFeatures | None:
        if inputs.pixel_values is None:
            return None
        with stage("sparsify"):
            ids, visual = inputs.input_ids[0], inputs.mm_token_type_ids[0].to(torch.bool)
            words = model.get_input_embeddings()(ids[question_rows(ids, visual, self.special_ids)])
            queries = query_features(words)

        def choose(first_deepstack: torch.Tensor, tokens_per_image: list[int]) -> torch.Tensor:
            with stage("sparsify"), torch.no_grad():
                scores = self.scorer(queries, first_deepstack)
                return select_visual(self.config, tokens_per_image, None, scores)

        return encode_images_keeping(model, inputs, choose)


def make_sparsifier(
    model: Qwen3VLForConditionalGeneration, config: SparsificationConfig, special_ids: Collection[int] = ()
) -> TokenSparsifier | AttentionSparsifier | VisionSparsifier:
    """The sparsifier for `config` on `model`; `special_ids` (the tokenizer's) delimit the question.

    The scorer only matters for `top_k` with a ratio above 0; otherwise the pre-decoder path serves
    (ratio 0 is the identity). `score_layer` is checked against the model's depth here; the distilled
    scorer must already be fitted onto the model (`SCORER_MODULE`, see `slimvl.sparsify.distill`).
    """
    if not config.ranks_by_scorer:
        return TokenSparsifier(config, special_ids)
    n_layers = len(model.model.language_model.layers)
    if config.score_layer >= n_layers:
        raise ValueError(
            f"SparsificationConfig.score_layer: got {config.score_layer}, "
            f"allowed: an int < {n_layers} (the model's decoder layers)"
        )
    return SPARSIFIERS[config.scorer](model, config, special_ids)


def _fitted_scorer(model: Qwen3VLForConditionalGeneration, config: SparsificationConfig) -> TokenScorer:
    scorer = getattr(model, SCORER_MODULE, None)
    if scorer is None:
        raise ValueError(
            f"the {config.scorer} scorer is not fitted on this model (apply the recipe to fit it)"
        )
    return scorer


def _distilled(
    model: Qwen3VLForConditionalGeneration, config: SparsificationConfig, special_ids: Collection[int]
) -> TokenSparsifier:
    return TokenSparsifier(config, special_ids, _fitted_scorer(model, config).score)


def _vision(
    model: Qwen3VLForConditionalGeneration, config: SparsificationConfig, special_ids: Collection[int]
) -> VisionSparsifier:
    if not model.config.vision_config.deepstack_visual_indexes:
        raise ValueError(
            "SparsificationConfig.scorer: got 'vision', allowed for this model: "
            "'text_guided', 'attention', 'distilled' (it has no DeepStack layers to score after)"
        )
    return VisionSparsifier(config, special_ids, _fitted_scorer(model, config))


# scorer name -> the sparsifier that ranks by it (for top_k with a ratio above 0)
SPARSIFIERS: dict[str, Callable[..., TokenSparsifier | AttentionSparsifier | VisionSparsifier]] = {
    "text_guided": lambda _model, config, special_ids: TokenSparsifier(config, special_ids),
    "attention": lambda _model, config, special_ids: AttentionSparsifier(config, special_ids),
    "distilled": _distilled,
    "vision": _vision,
}
