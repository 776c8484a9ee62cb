"""The public verbs: `load` a model (with a recipe), `generate` an answer, `optimize` a model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from slimvl.config import SECTIONS, Recipe, resolve_recipe
from slimvl.errors import SlimvlError
from slimvl.models.loader import LoadedModel, load_model
from slimvl.models.preprocess import load_image
from slimvl.pipeline import Answer, Pipeline
from slimvl.sparsify import make_sparsifier

# Recipe section -> function that applies it to a loaded model and returns the sparsifier it installs
# (or None). A section without a handler is not built yet: asking for it is an error, never a no-op.
OptimizationHandler = Callable[[LoadedModel, object], object]


def _sparsification(loaded: LoadedModel, config: object) -> object:
    return make_sparsifier(loaded.model, config, loaded.preprocessor.tokenizer.all_special_ids)


HANDLERS: dict[str, OptimizationHandler] = {"sparsification": _sparsification}


class NotBuiltError(SlimvlError):
    """The recipe asks for an optimization this version does not have."""


def missing_optimizations(recipe: Recipe) -> list[str]:
    return [key for key in SECTIONS if getattr(recipe, key) is not None and key not in HANDLERS]


@dataclass
class SlimModel:
    """A loaded model with its recipe applied, ready to answer."""

    loaded: LoadedModel
    recipe: Recipe
    pipeline: Pipeline

    def generate(
        self,
        images: list[str | Path | Image.Image],
        prompt: str,
        max_new_tokens: int = 64,
        ignore_eos: bool = False,
    ) -> Answer:
        opened = [im if isinstance(im, Image.Image) else load_image(im) for im in images]
        return self.pipeline(opened, prompt, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos)


def load(
    model_ref: str, recipe: str | Recipe | None = None, dtype: str = "fp32", threads: int | None = None
) -> SlimModel:
    """Load `model_ref` (a checkpoint directory or a builtin) and apply `recipe` (a preset name or file)."""
    resolved = resolve_recipe(recipe)
    missing = missing_optimizations(resolved)
    if missing:
        raise NotBuiltError(f"recipe '{resolved.name}' asks for {', '.join(missing)}: not built yet in this version")
    loaded = load_model(model_ref, dtype=dtype)
    sparsifier = None
    for key in SECTIONS:
        section = getattr(resolved, key)
        if section is not None:
            sparsifier = HANDLERS[key](loaded, section) or sparsifier
    return SlimModel(loaded, resolved, Pipeline(loaded, sparsifier=sparsifier, threads=threads))


def generate(
    model: SlimModel | str,
    images: list[str | Path | Image.Image],
    prompt: str,
    max_new_tokens: int = 64,
    recipe: str | Recipe | None = None,
) -> Answer:
    """One answer; `model` is a `SlimModel` or a reference to load."""
    slim = model if isinstance(model, SlimModel) else load(model, recipe)
    return slim.generate(images, prompt, max_new_tokens=max_new_tokens)
