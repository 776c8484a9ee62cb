"""The optimizations a recipe can hold, each reached through its registered section
(`slimvl.config.sections`): nothing else names them.

A section's handler module provides
    apply(loaded, config, calibration) -> Applied   change the model in place and/or build the request
                                                    hooks; `calibration(n)` runs n calibration requests
    rebuild(model, plan)                            (where the section stores weights) its empty modules
                                                    for the saved plan, on a model built on the meta device
    runtime(loaded, config) -> RequestHooks         (where it acts on requests) its hooks for a model that
                                                    already carries its stored parts (an optimized directory)
A section whose handler module does not exist is not built yet: asking for it is an error, never a no-op.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import nn

from slimvl.calibration import Calibration
from slimvl.config import Recipe, Section, sections
from slimvl.errors import SlimvlError
from slimvl.models.hooks import RequestHooks, WrappingHooks
from slimvl.models.loader import LoadedModel


class NotBuiltError(SlimvlError):
    """The recipe asks for an optimization this version does not have."""


def handler(section: Section) -> ModuleType | None:
    """The module that applies `section`, or None where it is not built."""
    try:
        return importlib.import_module(section.handler)
    except ModuleNotFoundError as exc:
        if exc.name is not None and section.handler.startswith(exc.name):
            return None
        raise


def missing_optimizations(recipe: Recipe) -> list[str]:
    known = {s.key: s for s in sections()}
    return [key for key, _ in recipe.configs() if handler(known[key]) is None]


def check_built(recipe: Recipe) -> None:
    missing = missing_optimizations(recipe)
    if missing:
        raise NotBuiltError(
            f"recipe '{recipe.name}' asks for {', '.join(missing)}: not built yet in this version"
        )


def _handlers(recipe: Recipe) -> list[tuple[str, object, ModuleType]]:
    check_built(recipe)
    known = {s.key: s for s in sections()}
    return [(key, config, handler(known[key])) for key, config in recipe.configs()]


def apply_recipe(
    loaded: LoadedModel, recipe: Recipe, calibration: Calibration
) -> tuple[RequestHooks | None, dict[str, dict]]:
    """Apply every section of `recipe` in their registered order; return the request hooks (`_combined`)
    and the plans by section."""
    found, plans = [], {}
    for key, config, module in _handlers(recipe):
        applied = module.apply(loaded, config, lambda n, tokens=2: calibration.runner(loaded, n, tokens).run)
        found.append(applied.hooks)
        if applied.plan is not None:
            plans[key] = applied.plan
    return _combined(found), plans


def runtime_hooks(loaded: LoadedModel, recipe: Recipe) -> RequestHooks | None:
    """The request hooks of an already-optimized model (its weights as stored: only run-time parts built)."""
    return _combined(
        [
            module.runtime(loaded, config)
            for _key, config, module in _handlers(recipe)
            if hasattr(module, "runtime")
        ]
    )


def _combined(found: list[RequestHooks | None]) -> RequestHooks | None:
    """The last section's hooks that act on their own, inside the `WrappingHooks` of the sections that
    wrap (innermost first)."""
    hooks = None
    for h in found:
        if h is not None and not isinstance(h, WrappingHooks):
            hooks = h
    for h in found:
        if isinstance(h, WrappingHooks):
            h.inner = hooks or RequestHooks()
            hooks = h
    return hooks


def rebuild_modules(model: nn.Module, plans: dict[str, dict]) -> None:
    """Empty modules for each saved plan, in the sections' registered order (not the plans' key order)."""
    known = [s for s in sections() if s.key in plans]
    unknown = sorted(set(plans) - {s.key for s in known})
    for section in known:
        module = handler(section)
        if module is None or not hasattr(module, "rebuild"):
            unknown.append(section.key)
        else:
            module.rebuild(model, plans[section.key])
    if unknown:
        raise SlimvlError(f"the saved plan names '{unknown[0]}', which this slimvl cannot rebuild")
