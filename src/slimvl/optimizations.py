"""One registry from recipe section to the code that applies it.

Each entry applies its config to a loaded model (returning the sparsifier it installs and the plan of
what it added to or changed in the weights) and, where it stores weights, rebuilds their empty modules
from a saved plan so that an optimized directory loads without the original weights. Entries marked
`runtime` are applied again when an optimized directory loads (they build runtime parts). A recipe
section without an entry is not built yet: asking for it is an error, never a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from slimvl.config import SECTIONS, INT8QuantizationConfig, Recipe, SparsificationConfig
from slimvl.data import examples
from slimvl.errors import InputError, SlimvlError
from slimvl.models.loader import LoadedModel
from slimvl.models.preprocess import load_image
from slimvl.pipeline import Pipeline, Sparsifier
from slimvl.quant import QuantPlan, build_quantized_skeleton, quantize_model
from slimvl.sparsify import make_sparsifier
from slimvl.sparsify.distill import (
    FITTED_SCORERS,
    SCORER_MODULE,
    TokenScorer,
    attention_examples,
    fit_token_scorer,
    scorer_dims,
)

CALIBRATION_PROMPT = "Describe the image."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class NotBuiltError(SlimvlError):
    """The recipe asks for an optimization this version does not have."""


@dataclass
class Applied:
    sparsifier: Sparsifier | None = None
    plan: dict | None = None  # JSON-ready record of what changed in the weights


@dataclass
class Calibration:
    """Where calibration requests come from: a directory of the user's images (and optional prompts.txt,
    one prompt per line), or the synthetic VQA training split."""

    directory: Path | None = None
    samples: int = 32

    def requests(self) -> list[tuple[list, str]]:
        if self.directory is None:
            return [([ex.image], ex.question) for ex in examples("train", self.samples)]
        files = sorted(p for p in self.directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(
                f"calibration directory {self.directory} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        prompts_file = self.directory / "prompts.txt"
        prompts = (
            [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
            if prompts_file.is_file()
            else []
        )
        prompts = prompts or [CALIBRATION_PROMPT]
        return [([load_image(f)], prompts[i % len(prompts)]) for i, f in enumerate(files[: self.samples])]


@dataclass
class Optimization:
    apply: Callable[[LoadedModel, object, Calibration], Applied]
    rebuild: Callable[[nn.Module, dict], None] | None = None  # None: nothing stored in the weights
    runtime: bool = False  # applied again to a loaded optimized directory


def _apply_int8(loaded: LoadedModel, config: INT8QuantizationConfig, calibration: Calibration) -> Applied:
    pipeline = Pipeline(loaded)

    def feed() -> None:
        for images, prompt in Calibration(calibration.directory, config.calibration_samples).requests():
            pipeline(images, prompt, max_new_tokens=2)

    plan = quantize_model(loaded.model, config, calibration_feed=feed)
    return Applied(plan=plan.to_dict())


def _rebuild_int8(model: nn.Module, plan: dict) -> None:
    build_quantized_skeleton(model, QuantPlan.from_dict(plan))


def _apply_sparsification(
    loaded: LoadedModel, config: SparsificationConfig, calibration: Calibration
) -> Applied:
    """The sparsifier; a fitted scorer (`distilled`, `vision`) is fitted first unless the model already
    carries one (an optimized directory's, rebuilt and loaded with the weights)."""
    model, plan = loaded.model, None
    needs_fit = config.scorer in FITTED_SCORERS and config.ranks_by_scorer
    if needs_fit and getattr(model, SCORER_MODULE, None) is None:
        deepstack_only = FITTED_SCORERS[config.scorer]
        query_dim, visual_dim = scorer_dims(model.config, deepstack_only)
        requests = Calibration(calibration.directory, config.calibration_samples).requests()
        examples = attention_examples(
            model, loaded.preprocessor, requests, config.score_layer, deepstack_only
        )
        scorer, fit = fit_token_scorer(examples, query_dim, visual_dim, seed=config.seed)
        model.add_module(SCORER_MODULE, scorer)
        plan = {"scorer": config.scorer, "sizes": scorer.sizes(), "fit": fit}
    special_ids = loaded.preprocessor.tokenizer.all_special_ids
    return Applied(sparsifier=make_sparsifier(model, config, special_ids), plan=plan)


def _rebuild_sparsification(model: nn.Module, plan: dict) -> None:
    """An empty distilled scorer of the saved sizes, for the stored weights to fill."""
    model.add_module(SCORER_MODULE, TokenScorer(**plan["sizes"]))


# Weights are pruned before they are quantized; runtime parts come last.
APPLY_ORDER = ("pruning", "int8", "sparsification", "adaptive_precision")
assert set(APPLY_ORDER) == set(SECTIONS), "every recipe section has its place in APPLY_ORDER"

OPTIMIZATIONS: dict[str, Optimization] = {
    "int8": Optimization(_apply_int8, _rebuild_int8),
    "sparsification": Optimization(_apply_sparsification, _rebuild_sparsification, runtime=True),
}


def missing_optimizations(recipe: Recipe) -> list[str]:
    return [key for key in APPLY_ORDER if getattr(recipe, key) is not None and key not in OPTIMIZATIONS]


def check_built(recipe: Recipe) -> None:
    missing = missing_optimizations(recipe)
    if missing:
        raise NotBuiltError(
            f"recipe '{recipe.name}' asks for {', '.join(missing)}: not built yet in this version"
        )


def apply_recipe(
    loaded: LoadedModel, recipe: Recipe, calibration: Calibration
) -> tuple[Sparsifier | None, dict]:
    """Apply every section of `recipe` in registry order; return the sparsifier and the plans by section."""
    check_built(recipe)
    sparsifier, plans = None, {}
    for key in APPLY_ORDER:
        config = getattr(recipe, key)
        if config is None:
            continue
        applied = OPTIMIZATIONS[key].apply(loaded, config, calibration)
        sparsifier = applied.sparsifier or sparsifier
        if applied.plan is not None:
            plans[key] = applied.plan
    return sparsifier, plans


def runtime_sparsifier(loaded: LoadedModel, recipe: Recipe) -> Sparsifier | None:
    """The sparsifier of an already-optimized model (weights untouched: only runtime parts are built)."""
    sparsifier = None
    for key in APPLY_ORDER:
        config = getattr(recipe, key)
        if config is not None and OPTIMIZATIONS[key].runtime:
            sparsifier = OPTIMIZATIONS[key].apply(loaded, config, Calibration()).sparsifier or sparsifier
    return sparsifier


def rebuild_modules(model: nn.Module, plans: dict[str, dict]) -> None:
    for key, plan in plans.items():
        if key not in OPTIMIZATIONS or OPTIMIZATIONS[key].rebuild is None:
            raise SlimvlError(f"the saved plan names '{key}', which this slimvl cannot rebuild")
        OPTIMIZATIONS[key].rebuild(model, plan)
