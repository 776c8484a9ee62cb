"""The `sparsification` recipe section: the request hooks that drop visual tokens, and the fitted scorer
(`distilled`, `vision`) they rank with, saved with the weights."""

from __future__ import annotations

from torch import nn

from slimvl.config import SparsificationConfig
from slimvl.models.hooks import Applied, CalibrationRuns, RequestHooks
from slimvl.models.loader import LoadedModel
from slimvl.sparsify.distill import (
    FITTED_SCORERS,
    SCORER_MODULE,
    TokenScorer,
    attention_examples,
    fit_token_scorer,
    scorer_dims,
)
from slimvl.sparsify.sparsifier import make_sparsifier


def apply(loaded: LoadedModel, config: SparsificationConfig, calibration: CalibrationRuns) -> Applied:
    """The sparsifier; a fitted scorer is fitted first (on `config.calibration_samples` requests)."""
    model, plan = loaded.model, None
    if config.scorer in FITTED_SCORERS and config.ranks_by_scorer:
        deepstack_only = FITTED_SCORERS[config.scorer]
        query_dim, visual_dim = scorer_dims(model.config, deepstack_only)
        special_ids = loaded.preprocessor.tokenizer.all_special_ids
        examples = attention_examples(
            calibration(config.calibration_samples), model, special_ids, config.score_layer, deepstack_only
        )
        scorer, fit = fit_token_scorer(examples, query_dim, visual_dim, seed=config.seed)
        model.add_module(SCORER_MODULE, scorer)
        plan = {"scorer": config.scorer, "sizes": scorer.sizes(), "fit": fit}
    return Applied(hooks=runtime(loaded, config), plan=plan)


def rebuild(model: nn.Module, plan: dict) -> None:
    """An empty fitted scorer of the saved sizes, for the stored weights to fill."""
    model.add_module(SCORER_MODULE, TokenScorer(**plan["sizes"]))


def runtime(loaded: LoadedModel, config: SparsificationConfig) -> RequestHooks:
    """The sparsifier of a model that already carries what it needs (its fitted scorer, if any)."""
    return make_sparsifier(loaded.model, config, loaded.preprocessor.tokenizer.all_special_ids)
