"""Configuration: the four optimization configs and the recipes that bundle them."""

from slimvl.config.optimizations import (
    PRECISION_BITS,
    RECIPE_FORMAT_VERSION,
    SECTIONS,
    AdaptivePrecisionConfig,
    INT8QuantizationConfig,
    PruningConfig,
    SparsificationConfig,
)
from slimvl.config.recipe import PRESET_NAMES, Recipe, preset, resolve_recipe

__all__ = [
    "PRECISION_BITS",
    "PRESET_NAMES",
    "RECIPE_FORMAT_VERSION",
    "SECTIONS",
    "AdaptivePrecisionConfig",
    "INT8QuantizationConfig",
    "PruningConfig",
    "Recipe",
    "SparsificationConfig",
    "preset",
    "resolve_recipe",
]
